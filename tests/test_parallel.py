"""Data parallelism: a batch split over 4 (forced CPU) devices trains exactly like one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import ROOT, load_config, vae_training

from vae_jax import parallel
from vae_jax.tasks import train
from vae_jax.tasks.vae import train_and_evaluate

STEPS = 4
UNATTENDED_STEPS = 150


def losses_on(num_devices: int, workdir: str | None = None) -> dict:
  """Losses of STEPS train steps of the galaxy smoke model on a mesh of ``num_devices`` CPU devices.

  CPU devices also where the default backend is a GPU, whose TF32 matmuls
  would differ from the forced CPU devices' float32 by more than 1e-5.

  With ``workdir``, also runs ``train_and_evaluate`` on the faces MLP smoke
  preset there (the whole loop: sharded batches, evaluation, checkpoints),
  then the colouriser smoke preset on that VAE's reconstructions, then the
  seed-sized MLP for 150 steps that read no result before the last, so that
  the host runs far ahead of the devices.
  """
  config = load_config("galaxy", "smoke")
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  mesh = parallel.make_mesh(jax.devices("cpu")[:num_devices])
  _, state, step = vae_training(config, total_steps=STEPS)
  state = parallel.replicate(state, mesh)
  batches = np.random.default_rng(0).integers(
    0, 256, (STEPS, config.train.batch_size) + shape, dtype=np.uint8
  )
  losses = []
  for batch in batches:
    x = jax.make_array_from_process_local_data(parallel.batch_sharding(mesh), batch)
    state, metrics = step(state, x, jax.random.key(1))
    losses.append(float(metrics["loss"]))
  result = {
    "losses": losses,
    "batch_devices": len(x.sharding.device_set),
    "batch_shard_rows": sorted({s.data.shape[0] for s in x.addressable_shards}),
    "params_replicated": all(p.sharding.is_fully_replicated for p in jax.tree.leaves(state.params)),
  }
  if workdir:
    final = train_and_evaluate(load_config("faces_mlp", "smoke"), workdir)
    result["fit_steps"] = int(final.step)
    result["fit_params_replicated"] = all(
      p.sharding.is_fully_replicated for p in jax.tree.leaves(final.params)
    )
    colorizer = load_config("colorizer", "smoke")
    colorizer.colorizer.vae_workdir = workdir
    result["colorizer_steps"] = int(train(colorizer, Path(workdir) / "colorizer").step)
    unattended = load_config("faces_mlp", "smoke")
    unattended.model.encoder_hidden, unattended.model.decoder_hidden = (512, 96, 25), (25, 96, 512)
    for cadence in ("steps", "log_every", "eval_every", "ckpt_every"):
      unattended.train[cadence] = UNATTENDED_STEPS
    result["unattended_fit_steps"] = int(
      train_and_evaluate(unattended, Path(workdir) / "unattended").step
    )
  return result


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory) -> dict:
  """``losses_on(4)`` in a fresh process with 4 forced CPU devices."""
  workdir = tmp_path_factory.mktemp("fit4")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  code = (
    "import json, sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import test_parallel as t; "
    "print('RESULT ' + json.dumps(t.losses_on(4, sys.argv[3])))"
  )
  proc = subprocess.run(
    [sys.executable, "-c", code, str(Path(__file__).parent), str(ROOT), str(workdir)],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT ") :])


def test_four_devices_split_the_batch_and_replicate_the_parameters(four_devices):
  assert four_devices["batch_devices"] == 4
  assert four_devices["batch_shard_rows"] == [load_config("galaxy", "smoke").train.batch_size // 4]
  assert four_devices["params_replicated"]


def test_four_devices_give_the_losses_of_one(four_devices):
  one = losses_on(1)
  assert one["batch_devices"] == 1
  assert (
    len(set(one["losses"])) == STEPS
  )  # the parameters move, so the comparison is not of a constant
  np.testing.assert_allclose(four_devices["losses"], one["losses"], rtol=1e-5)


def test_train_and_evaluate_runs_on_four_devices(four_devices):
  assert four_devices["fit_steps"] == load_config("faces_mlp", "smoke").train.steps
  assert four_devices["fit_params_replicated"]


def test_a_colorizer_on_a_vae_trains_on_four_devices(four_devices):
  assert four_devices["colorizer_steps"] == load_config("colorizer", "smoke").train.steps


def test_four_devices_survive_many_steps_dispatched_ahead(four_devices):
  # With many more steps pending than XLA's CPU client admits per device (32), 4 CPU devices
  # deadlock in the gradient's collective and XLA aborts the process (parallel.dispatch_window): the
  # fixture would fail.
  assert four_devices["unattended_fit_steps"] == UNATTENDED_STEPS


def test_deterministic_gpu_kernels_are_asked_for_in_xla_flags_unless_declined_or_set(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  parallel.request_deterministic_gpu_kernels(enabled=False)  # config.train.deterministic=False
  assert "XLA_FLAGS" not in os.environ
  parallel.request_deterministic_gpu_kernels()
  assert os.environ["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=true"
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  parallel.request_deterministic_gpu_kernels()
  assert (
    os.environ["XLA_FLAGS"]
    == "--xla_force_host_platform_device_count=2 --xla_gpu_deterministic_ops=true"
  )
  user_choice = "--xla_gpu_deterministic_ops=false"
  monkeypatch.setenv("XLA_FLAGS", user_choice)
  parallel.request_deterministic_gpu_kernels()
  assert os.environ["XLA_FLAGS"] == user_choice


def test_a_gpu_run_without_deterministic_kernels_is_warned_about(monkeypatch, caplog):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  with caplog.at_level("WARNING", logger="vae_jax"):
    parallel.warn_unless_deterministic_gpu_kernels(enabled=False)
    assert not caplog.records
    parallel.warn_unless_deterministic_gpu_kernels()
    assert "request_deterministic_gpu_kernels" in caplog.text
    caplog.clear()
    parallel.request_deterministic_gpu_kernels()
    parallel.warn_unless_deterministic_gpu_kernels()
    assert not caplog.records


def test_a_batch_that_does_not_split_over_the_devices_is_refused():
  parallel.check_batch_size(7, 1)  # one device takes any batch
  parallel.check_batch_size(12, 4)
  with pytest.raises(ValueError, match="multiple of 4"):
    parallel.check_batch_size(10, 4)
  with pytest.raises(ValueError, match="at least 1"):
    parallel.check_batch_size(0, 1)
