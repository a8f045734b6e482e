"""Helpers the benchmarks share."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

ROOT = Path(__file__).resolve().parents[1]

# ``load_config`` overrides that switch a config's on-device augmentation off (the seeds train without any).
NO_AUGMENTATION = {"data.hflip": False, "data.max_shift": 0.0, "data.max_rotation": 0.0, "data.max_zoom": 0.0}


def load_config(name: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """``configs/<name>.py:get_config()`` with ``{"group.field": value}`` overrides, unlocked."""
  spec = importlib.util.spec_from_file_location(f"configs.{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.unlock()
  for dotted, value in (overrides or {}).items():
    group, field = dotted.split(".")
    config[group][field] = value
  return config
