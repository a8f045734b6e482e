"""Faults survived: damaged checkpoints fall back, one run per workdir, full disks, bad values."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import ROOT, load_config, smoke_train_command

from vae_jax import files, sampling
from vae_jax.config import resolve
from vae_jax.errors import (
  CheckpointMismatchError,
  CheckpointNotFoundError,
  ConfigError,
  WorkdirError,
  WriteError,
)
from vae_jax.inference import open_run
from vae_jax.tasks.vae import train_and_evaluate
from vae_jax.trainer import lock as lock_module
from vae_jax.trainer.lock import WorkdirLock


def _leaves(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  """A 6-step smoke run with checkpoints at 3 and 6: (workdir, final state)."""
  workdir = tmp_path_factory.mktemp("faults") / "base"
  return workdir, train_and_evaluate(load_config("faces_mlp"), workdir)


def _largest_file(folder):
  return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


DAMAGE = {
  "truncated array file": lambda s: os.truncate(_largest_file(s / "state"), 1000),
  "garbage manifest": lambda s: (s / "state" / "manifest.ocdbt").write_bytes(b"garbage"),
  "state folder deleted": lambda s: shutil.rmtree(s / "state"),
  "metadata deleted": lambda s: (s / "state" / "_METADATA").unlink(),
  "data position deleted": lambda s: (s / "data" / "process_0-of-1.json").unlink(),
  "stray empty step": lambda s: (s.parent / "9").mkdir(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_latest_checkpoint_falls_back_to_an_intact_one(
  base_run, tmp_path, damage, caplog
):
  base, final = base_run
  workdir = tmp_path / "run"
  shutil.copytree(base, workdir)
  DAMAGE[damage](workdir / "checkpoints" / "6")
  damaged_step = 9 if damage == "stray empty step" else 6
  # Looking inside reads the newest checkpoint whose parameters read back, and changes nothing.
  with caplog.at_level(logging.WARNING, logger="vae_jax"):
    run = open_run(workdir)
  params_intact = damage in ("data position deleted", "stray empty step")
  assert run.step == (6 if params_intact else 3)
  if not params_intact:
    assert f"Checkpoint {damaged_step} in {workdir / 'checkpoints'} is damaged" in caplog.text
  assert (workdir / "checkpoints" / str(damaged_step)).exists()
  # Training moves it aside, resumes from the intact one, and ends as the unbroken run did.
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="vae_jax"):
    resumed = train_and_evaluate(load_config("faces_mlp"), workdir)
  assert f"Checkpoint {damaged_step} in" in caplog.text and "moved it to" in caplog.text
  [aside] = (workdir / "damaged_checkpoints").iterdir()
  assert aside.name.startswith(f"{damaged_step}-")
  for a, b in zip(_leaves(resumed.params), _leaves(final.params), strict=True):
    np.testing.assert_array_equal(a, b)


def test_no_intact_checkpoint_is_one_message_saying_what_to_do(base_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(base_run[0], workdir)
  for step in ("3", "6"):
    shutil.rmtree(workdir / "checkpoints" / step / "state")
  with pytest.raises(CheckpointNotFoundError, match=r"No intact checkpoint.*6 \(.*\); 3 \("):
    open_run(workdir)
  with pytest.raises(CheckpointNotFoundError, match="Re-run the same command to train from"):
    train_and_evaluate(load_config("faces_mlp"), workdir)
  assert sorted(p.name[:1] for p in (workdir / "damaged_checkpoints").iterdir()) == ["3", "6"]


# --- one run per workdir ---------------------------------------------------------------------


def _held_lock(workdir, **holder):
  workdir.mkdir(parents=True, exist_ok=True)
  record = {"host": socket.gethostname(), "pid": os.getpid(), "started": "then", "token": "x"}
  path = workdir / lock_module.LOCK_FILENAME
  path.write_text(json.dumps({**record, **holder}))
  return path


def test_a_workdir_held_by_a_live_run_is_refused_before_anything_is_written(tmp_path):
  _held_lock(tmp_path / "run")
  with pytest.raises(WorkdirError, match=f"in use by another training run \\(pid {os.getpid()}"):
    train_and_evaluate(load_config("faces_mlp"), tmp_path / "run")
  assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [lock_module.LOCK_FILENAME]


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, caplog):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  path = _held_lock(tmp_path, pid=dead.pid)
  with caplog.at_level(logging.WARNING, logger="vae_jax"), WorkdirLock(tmp_path) as lock:
    assert json.loads(path.read_text())["token"] == lock.holder["token"]
  assert "its process is gone" in caplog.text
  assert not path.exists()  # released


def test_a_lock_of_another_host_is_stale_only_when_its_heartbeat_stopped(tmp_path):
  path = _held_lock(tmp_path, host="elsewhere", pid=1)
  with pytest.raises(WorkdirError, match="pid 1 on elsewhere"):
    WorkdirLock(tmp_path).acquire()
  old = time.time() - 2 * lock_module.STALE_AFTER_S
  os.utime(path, (old, old))
  with WorkdirLock(tmp_path):
    assert json.loads(path.read_text())["host"] == socket.gethostname()


def test_the_holder_keeps_its_lock_fresh(tmp_path, monkeypatch):
  monkeypatch.setattr(lock_module, "HEARTBEAT_S", 0.05)
  with WorkdirLock(tmp_path) as lock:
    old = time.time() - 1000
    os.utime(lock.path, (old, old))
    time.sleep(0.3)
    assert time.time() - lock.path.stat().st_mtime < 10


def test_reading_a_workdir_needs_no_lock(base_run):
  workdir = base_run[0]
  with WorkdirLock(workdir):
    assert open_run(workdir).step == 6


# --- full disks and failed writes --------------------------------------------------------------


def _write_with_file_size_limit(path, data: bytes, limit: int) -> subprocess.CompletedProcess:
  """``files.write_bytes(path, data)`` in a process that may not write files over ``limit`` bytes.

  SIGXFSZ is ignored there, so a write past the limit fails with EFBIG as a full disk fails.
  """
  code = (
    "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]),) * 2); "
    "from vae_jax import files; from vae_jax.cli import run_or_explain; "
    "run_or_explain(lambda: files.write_bytes(sys.argv[1], b'x' * int(sys.argv[2])))"
  )
  return subprocess.run(
    [sys.executable, "-c", code, str(path), str(len(data)), str(limit)],
    capture_output=True,
    text=True,
  )


def test_a_failed_write_keeps_the_previous_file_whole_and_says_so_in_one_line(tmp_path):
  path = tmp_path / "grid.png"
  path.write_bytes(b"previous")
  done = _write_with_file_size_limit(path, b"x" * 100_000, limit=4096)
  assert done.returncode == 1 and "Traceback" not in done.stderr
  assert done.stderr.count("\n") == 1 and f"{path} could not be written (File too large)" in (
    done.stderr
  )
  assert "its previous version is intact" in done.stderr
  assert path.read_bytes() == b"previous"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]  # no temporary left behind


def test_a_checkpoint_that_does_not_fit_is_refused_before_orbax_writes(tmp_path, monkeypatch):
  free = shutil.disk_usage(tmp_path)
  monkeypatch.setattr(
    "vae_jax.trainer.checkpointer.shutil.disk_usage", lambda _: free._replace(free=1000)
  )
  with pytest.raises(WriteError) as error:
    train_and_evaluate(load_config("faces_mlp"), tmp_path / "run")
  message = str(error.value)
  assert "checkpoint 3 could not be written" in message and "no space left on device" in message
  assert "no checkpoint had been written yet" in message and files.FIX in message
  assert not (tmp_path / "run" / "checkpoints" / "3").exists()


@pytest.fixture
def tiny_disk(tmp_path):
  """A 3 MB tmpfs (needs root and permission to mount; skipped otherwise)."""
  mount = tmp_path / "disk"
  mount.mkdir()
  made = subprocess.run(
    ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
  )
  if made.returncode:
    pytest.skip("cannot mount a small tmpfs here (needs root)")
  yield mount
  subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_stops_training_in_one_line_and_a_rerun_after_freeing_space_finishes(tiny_disk):
  workdir = tiny_disk / "run"
  overrides = [f"--config.train.{k}=3" for k in ("ckpt_every", "eval_every", "log_every")]
  cmd = smoke_train_command(workdir, [*overrides, "--config.train.steps=300"])
  done = subprocess.run(cmd, capture_output=True, text=True)
  errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
  assert len(errors) == 1 and "could not be written" in errors[0], errors
  assert "is intact. Free space" in errors[0]
  intact = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert intact and open_run(workdir).step == intact[-1]
  for freed in [workdir / "samples", *(workdir / "checkpoints" / str(s) for s in intact[:-1])]:
    shutil.rmtree(freed)
  cmd = smoke_train_command(workdir, [*overrides, f"--config.train.steps={intact[-1] + 3}"])
  again = subprocess.run(cmd, capture_output=True, text=True)
  assert again.returncode == 0, again.stderr[-2000:]


# --- logs of a resumed run ---------------------------------------------------------------------


def test_a_resumed_run_logs_each_step_once(base_run, tmp_path):
  """Records after the restored checkpoint (steps 4–6 after a fall back to 3) are dropped."""
  base, _ = base_run
  workdir = tmp_path / "run"
  shutil.copytree(base, workdir)
  shutil.rmtree(workdir / "checkpoints" / "6" / "state")
  train_and_evaluate(load_config("faces_mlp"), workdir)

  def records(w):
    lines = (w / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "images_per_s"} for x in lines]

  assert records(workdir) == records(base)
  # TensorBoard drops the events a restart logs again: the resumed run's event file starts with a
  # session START at the first step it logs anew, and TensorBoard purges earlier events from there.
  starts = [
    event.step
    for path in (workdir / "tensorboard").glob("events.out.tfevents.*")
    for event in _events(path)
    if event.HasField("session_log") and event.session_log.status == event.session_log.START
  ]
  assert starts == [4]


def _events(path):
  """The events of a TensorBoard event file (TFRecords: length, its CRC, the Event, its CRC)."""
  from tensorboardX.proto.event_pb2 import Event

  data, at = path.read_bytes(), 0
  while at < len(data):
    length = int.from_bytes(data[at : at + 8], "little")
    yield Event.FromString(data[at + 12 : at + 12 + length])
    at += 12 + length + 4


# --- values that cannot be meant --------------------------------------------------------------


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("train.steps", -5, r"train.steps=-5 must be a whole number ≥ 1"),
    ("train.steps", 0, r"train.steps=0 must be a whole number ≥ 1"),
    ("train.ckpt_every", 0, r"train.ckpt_every=0 must be a whole number ≥ 1"),
    ("train.batch_size", 0, r"train.batch_size=0 must be"),
    ("loss.scale", 0.0, r"loss.scale=0.0 must be a finite number in \(0, inf\)"),
    ("opt.learning_rate", float("nan"), r"opt.learning_rate=nan must be a finite number"),
    ("opt.learning_rate", -1e-3, r"opt.learning_rate=-0.001 must be"),
    ("data.val_fraction", 1.0, r"val_fraction=1.0 must be a finite number in \[0, 1\)"),
    ("data.image_size", 0, r"data.image_size=0 must be a whole number ≥ 1"),
    ("data.source", "flickr:cats", r"data.source='flickr:cats' must be a data source of the form"),
  ],
)
def test_values_that_cannot_be_meant_are_refused_naming_the_field(field, value, message):
  config = load_config("faces_mlp")
  group, name = field.split(".")
  config[group][name] = value
  with pytest.raises(ConfigError, match=message):
    resolve(config)


def test_the_command_line_refuses_a_bad_value_in_one_line(tmp_path):
  done = subprocess.run(
    smoke_train_command(tmp_path / "run", ["--config.train.steps=-5"]),
    capture_output=True,
    text=True,
  )
  assert done.returncode == 1 and "Traceback" not in done.stderr
  assert (
    done.stderr.strip() == ("error: config.train.steps=-5 must be a whole number ≥ 1.")
    and not (tmp_path / "run").exists()
  )


@pytest.mark.parametrize(
  "field, value", [("data.synthetic.num_images", 60), ("data.synthetic.seed", 1)]
)
def test_a_resume_on_another_data_set_is_refused(base_run, field, value):
  config = load_config("faces_mlp")
  config.data.synthetic[field.rsplit(".", 1)[1]] = value
  with pytest.raises(CheckpointMismatchError, match=r"data.synthetic.*held-out images"):
    train_and_evaluate(config, base_run[0])


@pytest.mark.parametrize("kind", ["prior", "manifold", "recon", "interp", "traverse", "colorize"])
def test_a_picture_too_large_is_refused_before_anything_is_allocated(kind):
  with pytest.raises(ConfigError, match=r"--n .* at most"):
    sampling.options(kind, n=100_000)


def test_a_picture_of_too_many_pixels_is_refused(base_run, tmp_path):
  with pytest.raises(ConfigError, match="megapixels"):
    sampling.write_samples(base_run[0], sampling.Prior(side=100), tmp_path / "p.png")
  assert not (tmp_path / "p.png").exists()


def test_the_sample_command_refuses_a_huge_grid_in_one_line(base_run):
  cmd = [sys.executable, str(ROOT / "bin" / "sample.py"), f"--workdir={base_run[0]}"]
  done = subprocess.run([*cmd, "--kind=prior", "--n=100000"], capture_output=True, text=True)
  assert done.returncode == 1 and "Traceback" not in done.stderr
  assert done.stderr.strip().startswith("error: --n (side of a prior picture)")


def test_a_relative_workdir_opens_and_resumes(base_run, tmp_path, monkeypatch):
  """Orbax wants absolute paths; a relative --workdir must not read as a damaged checkpoint."""
  shutil.copytree(base_run[0], tmp_path / "run")
  monkeypatch.chdir(tmp_path)
  assert open_run("run").step == 6
  config = load_config("faces_mlp")
  config.train.steps = 6
  assert int(train_and_evaluate(config, "run").step) == 6
  assert not (tmp_path / "run" / "damaged_checkpoints").exists()
