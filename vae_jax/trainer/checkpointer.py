"""Orbax checkpoints of the train state with the data iterator, and what may resume from them.

Saving both in one step directory is what makes resume exact: after a
restart the parameters, the optimiser state, the step (hence every PRNG
key, which is ``fold_in(key, step)``) and the position in the shuffled data
stream all come back together. Orbax writes to a temporary directory and
renames it when complete, so a run killed mid-save leaves the previous
checkpoint intact; a checkpoint damaged afterwards (a truncated file, a
deleted folder) is moved aside to ``damaged_checkpoints/`` and the run
resumes from the newest intact one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from vae_jax import checkpoint
from vae_jax.errors import CheckpointMismatchError, CheckpointNotFoundError, WriteError

log = logging.getLogger(__name__)

DAMAGED_DIRNAME = "damaged_checkpoints"


class Checkpointer:
  """Keeps the last ``keep`` checkpoints of (train state, data iterator) under ``directory``."""

  def __init__(self, directory: str | Path, keep: int = 3):
    self.directory = Path(directory).absolute()
    self.keep = keep
    self._pending: int | None = None  # the step being written in the background
    self.manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
      self.directory,
      # Temporaries of a save cut short (a kill, a full disk) are removed when the manager opens.
      options=ocp.CheckpointManagerOptions(
        max_to_keep=self.keep, create=True, cleanup_tmp_directories=True
      ),
      item_handlers={
        checkpoint.STATE: ocp.StandardCheckpointHandler(),
        checkpoint.DATA: grain.checkpoint.CheckpointHandler(),
      },
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: Any | None = None) -> None:
    """Start writing checkpoint ``step`` (orbax finishes it in the background).

    Refused before anything is written when the disk has less room than the
    checkpoint needs: a write cut short by a full disk leaves orbax's
    background threads failing one after another.

    Raises:
      WriteError: the checkpoint cannot be written (it says which one is intact).
    """
    self.wait()
    needed = self._size_estimate(state)
    free = shutil.disk_usage(self.directory).free
    if free < needed:
      raise WriteError(
        f"checkpoint {step} could not be written to {self.directory} (it needs about "
        f"{needed / 1e6:.1f} MB, {free / 1e6:.1f} MB are free: no space left on device)"
      )
    items = {checkpoint.STATE: ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items[checkpoint.DATA] = grain.checkpoint.CheckpointSave(data_iterator)
    try:
      self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    except Exception as error:  # orbax reports a failed write as whatever its storage layer raised
      raise self._write_error(step, error) from None
    self._pending = step

  def _size_estimate(self, state: Any) -> int:
    """Bytes the next checkpoint needs: the newest one's size (or the state's) and room to spare."""
    steps = checkpoint.saved_steps(self.directory)
    if steps:
      newest = self.directory / str(steps[0])
      size = sum(p.stat().st_size for p in newest.rglob("*") if p.is_file())
    else:
      size = sum(x.nbytes for x in jax.tree.leaves(state))
    return int(1.1 * size) + (64 << 10)

  def _write_error(self, step: int, error: BaseException) -> WriteError:
    """The one-line ``WriteError`` for a checkpoint orbax could not write."""
    text = str(error)
    reason = re.search(r"Failed to write [^:]*: ([^\[\n]+)", text)
    reason = reason.group(1).strip() if reason else checkpoint.first_line(error)
    return WriteError(f"checkpoint {step} could not be written to {self.directory} ({reason})")

  def restore(self, state_like: Any, data_iterator: Any | None = None) -> Any:
    """The newest intact checkpoint, shaped as ``state_like`` (``data_iterator`` set in place).

    A damaged checkpoint is reported in one line and moved aside
    (``move_aside``) before the next older one is tried.

    Raises:
      CheckpointMismatchError: the checkpoint's arrays do not match ``state_like``'s names or
        shapes.
      CheckpointNotFoundError: no checkpoint, or none intact.
    """
    items = (
      (checkpoint.STATE, checkpoint.DATA) if data_iterator is not None else (checkpoint.STATE,)
    )

    def read(step_dir: Path) -> Any:
      checkpoint.check_tree_match(step_dir, state_like)
      abstract = jax.tree.map(checkpoint.restore_target, state_like)
      args = {checkpoint.STATE: ocp.args.StandardRestore(abstract)}
      if data_iterator is not None:
        args[checkpoint.DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
      return self.manager.restore(int(step_dir.name), args=ocp.args.Composite(**args))[
        checkpoint.STATE
      ]

    try:
      _, state = checkpoint.newest_intact(self.directory, read, self._set_aside, items)
    except CheckpointNotFoundError as error:
      raise CheckpointNotFoundError(
        f"No intact checkpoint in {self.directory}: {'; '.join(error.damaged)}; each was moved to "
        f"{self.directory.parent / DAMAGED_DIRNAME}. Re-run the same command to train from the "
        "start, or put a copy of the checkpoints back.",
        error.damaged,
      ) from None
    return state

  def _set_aside(self, step: int, reason: str) -> None:
    where = move_aside(self.directory / str(step))
    log.warning(
      "Checkpoint %d in %s is damaged (%s); moved it to %s and trying the next older one.",
      step,
      self.directory,
      reason,
      where,
    )
    self.manager.close()
    self.manager = self._open()  # forget the step it listed

  def wait(self) -> None:
    """Wait for a checkpoint being written in the background.

    Raises:
      WriteError: it could not be written.
    """
    pending, self._pending = self._pending, None
    try:
      self.manager.wait_until_finished()
    except Exception as error:  # the background write's failure, as orbax's storage layer raised it
      raise self._write_error(pending, error) from None

  def close(self) -> None:
    self.manager.close()


def move_aside(step_dir: Path) -> Path:
  """Move a damaged step directory to ``<workdir>/damaged_checkpoints/``, out of orbax's sight."""
  target = (
    step_dir.parent.parent / DAMAGED_DIRNAME / f"{step_dir.name}-{time.strftime('%Y%m%dT%H%M%S')}"
  )
  target.parent.mkdir(parents=True, exist_ok=True)
  shutil.move(str(step_dir), target)
  return target


