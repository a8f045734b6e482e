#!/usr/bin/env python
"""How much of a training run is the step itself: compiled step time against wall time per step.

Two figures for one config, on whatever machine this runs:

* ``step_ms``: the compiled train step alone, on a batch already on the
  device (median of ``--repeats`` timed windows of ``--window`` steps);
* ``wall_ms_per_step``: a real run (``fit``: data, evaluation, pictures,
  checkpoints, logs) of ``--steps`` steps against one of ``--base_steps``
  in a fresh workdir each (after a one-step run that fills the decode
  cache); the difference of their wall times over the difference of their
  steps, so start-up and compilation cancel out;

and ``overhead``, their ratio: 1.0 is a run bounded by its compute.

  python benchmarks/overhead.py --config configs/galaxy.py \\
      --config.data.source=folder:../shared/data/galaxy_zoo/train --steps 500 --base_steps 250
  python benchmarks/overhead.py --config configs/faces_mlp.py --steps 2000 --base_steps 1000
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from vae_jax.models import image_shape
from vae_jax.tasks.vae import standalone_training, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=False)
_STEPS = flags.DEFINE_integer("steps", 500, "Steps of the longer real run.")
_BASE_STEPS = flags.DEFINE_integer("base_steps", 250, "Steps of the shorter real run.")
_WINDOW = flags.DEFINE_integer("window", 20, "Steps per timed window of the compiled step.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed windows of the compiled step.")
_WORKDIR_ROOT = flags.DEFINE_string(
  "workdir_root", None, "Where the runs go (default: a temp dir)."
)


def compiled_step_ms(config, window: int, repeats: int) -> float:
  """Median milliseconds of one compiled train step on a device-resident batch."""
  _, state, step = standalone_training(config, jax.random.key(0))
  shape = (config.train.batch_size,) + image_shape(config.data)
  batch = jax.device_put(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
  key = jax.random.key(1)
  for _ in range(3):
    state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(window):
      state, metrics = step(state, batch, key)
    jax.block_until_ready(metrics)
    times.append((time.perf_counter() - start) / window)
  return 1e3 * statistics.median(times)


def run_seconds(config, steps: int, root: Path) -> float:
  """Wall seconds of a fresh ``steps``-step run, compilation and start-up included."""
  config = config.copy_and_resolve_references()
  config.train.steps = steps
  start = time.perf_counter()
  train_and_evaluate(config, Path(tempfile.mkdtemp(dir=root)) / f"run_{steps}")
  return time.perf_counter() - start


def main(argv):
  del argv
  config = _CONFIG.value
  if config.train.steps_per_dispatch != 1:
    raise app.UsageError("Measure with --config.train.steps_per_dispatch=1.")
  if not 0 < _BASE_STEPS.value < _STEPS.value:
    raise app.UsageError("Need 0 < --base_steps < --steps.")
  root = Path(_WORKDIR_ROOT.value or tempfile.mkdtemp(prefix="overhead_"))
  root.mkdir(parents=True, exist_ok=True)
  step_ms = compiled_step_ms(config, _WINDOW.value, _REPEATS.value)
  run_seconds(config, 1, root)  # fills the decode cache, which the two timed runs then share
  short = run_seconds(config, _BASE_STEPS.value, root)
  long = run_seconds(config, _STEPS.value, root)
  wall_ms = 1e3 * (long - short) / (_STEPS.value - _BASE_STEPS.value)
  print(
    json.dumps(
      {
        "config": config.model.name,
        "source": config.data.source,
        "device": jax.devices()[0].device_kind,
        "batch_size": config.train.batch_size,
        "step_ms": round(step_ms, 2),
        "wall_ms_per_step": round(wall_ms, 2),
        "overhead": round(wall_ms / step_ms, 3),
        "runs_s": {_BASE_STEPS.value: round(short, 1), _STEPS.value: round(long, 1)},
        "on_device_mb": config.data.get("on_device_mb"),  # None: a version without it
      }
    )
  )


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
