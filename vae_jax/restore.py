"""Reopen a training workdir: its saved config, the model it builds, the latest parameters.

Everything that looks inside a trained model (sample grids, the evaluation
report, the colouriser's VAE-reconstruction inputs) starts here, so a run is
always rebuilt from the config it was trained with, never from flags.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from vae_jax.checkpoint import Checkpointer, has_checkpoint
from vae_jax.config import load_config, workdir_path
from vae_jax.data.pipeline import Subset, build_dataset, load_source
from vae_jax.data.preprocess import Preprocess
from vae_jax.models import build_model
from vae_jax.models.vae import VAE
from vae_jax.train import create_train_state, keeps_ema, make_optimizer

SPLITS = ("train", "val")


class Run(NamedTuple):
  """A trained run: ``config, model, params = load_run(workdir)``."""

  config: ml_collections.ConfigDict
  model: VAE
  params: Any


def image_shape(data_cfg: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(H, W, C) of the images a run's preprocessing produces."""
  return (data_cfg.image_size, data_cfg.image_size, data_cfg.channels)


def load_run(workdir: str | Path) -> Run:
  """Restore the parameters of ``workdir``'s latest checkpoint with its saved config.

  A run that kept a moving average of its parameters (``config.train.ema_decay``)
  is judged by it, so the average is what comes back.

  Only the shapes of a train state are built (``jax.eval_shape``), so no
  initialisation is computed just to be overwritten.

  Raises:
    FileNotFoundError: no config.json or no checkpoint in ``workdir``.
    ValueError: ``workdir`` holds another kind of run (a colouriser).
    CheckpointMismatchError: the checkpoint does not fit the saved config.
  """
  workdir = workdir_path(workdir)
  config = load_config(workdir)
  if config.get("task", "vae") != "vae":
    raise ValueError(
      f"{workdir} holds a {config.task!r} run, not a VAE: point --workdir at a VAE's workdir."
    )
  shape = image_shape(config.data)
  model = build_model(config.model, config.loss, shape)
  tx = make_optimizer(config.opt, config.train.steps)
  params = restore_params(
    workdir,
    lambda: create_train_state(model, tx, shape, jax.random.key(0)),
    "python bin/train.py --config ... --workdir",
    field="ema_params" if keeps_ema(config.train) else "params",
  )
  return Run(config, model, params)


def restore_params(
  workdir: Path, make_state: Callable[[], Any], train_command: str, field: str = "params"
) -> Any:
  """The train state's ``field`` (parameters, or their moving average) from ``workdir``'s latest checkpoint.

  ``make_state`` is only traced
  (``jax.eval_shape``), never run: its ``params`` give the structure.
  """
  ckpt_dir = workdir / "checkpoints"
  if not has_checkpoint(ckpt_dir):
    raise FileNotFoundError(
      f"No checkpoint in {ckpt_dir}: train first ({train_command} {workdir})."
    )
  ckpt = Checkpointer(ckpt_dir)
  try:
    return ckpt.restore_params(jax.eval_shape(make_state).params, field=field)
  finally:
    ckpt.close()


def image_subset(
  config: ml_collections.ConfigDict, data: str | None = None, split: str = "val"
) -> tuple[Subset, Preprocess]:
  """The images to look at, with the run's own preprocessing.

  Args:
    config: the run's config.
    data: any source string (``folder:PATH``, ``npz:PATH``, ``synthetic:…``);
      all of its images are used. ``None``: the run's own source.
    split: with ``data=None``, which split of the run's seeded train/val cut.

  Returns:
    A random-access subset (its ``source`` keeps ``factors`` for synthetic
    data) and the preprocessing that turns its images into model inputs.
  """
  if data is None:
    if split not in SPLITS:
      raise ValueError(f"Unknown split {split!r}; choose one of {SPLITS}.")
    dataset = build_dataset(config)
    subset = getattr(dataset, split)
    if not len(subset):
      raise ValueError(
        f"The run's {split} split is empty (config.data.val_fraction=0?); use another split or --data."
      )
    return subset, dataset.preprocess
  # Another source is read as training reads one: through the decode cache, skipping unusable files.
  data_cfg = config.data.copy_and_resolve_references()
  data_cfg.source = data
  images, preprocess, _ = load_source(data_cfg)
  return Subset(images, np.arange(len(images))), preprocess