# What else, beyond the model group, a resumed run must share with the run that wrote the workdir:
# the fields that choose the held-out images (the split) and the image shape.
_SPLIT_FIELDS = ("seed", "data.source", "data.val_fraction", "data.synthetic")
_SHAPE_FIELDS = ("data.image_size", "data.channels")


def _value(config: ml_collections.ConfigDict, dotted: str) -> Any:
  value: Any = json.loads(config.to_json())
  for part in dotted.split("."):
    value = value.get(part) if isinstance(value, dict) else None
  return value


def check_resumable(
  saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict, workdir: Path, task_fields=()
) -> None:
  """Refuse to resume a run written with another task, model, image shape, split or averaging.

  Split: ``seed``, ``data.source``, ``data.val_fraction`` and the synthetic
  generator's settings choose the held-out images; with other values the
  resumed run would be scored on images it had trained on (the seed also
  sets every later step's keys). ``task_fields`` are the task's own (a
  VAE's likelihood).

  Raises:
    CheckpointMismatchError: naming the field, its saved and its new value.
  """
  if saved.task != config.task:
    raise CheckpointMismatchError(
      f"{workdir} holds a {saved.task!r} run, not a {config.task!r} one. Choose a new --workdir."
    )
  if (saved.train.ema_decay > 0) != (config.train.ema_decay > 0):
    raise CheckpointMismatchError(
      f"{workdir} holds a run {'with' if saved.train.ema_decay > 0 else 'without'} a moving "
      f"average of the parameters (config.train.ema_decay={saved.train.ema_decay}); resume it with "
      "the same setting, or choose a new --workdir."
    )
  for field in _SPLIT_FIELDS:
    old, new = _value(saved, field), _value(config, field)
    if old != new:
      raise CheckpointMismatchError(
        f"{workdir} holds a run with config.{field}={old}, not {new}: it chooses the held-out "
        "images. Resume it with the same value, or choose a new --workdir."
      )
  for field in ("model", *_SHAPE_FIELDS, *task_fields):
    old, new = _value(saved, field), _value(config, field)
    if old != new:
      if isinstance(old, dict) and isinstance(new, dict):
        diff = {
          k: (old.get(k), new.get(k))
          for k in sorted(old.keys() | new.keys())
          if old.get(k) != new.get(k)
        }
      else:
        diff = (old, new)
      raise CheckpointMismatchError(
        f"{workdir} holds a run with a different config.{field} (saved vs now: {diff}). "
        "Use the same config to resume it, or choose a new --workdir."
      )
