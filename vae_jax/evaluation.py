"""Score a trained run: ``evaluate_workdir(workdir, data=None, split="val") -> dict``.

The −ELBO, its bits per dimension, PSNR and per-dimension KL are the
training loop's own held-out metrics (``vae_jax.elbo``), so they are the
numbers ``metrics.jsonl`` logs; on top come the importance-weighted bound,
SSIM, active units and, when the source knows the factors that generated
each image (``synthetic:…``), the factor table and MIG. One compiled
program per batch computes all of them. Asked for, two more: the
sample-realism test of the run's samplers (``realism``) and the linear
yardsticks PCA-k and PPCA-k (``baseline``).
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
import tqdm

from vae_jax import baselines, batching, losses, metrics
from vae_jax.data.dataset import load_images, run_images, source_from_config
from vae_jax.elbo import heldout_per_image, sums_of
from vae_jax.errors import ConfigError, DataError
from vae_jax.inference import Run, jit, open_run
from vae_jax.realism import two_sample_auc
from vae_jax.rng import split_root_key
from vae_jax.sampling import prepare_sampler

log = logging.getLogger(__name__)

# Decoded values held at once by the IWAE sampling (samples × batch × pixels).
_IWAE_ELEMENTS = 1 << 24
# The default K spends about this many floating-point operations (and equivalents: the discretised
# likelihood of a pixel counts as LIKELIHOOD_COST) on the importance samples: about half a minute
# on a 2-core CPU. Counted from the model, not timed, so the default is the same on every machine.
IWAE_BUDGET = 5e11
LIKELIHOOD_COST = 200
IW_SAMPLES_MAX = 100
_NICE_K = (1, 2, 5, 10, 20, 50, 100)
BASELINE_PIXELS = 250_000_000  # training pixels the PCA/PPCA baseline is fitted on, at most


def default_iw_samples(run: Run, n_images: int) -> int:
  """K for ``n_images`` images: the largest of 1, 2, 5, 10, 20, 50, 100 within ``IWAE_BUDGET``."""
  decode = jax.jit(lambda z: run.model.apply({"params": run.params}, z, method=run.model.decode))
  flops = decode.lower(jnp.zeros((1, run.latent_dim))).cost_analysis().get("flops", 0.0)
  per_sample = n_images * (flops + LIKELIHOOD_COST * math.prod(run.image_shape))
  affordable = IWAE_BUDGET / max(per_sample, 1.0)
  return max(k for k in _NICE_K if k <= max(1.0, min(affordable, IW_SAMPLES_MAX)))


def make_report_step(run: Run, num_samples: int, batch_size: int) -> Callable:
  """Jitted ``(params, x, mask, i) -> (sums, per_image)`` for batch ``i``, of ``batch_size`` images.

  ``sums`` are the held-out metrics' sums (``vae_jax.elbo.heldout_per_image``),
  drawn with the key training's evaluation gives batch ``i``, ``fold_in(eval_key,
  i)``; ``per_image`` holds ``iwae_log_px``, ``ssim`` and the posterior
  ``mean``. One encoding and one decoded mean serve every metric, and the
  ELBO's draw is one of the K importance samples (the other K − 1 are drawn
  with ``fold_in(fold_in(eval_key, 1), i)``). The keys are derived inside the
  program: as separate calls each would be compiled on its own.
  """
  model, likelihood = run.model, run.config.loss.likelihood
  chunk = max(1, min(num_samples, _IWAE_ELEMENTS // (batch_size * math.prod(run.image_shape))))
  heldout = heldout_per_image(model, likelihood)

  def step(params, x_uint8, mask, i):
    eval_key = split_root_key(run.config.seed)["eval"]
    score_key = jax.random.fold_in(jax.random.fold_in(eval_key, 1), i)
    terms = heldout(params, x_uint8, jax.random.fold_in(eval_key, i))
    mean, logvar, z = terms["mean"], terms["logvar"], terms["z"]
    elbo_log_weight = (
      -terms["rec_nats"]
      + metrics.diagonal_gaussian_log_prob(z, 0.0, jnp.zeros_like(z))
      - metrics.diagonal_gaussian_log_prob(z, mean, logvar)
    )
    log_weight = metrics.vae_log_weight_fn(model, params, x_uint8, mean, logvar, likelihood)
    per_image = {
      "iwae_log_px": metrics.iwae_log_likelihood(
        log_weight, score_key, num_samples, chunk, drawn=elbo_log_weight
      ),
      "ssim": metrics.ssim(losses.to_unit(x_uint8), jnp.clip(terms["recon"], 0.0, 1.0)),
      "mean": mean,
    }
    return sums_of(terms, mask), per_image

  return jit(step)


def _score(
  step: Callable, params: Any, x: np.ndarray, batch_size: int, desc: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Means of the held-out sums, and the per-image scores, over ``x`` in batches of one size."""
  totals, parts = {}, []
  with tqdm.tqdm(total=len(x), desc=desc, unit="img", leave=False) as bar:
    for i, (batch, count) in enumerate(batching.fixed_size_batches(x, batch_size)):
      mask = (np.arange(len(batch)) < count).astype(np.float32)
      sums, per_image = jax.device_get(step(params, batch, mask, np.int32(i)))
      totals = sums if not totals else jax.tree.map(np.add, totals, sums)
      parts.append({k: v[:count] for k, v in per_image.items()})
      bar.update(count)
  means = {k: np.asarray(v) / len(x) for k, v in totals.items()}
  return means, {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def realism(run: Run, heldout_uint8: np.ndarray, n: int, seed: int = 0) -> dict[str, Any]:
  """The classifier two-sample test of each sampler against posterior draws (``vae_jax.realism``).

  ``n`` decoded draws of each sampler the run has (its ``gmm`` is fitted
  first where missing) are told from decoded draws z ~ q(z|x) of ``n``
  held-out images (at most as many as there are). Returns ``n_images`` and
  ``auc`` per sampler: 0.5 is a sampler the classifier cannot tell from
  what the decoder makes of real images, 1.0 one told apart every time.
  """
  try:
    prepare_sampler(run, "gmm")
  except DataError as error:  # the run's training images are gone: the prior is still scored
    log.warning("No gmm sampler to score (%s).", error)
  n = min(n, len(heldout_uint8))
  key = jax.random.key(seed)
  mean, logvar = run.encode(heldout_uint8[:n])
  noise = np.asarray(jax.random.normal(jax.random.fold_in(key, 0), mean.shape))
  real = run.decode(mean + np.exp(0.5 * logvar) * noise)
  auc = {}
  for i, sampler in enumerate(tqdm.tqdm(run.samplers, desc="sample realism", leave=False)):
    drawn = run.sample(jax.random.fold_in(key, 1 + i), n, 1.0, sampler)
    auc[sampler] = two_sample_auc(drawn, real, jax.random.fold_in(key, 100 + i))
  return {"n_images": n, "auc": auc}


def baseline(run: Run, heldout_uint8: np.ndarray) -> dict[str, float]:
  """PCA-k's PSNR and PPCA-k's bits/dim on the scored images, k the run's latent size.

  Fitted on the run's training split (at most ``BASELINE_PIXELS`` pixels of it).
  """
  subset, preprocess = run_images(run.config, None, "train")
  limit = max(run.latent_dim + 2, BASELINE_PIXELS // math.prod(run.image_shape))
  train = load_images(subset, preprocess, limit, desc="training images for the baseline")
  return baselines.report(train, heldout_uint8, run.latent_dim)


def evaluate_workdir(
  workdir: str | Path,
  data: str | None = None,
  split: str = "val",
  iw_samples: int | None = None,
  max_images: int | None = 2000,
  mi_bins: int = 10,
  samples: int = 0,
  with_baseline: bool = False,
) -> dict[str, Any]:
  """Evaluate the newest intact checkpoint of ``workdir`` on its held-out split or on any source.

  Args:
    workdir: a training workdir.
    data: a source string (``folder:PATH`` …), preprocessed as the run's
      training data was; its first ``max_images`` are scored. ``None``: the
      run's own source, split ``split``.
    split: ``val`` or ``train`` (only with ``data=None``).
    iw_samples: K of the importance-weighted bound; None: chosen from the
      model's cost and the number of images (``default_iw_samples``).
    max_images: score at most this many images (the first ones).
    mi_bins: bins per variable for the mutual-information estimates. The
      plug-in estimate is biased up by about (bins − 1)² / (2 N) nats, so
      few bins suit the few hundred images of a validation split.
    samples: with more than 0, the sample-realism test (``realism``) on
      this many images per set.
    with_baseline: add PCA-k's PSNR and PPCA-k's bits/dim (``baseline``).

  Returns:
    JSON-ready dict: ``n_images``, ``neg_elbo_nats``, ``bits_per_dim``,
    ``iwae_nll_nats`` (K = ``iw_samples``), ``psnr_db`` (mean of per-image
    PSNRs), ``pooled_psnr_db`` (PSNR of the mean squared error), ``ssim``,
    ``active_units``, ``kl_per_dim`` and more; ``factors`` (see
    ``metrics.factor_report``) when the source has known generating factors;
    ``realism`` and ``baseline`` when asked for.
  """
  if iw_samples is not None and iw_samples < 1:
    raise ConfigError(f"iw_samples must be at least 1; got {iw_samples}.")
  if max_images is not None and max_images < 1:
    raise ConfigError(f"max_images must be at least 1; got {max_images}.")
  if samples < 0:
    raise ConfigError(f"samples must be at least 0; got {samples}.")
  run = open_run(workdir)
  config = run.config
  subset, preprocess = run_images(config, data, split)
  x = load_images(subset, preprocess, max_images, desc="images")
  chosen = iw_samples is None
  if chosen:
    iw_samples = default_iw_samples(run, len(x))
  log.info(
    "Scoring %d of the %d images of %s (%s) with K=%d importance samples%s.",
    len(x),
    len(subset),
    data or config.data.source,
    "all" if data else split,
    iw_samples,
    " (chosen for this model's cost; --iw_samples sets K)" if chosen else "",
  )
  batch_size = min(config.train.eval_batch_size, len(x))
  step = make_report_step(run, iw_samples, batch_size)
  means, scores = _score(step, run.params, x, batch_size, f"scoring, K={iw_samples}")
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
  if samples:
    result["realism"] = realism(run, x, samples, config.seed)
  if with_baseline:
    result["baseline"] = baseline(run, x)
  return result
