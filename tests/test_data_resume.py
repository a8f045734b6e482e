"""Exact resume of a many-epoch run whose data comes from grain worker processes, after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from conftest import ROOT, load_config
from vae_jax.checkpoint import Checkpointer
from vae_jax.train import train_and_evaluate

STEPS, EVERY, WORKERS = 120, 40, 2  # 36 training images in batches of 8: 120 steps ≈ 26 epochs


def test_sigkill_with_workers_over_many_epochs_then_rerun_gives_identical_parameters(tmp_path):
  overrides = [
      f"--config.train.steps={STEPS}", f"--config.train.ckpt_every={EVERY}", "--config.train.eval_every=60",
      "--config.train.log_every=50", f"--config.data.worker_count={WORKERS}",
  ]
  cmd = [sys.executable, str(ROOT / "bin" / "train.py"), f"--config={ROOT / 'configs' / 'faces_mlp.py'}:smoke"]
  killed = tmp_path / "killed"
  # Its own session, so that whatever it leaves behind can be found (and ended) by its process group.
  proc = subprocess.Popen(cmd + [f"--workdir={killed}"] + overrides, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, start_new_session=True)
  try:
    ckpts = killed / "checkpoints"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
      if ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir()):
        break
      time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
  finally:
    try:  # grain's workers exit when their parent dies; make sure of it
      os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
  latest = Checkpointer(ckpts).latest_step()
  assert latest is not None and latest < STEPS, latest

  resumed = subprocess.run(cmd + [f"--workdir={killed}"] + overrides, capture_output=True, text=True)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"Resumed from step {latest}" in resumed.stderr

  config = load_config("faces_mlp")
  config.train.steps, config.train.ckpt_every, config.train.eval_every, config.train.log_every = STEPS, EVERY, 60, 50
  config.data.worker_count = WORKERS
  straight = train_and_evaluate(config, tmp_path / "straight")
  restored = Checkpointer(ckpts).restore(straight)
  assert int(restored.step) == STEPS
  for x, y in zip(jax.tree.leaves(restored.params), jax.tree.leaves(straight.params), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
