"""End to end: train_and_evaluate writes its outputs, resumes exactly, stops on NaN."""

from __future__ import annotations

import dataclasses
import json
import signal
import struct
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import kill_then_rerun, load_config, smoke_train_command, vae_training

from vae_jax.config import save_config
from vae_jax.errors import CheckpointMismatchError, NonFiniteLossError
from vae_jax.tasks import vae
from vae_jax.tasks.vae import train_and_evaluate
from vae_jax.trainer import Checkpointer, fit


def _params(state) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def _assert_same(a, b) -> None:
  for x, y in zip(_params(a), _params(b), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  """One uninterrupted smoke run of the MLP faces config (6 steps, checkpoints at 3 and 6)."""
  workdir = tmp_path_factory.mktemp("smoke")
  config = load_config("faces_mlp")
  return config, workdir, train_and_evaluate(config, workdir)


def test_run_writes_outputs(smoke_run):
  config, workdir, state = smoke_run
  assert int(state.step) == config.train.steps
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in records if r["split"] == "train"]
  val = [r for r in records if r["split"] == "val"]
  assert [r["step"] for r in train] == [2, 4, 6]
  assert [r["step"] for r in val] == [3, 6]
  for r in val:
    assert r["bits_per_dim"] == pytest.approx(r["neg_elbo_nats"] / (30 * 30 * np.log(2)))
    assert len(r["kl_per_dim"]) == config.model.latent_dim
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["3", "6"]
  assert json.loads((workdir / "config.json").read_text())["model"]["name"] == "mlp"
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  from PIL import Image

  recon_png = workdir / "samples" / "training" / "recon.png"
  recon = np.asarray(Image.open(recon_png))
  assert recon.ndim == 3 and recon.shape[0] > 30 * 4  # upscaled tiles
  assert (
    recon_png.read_bytes() == (workdir / "samples" / "training" / "recon_000006.png").read_bytes()
  )


def _tensorboard_images(event_file: Path) -> dict[tuple[str, int], bytes]:
  """{(tag, step): encoded image} of a TensorBoard event file (TFRecords: length, CRC, Event)."""
  from tensorboardX.proto.event_pb2 import Event

  data, out, at = event_file.read_bytes(), {}, 0
  while at < len(data):
    (length,) = struct.unpack("<Q", data[at : at + 8])
    event = Event.FromString(data[at + 12 : at + 12 + length])
    at += 12 + length + 4
    for value in event.summary.value:
      if value.HasField("image"):
        out[value.tag, event.step] = value.image.encoded_image_string
  return out


def test_training_grids_are_encoded_once_at_zlibs_fastest_level(smoke_run):
  """TensorBoard holds the very PNG written to samples/ (not a second encoding), at level 1."""
  _, workdir, _ = smoke_run
  [event_file] = (workdir / "tensorboard").glob("events.out.tfevents.*")
  logged = _tensorboard_images(event_file)
  assert sorted(logged) == [("prior", 3), ("prior", 6), ("recon", 3), ("recon", 6)]
  for (name, step), png in logged.items():
    assert png == (workdir / "samples" / "training" / f"{name}_{step:06d}.png").read_bytes()
    idat = png.index(b"IDAT")
    assert png[idat + 4 : idat + 6] == b"\x78\x01"  # zlib header: FLEVEL 0, the fastest compression


def test_rerun_resumes_and_continues(smoke_run, tmp_path):
  """Training 6 steps, then 3 more in a second call, equals 9 steps in one go.

  (A constant learning rate, so that extending the run does not change the schedule.)
  """
  config6, config9 = load_config("faces_mlp"), load_config("faces_mlp")
  config6.opt.schedule = config9.opt.schedule = "constant"
  config9.train.steps = 9
  staged = tmp_path / "staged"
  train_and_evaluate(config6, staged)
  resumed = train_and_evaluate(config9, staged)
  straight = train_and_evaluate(config9, tmp_path / "straight")
  assert int(resumed.step) == 9
  _assert_same(resumed, straight)


