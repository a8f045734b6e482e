"""One formatter and one linter for the whole tree (ruff, configured in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import ROOT


@pytest.mark.parametrize("command", [["format", "--check"], ["check"]], ids=["format", "lint"])
def test_the_tree_is_formatted_and_lint_free(command):
  ruff = shutil.which("ruff")
  if ruff is None:
    pytest.skip("ruff is not installed (pip install -e '.[test]')")
  done = subprocess.run([ruff, *command, str(ROOT)], capture_output=True, text=True, cwd=ROOT)
  assert done.returncode == 0, (
    f"ruff {' '.join(command)} wants changes (run ruff format . / ruff check --fix .):\n"
    + done.stdout[-4000:]
  )
