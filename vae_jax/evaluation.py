"""Score a trained run: ``evaluate_workdir(workdir, data=None, split="val") -> dict``.

The −ELBO, its bits per dimension, PSNR and per-dimension KL are the
training loop's own held-out metrics (``vae_jax.elbo``), so they are the
numbers ``metrics.jsonl`` logs; on top come the importance-weighted bound,
SSIM, active units and, when the source knows the factors that generated
each image (``synthetic:…``), the factor table and MIG. One compiled
program per batch computes all of them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import batching, losses, metrics
from vae_jax.data.dataset import load_images, run_images, source_from_config
from vae_jax.elbo import eval_sums
from vae_jax.errors import ConfigError
from vae_jax.inference import Run, jit, open_run
from vae_jax.rng import split_root_key

log = logging.getLogger(__name__)

# Decoded values held at once by the IWAE sampling (samples × batch × pixels).
_IWAE_ELEMENTS = 1 << 24


def make_report_step(run: Run, num_samples: int, batch_size: int) -> Callable:
  """Jitted ``(params, x, mask, i) -> (sums, per_image)`` for batch ``i``, of ``batch_size`` images.

  ``sums`` are the held-out metrics' sums (``vae_jax.elbo.eval_sums``), drawn
  with the key training's evaluation gives batch ``i``, ``fold_in(eval_key,
  i)``; ``per_image`` holds ``iwae_log_px`` (drawn with ``fold_in(fold_in(eval_key,
  1), i)``), ``ssim`` and the posterior ``mean``. The keys are derived inside
  the program: as separate calls each would be compiled on its own.
  """
  model, likelihood = run.model, run.config.loss.likelihood
  chunk = max(1, min(num_samples, _IWAE_ELEMENTS // (batch_size * math.prod(run.image_shape))))
  sums_fn = eval_sums(model, likelihood)

  def step(params, x_uint8, mask, i):
    eval_key = split_root_key(run.config.seed)["eval"]
    score_key = jax.random.fold_in(jax.random.fold_in(eval_key, 1), i)
    mean, logvar = model.apply({"params": params}, x_uint8, method=model.encode)
    recon = losses.mean_image(
      likelihood, model.apply({"params": params}, mean, method=model.decode)
    )
    log_weight = metrics.vae_log_weight_fn(model, params, x_uint8, mean, logvar, likelihood)
    per_image = {
      "iwae_log_px": metrics.iwae_log_likelihood(log_weight, score_key, num_samples, chunk),
      "ssim": metrics.ssim(losses.to_unit(x_uint8), jnp.clip(recon, 0.0, 1.0)),
      "mean": mean,
    }
    return sums_fn(params, x_uint8, mask, jax.random.fold_in(eval_key, i)), per_image

  return jit(step)


def _score(
  step: Callable, params: Any, x: np.ndarray, batch_size: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Means of the held-out sums, and the per-image scores, over ``x`` in batches of one size."""
  totals, parts = {}, []
  for i, (batch, count) in enumerate(batching.fixed_size_batches(x, batch_size)):
    mask = (np.arange(len(batch)) < count).astype(np.float32)
    sums, per_image = jax.device_get(step(params, batch, mask, np.int32(i)))
    totals = sums if not totals else jax.tree.map(np.add, totals, sums)
    parts.append({k: v[:count] for k, v in per_image.items()})
  means = {k: np.asarray(v) / len(x) for k, v in totals.items()}
  return means, {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def evaluate_workdir(
  workdir: str | Path,
  data: str | None = None,
  split: str = "val",
  iw_samples: int = 100,
  max_images: int | None = 2000,
  mi_bins: int = 10,
) -> dict[str, Any]:
  """Evaluate the newest intact checkpoint of ``workdir`` on its held-out split or on any source.

  Args:
    workdir: a training workdir.
    data: a source string (``folder:PATH`` …), preprocessed as the run's
      training data was; its first ``max_images`` are scored. ``None``: the
      run's own source, split ``split``.
    split: ``val`` or ``train`` (only with ``data=None``).
    iw_samples: K of the importance-weighted bound.
    max_images: score at most this many images (the first ones).
    mi_bins: bins per variable for the mutual-information estimates. The
      plug-in estimate is biased up by about (bins − 1)² / (2 N) nats, so
      few bins suit the few hundred images of a validation split.

  Returns:
    JSON-ready dict: ``n_images``, ``neg_elbo_nats``, ``bits_per_dim``,
    ``iwae_nll_nats`` (K = ``iw_samples``), ``psnr_db`` (mean of per-image
    PSNRs), ``pooled_psnr_db`` (PSNR of the mean squared error), ``ssim``,
    ``active_units``, ``kl_per_dim`` and more; ``factors`` (see
    ``metrics.factor_report``) when the source has known generating factors.
  """
  if iw_samples < 1:
    raise ConfigError(f"iw_samples must be at least 1; got {iw_samples}.")
  if max_images is not None and max_images < 1:
    raise ConfigError(f"max_images must be at least 1; got {max_images}.")
  run = open_run(workdir)
  config = run.config
  subset, preprocess = run_images(config, data, split)
  x = load_images(subset, preprocess, max_images, desc="images")
  log.info(
    "Scoring %d of the %d images of %s (%s) with K=%d importance samples.",
    len(x),
    len(subset),
    data or config.data.source,
    "all" if data else split,
    iw_samples,
  )
  batch_size = min(config.train.eval_batch_size, len(x))
  step = make_report_step(run, iw_samples, batch_size)
  means, scores = _score(step, run.params, x, batch_size)
  dims = int(np.prod(x.shape[1:]))
  result: dict[str, Any] = {"n_images": len(x), "source": data or config.data.source}
  if data is None:
    result["split"] = split
  result.update({k: float(v) for k, v in means.items() if k != "kl_per_dim"})
  iwae_nll = -float(np.mean(scores["iwae_log_px"]))
  result.update(
    {
      "pooled_psnr_db": float(losses.psnr_of_mse(result["mse"])),
      "bits_per_dim": float(losses.bits_per_dim(result["neg_elbo_nats"], dims)),
      "kl_per_dim": [round(float(v), 4) for v in means["kl_per_dim"]],
      "iw_samples": iw_samples,
      "iwae_nll_nats": iwae_nll,
      "iwae_bits_per_dim": float(losses.bits_per_dim(iwae_nll, dims)),
      "ssim": float(np.mean(scores["ssim"])),
      "active_units": metrics.active_units(scores["mean"]),
    }
  )
  generator = source_from_config(config.data, data)
  if hasattr(generator, "factors"):
    # Cached images are rows of the decode cache; ``kept`` maps them back to the generator's
    # indices.
    rows = subset.indices[: len(x)]
    indices = subset.source.kept[rows] if hasattr(subset.source, "kept") else rows
    factors = np.stack([generator.factors(int(i)) for i in indices])
    result["factors"] = metrics.factor_report(
      scores["mean"], factors, generator.factor_names, mi_bins
    )
  return result