def test_a_run_resumed_on_the_other_data_path_ends_as_an_unbroken_run(tmp_path):
  """6 steps reading batches on the host, 3 more with the split on the device = 9 on the device."""
  host, device = load_config("faces_mlp"), load_config("faces_mlp")
  host.opt.schedule = device.opt.schedule = "constant"
  host.data.on_device_mb = 0
  device.train.steps = 9
  staged = tmp_path / "staged"
  train_and_evaluate(host, staged)
  resumed = train_and_evaluate(device, staged)
  straight = train_and_evaluate(device, tmp_path / "straight")
  assert int(resumed.step) == 9
  _assert_same(resumed, straight)


def test_sigkill_mid_training_then_rerun_gives_identical_parameters(tmp_path):
  """Kill -9 a run right after a checkpoint lands; the re-run ends where an unbroken one does."""
  steps, every = 300, 100
  overrides = [
    f"--config.train.steps={steps}",
    f"--config.train.ckpt_every={every}",
    "--config.train.eval_every=150",
    "--config.train.log_every=50",
  ]
  killed = tmp_path / "killed"
  kill_then_rerun(killed, overrides, steps)
  ckpts = killed / "checkpoints"

  config = load_config("faces_mlp")
  config.train.steps, config.train.ckpt_every, config.train.eval_every, config.train.log_every = (
    steps,
    every,
    150,
    50,
  )
  straight = train_and_evaluate(config, tmp_path / "straight")
  restored = Checkpointer(ckpts).restore(straight)
  assert int(restored.step) == steps
  _assert_same(restored, straight)


def test_ctrl_c_saves_the_step_reached_and_the_rerun_ends_as_an_unbroken_run(tmp_path):
  """SIGINT mid-run: a checkpoint of that step (off the schedule), a one-line message, exit 1."""
  steps = 2000
  overrides = [
    f"--config.train.steps={steps}",
    f"--config.train.ckpt_every={steps}",
    f"--config.train.eval_every={steps}",
    "--config.train.log_every=10",
  ]
  workdir = tmp_path / "interrupted"
  cmd = smoke_train_command(workdir, overrides)
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 180
  while (
    time.time() < deadline
    and proc.poll() is None
    and not (metrics.exists() and metrics.stat().st_size)
  ):
    time.sleep(0.005)
  proc.send_signal(signal.SIGINT)
  stderr = proc.communicate(timeout=120)[1]
  assert proc.returncode == 1, stderr[-2000:]
  reached = Checkpointer(workdir / "checkpoints").latest_step()
  assert reached is not None and 0 < reached < steps, stderr[-2000:]
  assert f"Stopped by SIGINT at step {reached} of {steps}" in stderr and "Traceback" not in stderr

  resumed = subprocess.run(cmd, capture_output=True, text=True)
  assert resumed.returncode == 0 and f"Resumed from step {reached}" in resumed.stderr, (
    resumed.stderr[-2000:]
  )
  config = load_config("faces_mlp")
  config.train.steps = config.train.ckpt_every = config.train.eval_every = steps
  config.train.log_every = 10
  straight = train_and_evaluate(config, tmp_path / "straight")
  _assert_same(Checkpointer(workdir / "checkpoints").restore(straight), straight)


def test_other_architecture_in_workdir_is_a_clear_error(smoke_run):
  _, workdir, _ = smoke_run
  with pytest.raises(CheckpointMismatchError, match=r"different config.model"):
    train_and_evaluate(load_config("faces_conv"), workdir)


def test_another_split_in_workdir_is_a_clear_error(smoke_run):
  _, workdir, _ = smoke_run
  for field, value in (("seed", 1), ("data.val_fraction", 0.5)):
    config = load_config("faces_mlp")
    group, _, name = field.rpartition(".")
    (config[group] if group else config)[name] = value
    with pytest.raises(CheckpointMismatchError, match=name):
      train_and_evaluate(config, workdir)


