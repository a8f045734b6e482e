#!/usr/bin/env python
"""Images/s the data pipeline delivers, beside images/s the train step consumes, per config.

For each config, on its real image folder, in one process:
  cold build   decoding every file into a fresh decode cache (the first run's start)
  warm start   build_dataset again: the cache is found (every later run's start),
               in this process and in a fresh one (imports included, up to the first batch)
  stream warm  the training iterator reading the cache (what training sees)
  stream files the training iterator decoding files per batch (config.data.cache=False)
  train step   the config's jitted train step on batches of that data
and the ratios stream/step. The pipeline must stay ≥ 5× ahead of the step.

  python benchmarks/pipeline_throughput.py
  python benchmarks/pipeline_throughput.py --configs=galaxy --stream_batches=100

The data folders default to ../shared/data; the caches are built in a
temporary folder and deleted afterwards.
"""

import dataclasses
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

from vae_jax.config import config_from_file
from vae_jax.data.dataset import Dataset, build_dataset, source_from_config
from vae_jax.data.pipeline import train_iterator
from vae_jax.rng import split_root_key
from vae_jax.tasks.vae import standalone_training

ROOT = Path(__file__).resolve().parents[1]

SHARED = ROOT.parent / "shared" / "data"
_CONFIGS = flags.DEFINE_list(
  "configs", ["faces_mlp", "faces_conv", "galaxy"], "Config files in configs/ to measure."
)
_FACES = flags.DEFINE_string(
  "faces", str(SHARED / "anime_faces_96" / "faces"), "Folder of face images."
)
_GALAXIES = flags.DEFINE_string(
  "galaxies", str(SHARED / "galaxy_zoo" / "train"), "Folder of galaxy images."
)
_STREAM_BATCHES = flags.DEFINE_integer(
  "stream_batches", 300, "Batches timed per stream measurement."
)
_STEP_SECONDS = flags.DEFINE_float(
  "step_seconds", 3.0, "Seconds of train steps per timing (after compiling)."
)
_REPEATS = flags.DEFINE_integer(
  "repeats", 3, "Repeats of each timing; the median is reported (the machine is shared)."
)


def _config(name: str, cache_dir: str):
  config = config_from_file(ROOT / "configs" / f"{name}.py")
  config.data.source = f"folder:{_GALAXIES.value if name.startswith('galaxy') else _FACES.value}"
  config.data.cache_dir = cache_dir
  return config


_FRESH_PROCESS = """
import sys
from vae_jax.config import config_from_file
config = config_from_file(sys.argv[1])
config.data.source, config.data.cache_dir = sys.argv[2], sys.argv[3]
from vae_jax.data.dataset import build_dataset
from vae_jax.data.pipeline import train_iterator
next(train_iterator(build_dataset(config), config.train.batch_size, seed=0, shard=(0, 1)))
"""


def _fresh_process_seconds(name: str, config) -> float:
  """Wall time of a new Python process that finds the cache and delivers its first batch."""
  start = time.perf_counter()
  subprocess.run(
    [
      sys.executable,
      "-c",
      _FRESH_PROCESS,
      str(ROOT / "configs" / f"{name}.py"),
      config.data.source,
      config.data.cache_dir,
    ],
    check=True,
    capture_output=True,
    env={**os.environ, "PYTHONPATH": str(ROOT)},
  )
  return time.perf_counter() - start


def _median_rate(count: int, fn, repeats: int) -> float:
  """Median over ``repeats`` of ``count / seconds(fn())``."""
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    rates.append(count / (time.perf_counter() - start))
  return statistics.median(rates)


def _stream_rate(dataset: Dataset, batch_size: int, batches: int, repeats: int) -> float:
  iterator = train_iterator(dataset, batch_size, seed=0, shard=(0, 1))
  next(iterator)  # threads started, first epoch's order drawn

  def run():
    for _ in range(batches):
      next(iterator)

  return _median_rate(batches * batch_size, run, repeats)


def _step_rate(config, dataset: Dataset, seconds: float, repeats: int) -> float:
  keys = split_root_key(config.seed)
  _, state, step = standalone_training(config, keys["init"])
  batch = jax.device_put(
    next(train_iterator(dataset, config.train.batch_size, seed=0, shard=(0, 1)))
  )
  state, metrics = step(state, batch, keys["train"])  # compile
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  state, metrics = step(state, batch, keys["train"])
  jax.block_until_ready(metrics)
  steps = max(3, math.ceil(seconds / (time.perf_counter() - start)))

  def run():
    nonlocal state, metrics
    for _ in range(steps):
      state, metrics = step(state, batch, keys["train"])
    jax.block_until_ready(metrics)

  return _median_rate(steps * config.train.batch_size, run, repeats)


def measure(name: str, cache_dir: str) -> dict:
  config = _config(name, cache_dir)
  batch = config.train.batch_size
  start = time.perf_counter()
  dataset = build_dataset(config)
  cold_seconds = time.perf_counter() - start
  start = time.perf_counter()
  dataset = build_dataset(config)
  warm_seconds = time.perf_counter() - start
  n = dataset.report.items
  raw = source_from_config(config.data)  # decoded per batch, as with config.data.cache=False
  uncached = dataclasses.replace(dataset, source=raw, train_indices=np.arange(len(raw)))
  repeats, batches = _REPEATS.value, _STREAM_BATCHES.value
  row = {
    "config": name,
    "images": n,
    "shape": "×".join(map(str, dataset.image_shape)),
    "batch": batch,
    "cold_build_img_s": n / cold_seconds,
    "cold_build_s": cold_seconds,
    "warm_start_s": warm_seconds,
    "warm_process_s": _fresh_process_seconds(name, config),
    "stream_warm_img_s": _stream_rate(dataset, batch, batches, repeats),
    "stream_files_img_s": _stream_rate(uncached, batch, max(2, batches // 20), repeats),
    "train_step_img_s": _step_rate(config, dataset, _STEP_SECONDS.value, repeats),
  }
  row["warm_ratio"] = row["stream_warm_img_s"] / row["train_step_img_s"]
  row["files_ratio"] = row["stream_files_img_s"] / row["train_step_img_s"]
  return row


def main(argv):
  del argv
  print(
    f"{jax.devices()[0].platform}, {len(jax.devices())} device(s); load average "
    f"{Path('/proc/loadavg').read_text().split()[0]}"
  )
  header = (
    "config",
    "images",
    "shape",
    "batch",
    "cold build img/s (s)",
    "warm start s (new process)",
    "stream warm img/s",
    "stream files img/s",
    "train step img/s",
    "warm / step",
    "files / step",
  )
  rows = []
  with tempfile.TemporaryDirectory(prefix="vae_jax_pipeline_bench_") as cache_dir:
    for name in _CONFIGS.value:
      r = measure(
        name, str(Path(cache_dir) / name)
      )  # one cache per config: each cold build is cold
      rows.append(
        (
          r["config"],
          r["images"],
          r["shape"],
          r["batch"],
          f"{r['cold_build_img_s']:.0f} ({r['cold_build_s']:.1f})",
          f"{r['warm_start_s']:.2f} ({r['warm_process_s']:.1f})",
          f"{r['stream_warm_img_s']:.0f}",
          f"{r['stream_files_img_s']:.0f}",
          f"{r['train_step_img_s']:.0f}",
          f"{r['warm_ratio']:.1f}×",
          f"{r['files_ratio']:.2f}×",
        )
      )
      print(" | ".join(map(str, rows[-1])), flush=True)
  print()
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header))
  for row in rows:
    print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
  app.run(main)
