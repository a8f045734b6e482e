"""Helpers the benchmarks share."""

from __future__ import annotations

from pathlib import Path

import ml_collections

from vae_jax.config import config_from_file

ROOT = Path(__file__).resolve().parents[1]

# ``load_config`` overrides that switch a config's on-device augmentation off (the seeds train
# without any).
NO_AUGMENTATION = {
  "data.hflip": False,
  "data.max_shift": 0.0,
  "data.max_rotation": 0.0,
  "data.max_zoom": 0.0,
}


def load_config(name: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """``configs/<name>.py:get_config()`` with ``{"group.field": value}`` overrides, unlocked."""
  config = config_from_file(ROOT / "configs" / f"{name}.py")
  config.unlock()
  for dotted, value in (overrides or {}).items():
    group, field = dotted.split(".")
    config[group][field] = value
  return config
