"""Shared test helpers (configs, real data, one VAE run); one XLA compilation cache per session."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

# Many tests start bin/train.py (and a re-run of it) in fresh processes that compile the same smoke
# steps again: JAX's persistent compilation cache, in a directory of this session's own (so every
# session starts cold and leaves nothing behind), lets them load those programs instead. Set before
# JAX is imported, so that this process and every subprocess it starts read it. (Where jaxlib
# rejects its own CPU cache entries, jax-ml/jax#38445 on some Intel CPUs, they log that and compile
# as before.)
_COMPILATION_CACHE = tempfile.mkdtemp(prefix="vae_jax_tests_xla_cache_")
atexit.register(shutil.rmtree, _COMPILATION_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _COMPILATION_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

from vae_jax.config import config_from_file  # noqa: E402
from vae_jax.parallel import request_deterministic_gpu_kernels  # noqa: E402

# Before JAX starts its backend: the resume tests that train in this process need on a GPU what
# bin/train.py asks for (the others run bin/train.py itself).
request_deterministic_gpu_kernels()

import jax  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Equivalence tests compare two formulations of one float32 computation at float32 tolerances; a
# GPU's default float32 matmuls and convolutions round their inputs to TF32 (10-bit mantissa); CPUs
# compute float32 as it is.
if jax.default_backend() != "cpu":
  jax.config.update("jax_default_matmul_precision", "highest")

SHARED_DATA = ROOT.parent / "shared" / "data"


def load_config(name: str, preset: str | None = "smoke"):
  """``configs/<name>.py:get_config(preset)``, the smoke preset unless told otherwise."""
  return config_from_file(ROOT / "configs" / f"{name}.py", preset)


def shared_data(relative: str) -> Path:
  """A folder of ../shared/data, or skip the test when it is absent (a user's fresh clone)."""
  path = SHARED_DATA / relative
  if not path.exists():
    pytest.skip(f"{path} not present")
  return path


def smoke_train_command(workdir: Path, overrides: list[str] = ()) -> list[str]:
  """``bin/train.py --config configs/faces_mlp.py:smoke --workdir WORKDIR`` with ``overrides``."""
  import sys

  return [
    sys.executable,
    str(ROOT / "bin" / "train.py"),
    f"--config={ROOT / 'configs' / 'faces_mlp.py'}:smoke",
    f"--workdir={workdir}",
    *overrides,
  ]


def kill_then_rerun(workdir: Path, overrides: list[str], steps: int) -> int:
  """Train ``faces_mlp:smoke`` in a subprocess, SIGKILL it after its first checkpoint, re-run it.

  The process (and any data workers, via its own session's process group) is
  killed mid-run; the same command is then run again to the end.

  Returns:
    The step of the checkpoint the re-run resumed from.
  """
  import signal
  import subprocess
  import time

  from vae_jax.trainer import Checkpointer

  cmd = smoke_train_command(workdir, overrides)
  proc = subprocess.Popen(
    cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
  )
  ckpts = workdir / "checkpoints"
  try:
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
      if ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir()):
        break
      time.sleep(0.005)
    assert proc.poll() is None, (
      "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    )
  finally:
    with contextlib.suppress(ProcessLookupError):
      os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  latest = Checkpointer(ckpts).latest_step()
  assert latest is not None and latest < steps, latest
  resumed = subprocess.run(cmd, capture_output=True, text=True)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"Resumed from step {latest}" in resumed.stderr
  return latest


@pytest.fixture(scope="session")
def smoke_vae(tmp_path_factory):
  """One 6-step ``faces_mlp:smoke`` run, ``(workdir, final state)``, for tests that only read it."""
  from vae_jax.tasks.vae import train_and_evaluate

  workdir = tmp_path_factory.mktemp("smoke_vae")
  return workdir, train_and_evaluate(load_config("faces_mlp"), workdir)


def vae_training(config, total_steps: int | None = None, key=None):
  """``(model, state, step)`` for ``config``'s VAE as the trainer builds them (key 0 by default)."""
  from vae_jax.tasks.vae import standalone_training

  return standalone_training(config, jax.random.key(0) if key is None else key, total_steps)
