"""Exact resume of a many-epoch run whose data comes from grain worker processes, after kill -9."""

from __future__ import annotations

import jax
import numpy as np
from conftest import kill_then_rerun, load_config

from vae_jax.tasks.vae import train_and_evaluate
from vae_jax.trainer import Checkpointer

STEPS, EVERY, WORKERS = 120, 40, 2  # 36 training images in batches of 8: 120 steps ≈ 26 epochs


def test_sigkill_with_workers_over_many_epochs_then_rerun_gives_identical_parameters(tmp_path):
  overrides = [
    f"--config.train.steps={STEPS}",
    f"--config.train.ckpt_every={EVERY}",
    "--config.train.eval_every=60",
    "--config.train.log_every=50",
    f"--config.data.worker_count={WORKERS}",
    "--config.data.on_device_mb=0",  # read by the grain workers, not held on the device
  ]
  killed = tmp_path / "killed"
  kill_then_rerun(killed, overrides, STEPS)
  ckpts = killed / "checkpoints"

  config = load_config("faces_mlp")
  config.train.steps, config.train.ckpt_every, config.train.eval_every, config.train.log_every = (
    STEPS,
    EVERY,
    60,
    50,
  )
  config.data.worker_count = WORKERS
  config.data.on_device_mb = 0
  straight = train_and_evaluate(config, tmp_path / "straight")
  restored = Checkpointer(ckpts).restore(straight)
  assert int(restored.step) == STEPS
  for x, y in zip(jax.tree.leaves(restored.params), jax.tree.leaves(straight.params), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
