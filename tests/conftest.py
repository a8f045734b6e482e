"""Shared test helpers: config loading, the real-data location."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def load_config(name: str, preset: str | None = "smoke"):
  """``configs/<name>.py:get_config(preset)`` without going through absl flags."""
  spec = importlib.util.spec_from_file_location(f"configs.{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def shared_data(relative: str) -> Path:
  """A folder of ../shared/data, or skip the test when it is absent (a user's fresh clone)."""
  path = SHARED_DATA / relative
  if not path.exists():
    pytest.skip(f"{path} not present")
  return path