def test_a_resume_that_fails_leaves_the_runs_config_alone(smoke_run):
  _, workdir, _ = smoke_run
  saved = (workdir / "config.json").read_text()
  config = load_config("faces_mlp")
  config.train.steps = 9
  config.data.source = "folder:/no/such/folder"
  with pytest.raises(Exception, match="no/such/folder"):
    train_and_evaluate(config, workdir)
  assert (workdir / "config.json").read_text() == saved


def test_a_workdir_without_checkpoint_starts_again_with_another_config(tmp_path):
  """A start that failed on a bad value leaves config.json; the corrected command is not refused."""
  bad = load_config("faces_conv")
  save_config(bad, tmp_path)
  (tmp_path / "checkpoints").mkdir()
  state = train_and_evaluate(load_config("faces_mlp"), tmp_path)
  assert int(state.step) == 6
  assert json.loads((tmp_path / "config.json").read_text())["model"]["name"] == "mlp"


def test_a_url_or_a_file_as_workdir_is_refused_before_anything_is_written(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # pathlib would have made a local directory gs:/bucket/runs/x here
  with pytest.raises(ValueError, match="filesystem path"):
    train_and_evaluate(load_config("faces_mlp"), "gs://bucket/runs/x")
  assert list(tmp_path.iterdir()) == []
  (tmp_path / "notes.txt").write_text("a file")
  with pytest.raises(ValueError, match="is a file, not a directory"):
    train_and_evaluate(load_config("faces_mlp"), tmp_path / "notes.txt")


@jax.custom_vjp
def _gradient_poison(x, on):
  return x


_gradient_poison.defvjp(
  lambda x, on: (x, on), lambda on, g: (jnp.where(on > 0, jnp.inf, g), jnp.zeros_like(on))
)


def test_a_nonfinite_gradient_stops_the_run_before_it_is_checkpointed(tmp_path):
  """A finite loss with an infinite gradient norm: the update has made the parameters NaN."""

  def poisoned_task(config, dataset, keys, val_images):
    task = vae.build_task(config, dataset, keys, val_images)

    def loss(params, batch, key, step, constants):
      # From the 4th step on, the output layer's bias gets an infinite gradient; the loss stays
      # finite.
      bias = params["decoder"]["out"]["bias"]
      poisoned = _gradient_poison(bias, (step >= 3).astype(jnp.float32))
      value, metrics = task.loss(params, batch, key, step, constants)
      return value + 0.0 * jnp.sum(poisoned), metrics

    return dataclasses.replace(task, loss=loss)

  with pytest.raises(NonFiniteLossError, match="grad norm became inf at step 4"):
    fit(
      load_config("faces_mlp"), tmp_path, dataclasses.replace(vae.SPEC, build=poisoned_task)
    )  # logs every 2 steps, checkpoints every 3
  assert Checkpointer(tmp_path / "checkpoints").latest_step() == 3


def test_checkpoint_of_other_shapes_is_a_clear_error(smoke_run):
  _config, workdir, state = smoke_run
  wider = jax.tree.map(lambda x: np.zeros(x.shape + (2,), x.dtype) if x.ndim == 2 else x, state)
  with pytest.raises(CheckpointMismatchError, match="does not match"):
    Checkpointer(workdir / "checkpoints").restore(wider)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = load_config("faces_mlp")
  config.opt.learning_rate = 1e30  # diverges within a few steps
  config.opt.grad_clip = 1e30
  config.opt.warmup_steps = 0
  config.train.ckpt_every = 2
  with pytest.raises(NonFiniteLossError, match="learning_rate"):
    train_and_evaluate(config, tmp_path)
  saved = Checkpointer(tmp_path / "checkpoints").latest_step()
  if saved is not None:  # whatever was saved holds finite parameters
    _, like, _ = vae_training(config)
    restored = Checkpointer(tmp_path / "checkpoints").restore(like)
    assert all(np.isfinite(p).all() for p in _params(restored))
