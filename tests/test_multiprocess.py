"""Two processes on this machine (CPU collectives, localhost coordinator) train one model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import ROOT, load_config, vae_training

from vae_jax.data.dataset import build_dataset
from vae_jax.data.pipeline import train_iterator
from vae_jax.inference import open_run
from vae_jax.rng import split_root_key

NUM_PROCESSES = 2


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _train_in_processes(workdir) -> list[str]:
  """``bin/train.py faces_mlp:smoke`` as NUM_PROCESSES one-device processes; their logs."""
  address = f"localhost:{_free_port()}"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        str(ROOT / "bin" / "train.py"),
        f"--config={ROOT / 'configs' / 'faces_mlp.py'}:smoke",
        f"--workdir={workdir}",
        f"--coordinator_address={address}",
        f"--num_processes={NUM_PROCESSES}",
        f"--process_id={i}",
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(NUM_PROCESSES)
  ]
  logs = []
  for proc in procs:
    try:
      _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      raise
    assert proc.returncode == 0, err[-4000:]
    logs.append(err)
  return logs


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
  """The workdir and logs of a two-process run, and of the same command run again (a resume)."""
  workdir = tmp_path_factory.mktemp("two_processes")
  return workdir, _train_in_processes(workdir), _train_in_processes(workdir)


def test_two_processes_form_one_mesh_and_finish(two_process_run):
  workdir, logs, _ = two_process_run
  assert "2 cpu device(s)" in logs[0]  # the mesh spans both processes' devices
  steps = load_config("faces_mlp").train.steps
  finals = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  # Only process 0 logs: each (step, split) record appears once.
  keys = [(r["step"], r["split"]) for r in finals]
  assert len(keys) == len(set(keys)) and (steps, "val") in keys
  assert all(np.isfinite(r["loss"]) for r in finals if r["split"] == "train")


def test_the_processes_resume_together_from_their_checkpoint(two_process_run):
  """Each process restores straight into the mesh's sharding (no cross-host copy)."""
  _, _, again = two_process_run
  steps = load_config("faces_mlp").train.steps
  assert all(f"Resumed from step {steps}" in log for log in again)


def test_their_checkpoint_restores_in_one_process_with_the_parameters_of_the_global_batches(
  two_process_run,
):
  """One process replays the run: global batch = process 0's rows then 1's, same keys and steps."""
  workdir, _, _ = two_process_run
  assert jax.process_count() == 1
  restored = open_run(workdir).params

  config = load_config("faces_mlp")
  dataset = build_dataset(config)
  # On a CPU like the two processes (JAX_PLATFORMS=cpu), also where the default backend is a GPU
  # with TF32 matmuls.
  with jax.default_device(jax.devices("cpu")[0]):
    keys = split_root_key(config.seed)
    _, state, step = vae_training(config, key=keys["init"])
    initial = [np.asarray(p) for p in jax.tree.leaves(state.params)]
    streams = [
      train_iterator(dataset, config.train.batch_size, config.seed, shard=(i, NUM_PROCESSES))
      for i in range(NUM_PROCESSES)
    ]
    for _ in range(config.train.steps):
      state, _ = step(state, np.concatenate([next(s) for s in streams]), keys["train"])
    for stream in streams:
      stream.close()

  replayed = jax.tree.leaves(state.params)
  for (path, got), want in zip(
    jax.tree_util.tree_leaves_with_path(restored), replayed, strict=True
  ):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  assert any(
    not np.allclose(a, b) for a, b in zip(replayed, initial)
  )  # the comparison is of trained parameters
