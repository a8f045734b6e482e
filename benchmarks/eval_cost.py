#!/usr/bin/env python
"""What one held-out evaluation costs a training run, part by part, in train steps.

Every ``config.train.eval_every`` steps ``bin/train.py`` scores the held-out
images (−ELBO under the discretised likelihood, PSNR of the posterior mean)
and writes the reconstruction and prior grids (a PNG and a TensorBoard
image each). For a 256×256 model that is seconds, paid again at every
evaluation. This times, on the config's own data and in one process:

  evaluate      the held-out pass (the VAE task's ``evaluate``)
  likelihood    within it, the discretised Gaussian log-likelihood alone
                (as many eval batches as that pass has)
  grids         computing the reconstruction and prior grids
  png           encoding them as PNG files
  tensorboard   TensorBoard's own encoding of them (``add_image``)
  train step    one step of the config's train step, for scale

  python benchmarks/eval_cost.py                                   # galaxy on
  ../shared/data/galaxy_zoo/train python benchmarks/eval_cost.py --config=faces_mlp
  --source=folder:../shared/data/anime_faces_96/faces

Prints one line per part (the best of ``--repeats``) and a JSON line.
"""

import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import app, flags
from common import ROOT, load_config
from tensorboardX import SummaryWriter

from vae_jax import images, losses
from vae_jax.data.dataset import build_dataset, load_images
from vae_jax.rng import split_root_key
from vae_jax.tasks import vae

_CONFIG = flags.DEFINE_string("config", "galaxy", "configs/<name>.py, a VAE config.")
_SOURCE = flags.DEFINE_string(
  "source",
  f"folder:{ROOT.parent / 'shared' / 'data' / 'galaxy_zoo' / 'train'}",
  "config.data.source.",
)
_REPEATS = flags.DEFINE_integer(
  "repeats", 3, "Timings per part after one warm-up call; the best is reported."
)


def best_seconds(run: Callable, repeats: int) -> float:
  jax.block_until_ready(run())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - start)
  return min(times)


def main(argv):
  del argv
  config = load_config(_CONFIG.value, {"data.source": _SOURCE.value, "train.steps_per_dispatch": 1})
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    dataset = build_dataset(config, tmp)
    val = load_images(dataset.val, dataset.preprocess, config.train.max_eval_images)
    keys = split_root_key(config.seed)
    task = vae.build_task(config, dataset, keys, val)
    _, state, step = vae.standalone_training(config, keys["init"])
    params = jax.tree.map(jax.numpy.copy, state.params)  # the step donates the state
    grids = task.grids(params)
    writer = SummaryWriter(str(tmp / "tensorboard"))
    batch = val[: config.train.eval_batch_size]
    likelihood = jax.jit(losses.discretized_gaussian_log_prob)
    near = jnp.clip(
      losses.to_unit(batch) + 0.05 * jax.random.normal(jax.random.key(0), batch.shape), 0.0, 1.0
    )
    log_scale = jnp.log(config.loss.scale)
    train_batch = val[: config.train.batch_size]

    def train_step():
      nonlocal state
      state, metrics = step(state, train_batch, jax.random.key(1))
      return metrics["loss"]

    eval_batches = math.ceil(len(val) / config.train.eval_batch_size)
    parts = {
      "evaluate": lambda: task.evaluate(params),
      "likelihood": lambda: [likelihood(batch, near, log_scale) for _ in range(eval_batches)][-1],
      "grids": lambda: task.grids(params),
      "png": lambda: [images.save_png(g, tmp / f"{name}.png") for name, g in grids.items()],
      "tensorboard": lambda: [
        writer.add_image(name, g, 0, dataformats="HWC") for name, g in grids.items()
      ],
      "train step": train_step,
    }
    seconds = {name: best_seconds(run, _REPEATS.value) for name, run in parts.items()}
    writer.close()
  step_s = seconds["train step"]
  print(
    f"{_CONFIG.value}: {len(val)} held-out images of {val.shape[1:]}, eval batch "
    f"{config.train.eval_batch_size}; "
    f"grids {', '.join(f'{n} {g.shape[1]}×{g.shape[0]}' for n, g in grids.items())}"
  )
  for name, s in seconds.items():
    print(f"  {name:12s} {s:7.3f} s  ({s / step_s:5.1f} train steps)")
  print(
    json.dumps(
      {
        "config": _CONFIG.value,
        "held_out_images": len(val),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
      }
    )
  )


if __name__ == "__main__":
  app.run(main)
