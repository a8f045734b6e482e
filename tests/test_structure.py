"""The package's shape: no import cycles; a light inference module that never loads the trainer."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import ROOT

PACKAGE = ROOT / "vae_jax"


def _module_name(path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
  """vae_jax module → the vae_jax modules it imports (anywhere in the file, functions included)."""
  modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
  graph = {}
  for name, path in modules.items():
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets |= {alias.name for alias in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        targets.add(node.module)
        targets |= {f"{node.module}.{alias.name}" for alias in node.names}
    graph[name] = {t for t in targets if t in modules and t != name}
  return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle of ``graph``, or None (a package's ``__init__`` counts as importing it)."""
  state, stack = {}, []

  def visit(node) -> list[str] | None:
    state[node] = "open"
    stack.append(node)
    for target in sorted(graph[node]):
      if state.get(target) == "open":
        return stack[stack.index(target) :] + [target]
      if target not in state and (found := visit(target)):
        return found
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state and (found := visit(node)):
      return found
  return None


def test_the_package_has_no_import_cycle():
  graph = _import_graph()
  assert {"vae_jax.inference", "vae_jax.trainer.loop", "vae_jax.tasks.vae"} <= set(graph)
  assert _cycle(graph) is None, " → ".join(_cycle(graph))


def test_the_cycle_finder_finds_one():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", ["vae_jax.inference", "vae_jax.sampling", "vae_jax.evaluation"])
def test_looking_inside_a_run_loads_no_training_machinery(module):
  code = (
    f"import sys, {module}; "
    "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
    "('optax', 'grain', 'tensorboardX', 'tqdm') or m.startswith('vae_jax.trainer'))))"
  )
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
  assert done.returncode == 0, done.stderr[-2000:]
  loaded = set(done.stdout.split())
  if module == "vae_jax.inference":
    assert not loaded, loaded
    return
  # Reading images may show a progress bar (tqdm); the evaluation's realism test trains a small
  # classifier (optax); nothing else of training.
  allowed = ("tqdm", "optax") if module == "vae_jax.evaluation" else ("tqdm",)
  assert {m for m in loaded if m.split(".")[0] not in allowed} == set(), loaded
