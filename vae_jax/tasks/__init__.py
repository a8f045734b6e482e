"""Tasks, by ``config.task``; ``train(config, workdir)`` is ``bin/train.py``."""

from __future__ import annotations

from pathlib import Path

import ml_collections

from vae_jax.config import resolve
from vae_jax.tasks import colorizer, vae
from vae_jax.trainer import TaskSpec, TrainState, fit

TASKS: dict[str, TaskSpec] = {"vae": vae.SPEC, "colorizer": colorizer.SPEC}


def train(config: ml_collections.ConfigDict, workdir: str | Path) -> TrainState:
  """Train what ``config.task`` names in ``workdir``, resuming from its newest checkpoint."""
  config = resolve(config)
  return fit(config, workdir, TASKS[config.task])
