"""``config.task`` → the function that trains it, so ``bin/train.py`` is one command for every model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections

from vae_jax.colorize import train_colorizer
from vae_jax.train import train_and_evaluate

TRAINERS: dict[str, Callable[[ml_collections.ConfigDict, str | Path], Any]] = {
  "vae": train_and_evaluate,
  "colorizer": train_colorizer,
}


def train(config: ml_collections.ConfigDict, workdir: str | Path) -> Any:
  """Train what ``config.task`` names (a VAE when the config has no ``task``) in ``workdir``, resuming if it can."""
  task = config.get("task", "vae")
  if task not in TRAINERS:
    raise ValueError(f"Unknown config.task {task!r}; choose one of {sorted(TRAINERS)}.")
  return TRAINERS[task](config, workdir)
