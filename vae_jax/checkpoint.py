"""Reading a run's checkpoints: which steps it holds, whether each is intact, the parameters alone.

A checkpoint is the step directory ``checkpoints/<step>/`` that orbax
finalised: ``state/`` (the train state, a PyTree) and, for the trainer,
``data/`` (the data iterator's position). Everything that looks inside a
trained model reads only the parameters (no optimiser is ever built), from
the newest checkpoint that reads back whole; a damaged one is reported and
skipped, never changed (a training process may own the directory).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
import tensorstore as ts

from vae_jax.errors import CheckpointMismatchError, CheckpointNotFoundError

log = logging.getLogger(__name__)

STATE, DATA = "state", "data"
# Files orbax writes into every finalised step's state item; a checkpoint without one is damaged.
_STATE_FILES = ("_METADATA", "manifest.ocdbt")


def saved_steps(directory: Path) -> list[int]:
  """The steps of ``directory``'s checkpoints, newest first (orbax's unfinished ones left out)."""
  if not directory.is_dir():
    return []
  return sorted((int(p.name) for p in directory.iterdir() if p.name.isdigit()), reverse=True)


def has_checkpoint(directory: Path) -> bool:
  """Whether ``directory`` holds a step directory (without opening a manager, which creates it)."""
  return bool(saved_steps(directory))


def first_line(error: BaseException, limit: int = 200) -> str:
  """``error``'s type and the first line of its message, for a one-line report."""
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:limit]}" if text else type(error).__name__


def missing_files(step_dir: Path, items: tuple[str, ...] = (STATE,)) -> str | None:
  """What a finalised step directory lacks of orbax's own files, or None."""
  if not step_dir.is_dir():
    return "it is not a directory"
  for item in items:
    if not (step_dir / item).is_dir():
      return f"its {item}/ folder is missing"
  for name in _STATE_FILES:
    if STATE in items and not (step_dir / STATE / name).is_file():
      return f"{STATE}/{name} is missing"
  if DATA in items and not any((step_dir / DATA).glob("process_*.json")):
    return f"{DATA}/ holds no data-iterator position (process_*.json)"
  return None


def state_metadata(step_dir: Path) -> Any:
  """The tree of array metadata (names, shapes, dtypes) of a checkpoint's train state."""
  handler = ocp.PyTreeCheckpointHandler()
  try:
    metadata = handler.metadata(step_dir / STATE)
  finally:
    handler.close()
  return metadata.tree if hasattr(metadata, "tree") else metadata


def _leaf_name(path: tuple) -> str:
  """Orbax's name of a leaf: its keys joined by dots (dict keys, attributes, tuple positions)."""
  return ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def check_tree_match(step_dir: Path, tree_like: Any, field: str | None = None) -> None:
  """Compare the names and shapes of the saved state (or its ``field``) with ``tree_like``'s.

  Done from the metadata, before any array is read, so that a checkpoint of
  another model is told apart from a damaged one.

  Raises:
    CheckpointMismatchError: a checkpoint of another model (names or shapes differ).
  """
  tree = state_metadata(step_dir)
  prefix = f"{field}." if field else ""
  saved = {
    leaf.name: tuple(leaf.shape)
    for leaf in jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, "shape"))
    if leaf.name.startswith(prefix)
  }
  wanted = {
    prefix + _leaf_name(path): tuple(x.shape)
    for path, x in jax.tree_util.tree_leaves_with_path(tree_like)
  }
  if saved != wanted:
    differ = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
    details = ", ".join(f"{k}: saved {saved.get(k)} vs now {wanted.get(k)}" for k in differ[:4])
    raise CheckpointMismatchError(
      f"The checkpoint {step_dir} does not match the model this config builds ({len(differ)} "
      f"arrays differ; {details}). Use the config that wrote it, or train in a new --workdir."
    )


def damage(
  step_dir: Path, items: tuple[str, ...] = (STATE,), field: str | None = None
) -> str | None:
  """What is wrong with a checkpoint's files, or None: a cheap, synchronous read of all it holds.

  Every file orbax writes must be there, and every value stored for the
  state (or for its ``field`` alone) must read back, as must the data
  iterator's position: a truncated or garbled file fails here in one
  exception, before orbax's asynchronous restore would fail in background
  callbacks that each print a traceback.
  """
  missing = missing_files(step_dir, items)
  if missing:
    return missing
  try:
    store = ts.KvStore.open(
      {"driver": "ocdbt", "base": {"driver": "file", "path": str(step_dir / STATE)}}
    ).result()
    prefix = f"{field}.".encode() if field else b""
    for key in store.list().result():
      if key.startswith(prefix):
        store.read(key).result()
    for position in (step_dir / DATA).glob("process_*.json") if DATA in items else ():
      json.loads(position.read_text())
  except (ValueError, OSError) as error:  # tensorstore reports damage as ValueError
    return first_line(error)
  return None


def restore_target(leaf: Any) -> jax.ShapeDtypeStruct:
  """Shape, dtype and where to put it: ``leaf``'s own sharding, or this process's first device.

  Naming the sharding is what lets a checkpoint written by several processes
  (or devices) come back in one, and the reverse.
  """
  sharding = getattr(leaf, "sharding", None) or jax.sharding.SingleDeviceSharding(
    jax.local_devices()[0]
  )
  return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


def read_params(step_dir: Path, params_like: Any, field: str = "params") -> Any:
  """The state's ``field`` (``params``, or ``ema_params`` for their average), as ``params_like``.

  Reading the parameters alone also opens a checkpoint whose optimiser
  state has another layout (an earlier vae_jax's, or another ``opt`` config's).
  """
  check_tree_match(step_dir, params_like, field)
  abstract = {field: jax.tree.map(restore_target, params_like)}
  args = ocp.args.PyTreeRestore(
    item=abstract,
    restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
    partial_restore=True,
  )
  with ocp.PyTreeCheckpointer() as reader:
    return reader.restore(step_dir / STATE, args=args)[field]


def newest_intact(
  directory: Path,
  read: Callable[[Path], Any],
  on_damaged: Callable[[int, str], None] | None = None,
  items: tuple[str, ...] = (STATE,),
  field: str | None = None,
) -> tuple[int, Any]:
  """``(step, read(step_dir))`` of the newest checkpoint whose files are intact (``damage``).

  A damaged checkpoint is reported through ``on_damaged(step, reason)``
  (default: a warning) and the next older one is tried; ``items`` and
  ``field`` say what of it is checked (what ``read`` reads).

  Raises:
    CheckpointMismatchError: the newest intact checkpoint is of another model.
    CheckpointNotFoundError: no checkpoint, or none intact.
  """
  directory = Path(directory).absolute()  # orbax wants absolute paths
  steps = saved_steps(directory)
  if not steps:
    raise CheckpointNotFoundError(f"No checkpoint in {directory}.")
  damaged = []
  for step in steps:
    reason = damage(directory / str(step), items, field)
    if reason is None:
      return step, read(directory / str(step))
    damaged.append(f"{step} ({reason})")
    if on_damaged is None:
      log.warning(
        "Checkpoint %d in %s is damaged (%s); trying an older one.", step, directory, reason
      )
    else:
      on_damaged(step, reason)
  raise CheckpointNotFoundError(
    f"No intact checkpoint in {directory}: {'; '.join(damaged)}. Restore the folder from a copy, "
    "or train again in a new --workdir.",
    damaged,
  )
