"""Orbax checkpoints of the train state together with the data iterator.

Saving both in one step directory is what makes resume exact: after a restart
the parameters, the optimiser state, the step (hence every PRNG key, which is
``fold_in(key, step)``) and the position in the shuffled data stream all come
back together. Orbax writes to a temporary directory and renames it when
complete, so a run killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """A checkpoint does not fit the model the config describes."""


def has_checkpoint(directory: Path) -> bool:
  """Whether ``directory`` holds at least one step directory (without opening a manager, which creates it)."""
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def _restore_target(leaf: Any) -> jax.ShapeDtypeStruct:
  """Shape, dtype and where to put it: ``leaf``'s own sharding, or this process's first device.

  Naming the sharding is what lets a checkpoint written by several processes
  (or devices) come back in one, and the reverse.
  """
  sharding = getattr(leaf, "sharding", None) or jax.sharding.SingleDeviceSharding(
    jax.local_devices()[0]
  )
  return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


class Checkpointer:
  """Keeps the last ``keep`` checkpoints of (train state, data iterator) under ``directory``."""

  def __init__(self, directory: str | Path, keep: int = 3):
    self.directory = Path(directory).absolute()
    self.manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
      item_handlers={
        "state": ocp.StandardCheckpointHandler(),
        "data": grain.checkpoint.CheckpointHandler(),
      },
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: Any | None = None) -> None:
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, state_like: Any, data_iterator: Any | None = None) -> Any:
    """Restore the latest checkpoint into the structure of ``state_like`` (and ``data_iterator`` in place).

    Raises:
      CheckpointMismatchError: the saved arrays do not match ``state_like``'s
        tree or shapes (a checkpoint of another architecture).
    """
    step = self._latest_step_or_raise()
    self._check_params_match(step, state_like.params)
    abstract = jax.tree.map(_restore_target, state_like)
    items = {"state": ocp.args.StandardRestore(abstract)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointMismatchError(
        f"The checkpoint at {self.directory} (step {step}) does not match the model this config builds "
        f"({type(e).__name__}: {str(e).splitlines()[0][:300]}). Use the config that wrote it, "
        "or train in a new --workdir."
      ) from None
    return restored["state"]

  def restore_params(self, params_like: Any, field: str = "params") -> Any:
    """The parameters alone of the latest checkpoint, in ``params_like``'s structure.

    Sampling and evaluation need no optimiser state; reading the parameters
    alone also opens a checkpoint whose optimiser state has another layout
    (an earlier vae_jax's, or another ``opt`` config's). ``field`` names
    the state's field to read: ``params``, or ``ema_params`` for their
    moving average.

    Raises:
      CheckpointMismatchError: the saved parameters' names or shapes differ from ``params_like``'s.
    """
    step = self._latest_step_or_raise()
    self._check_params_match(step, params_like, field)
    abstract = {field: jax.tree.map(_restore_target, params_like)}
    # The state was written by StandardCheckpointHandler, i.e. as a PyTree: its handler reads a subtree. A plain
    # checkpointer on the step's directory opens nothing else (a second manager would log read-only warnings).
    args = ocp.args.PyTreeRestore(
      item=abstract,
      restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
      partial_restore=True,
    )
    with ocp.PyTreeCheckpointer() as reader:
      return reader.restore(self.directory / str(step) / "state", args=args)[field]

  def _latest_step_or_raise(self) -> int:
    step = self.latest_step()
    if step is None:
      raise FileNotFoundError(f"No checkpoint under {self.directory}.")
    return step

  def _check_params_match(self, step: int, params_like: Any, field: str = "params") -> None:
    """Compare the names and shapes of the state's ``field`` in the checkpoint's metadata before reading arrays."""
    metadata = self.manager.item_metadata(step)["state"]
    saved = {
      leaf.name: tuple(leaf.shape)
      for leaf in jax.tree.leaves(metadata, is_leaf=lambda x: hasattr(x, "shape"))
      if leaf.name.startswith(field + ".")
    }
    wanted = {
      field + "." + ".".join(str(getattr(k, "key", k)) for k in path): tuple(x.shape)
      for path, x in jax.tree_util.tree_leaves_with_path(params_like)
    }
    if saved != wanted:
      differ = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
      details = ", ".join(f"{k}: saved {saved.get(k)} vs model {wanted.get(k)}" for k in differ[:4])
      raise CheckpointMismatchError(
        f"The checkpoint at {self.directory} (step {step}) does not match the model this config builds "
        f"({len(differ)} parameters differ; {details}). Use the config that wrote it, or train in a new --workdir."
      )

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
