"""The VAE's ELBO on a batch: its per-image terms for training, and the held-out report.

Shared by the training task (``vae_jax.tasks.vae``) and ``bin/evaluate.py``
(``vae_jax.evaluation``), so the −ELBO, bits/dim and PSNR that
``metrics.jsonl`` logs are the very numbers the evaluation report prints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import batching, losses


def elbo_terms(
  model: nn.Module,
  params: Any,
  x_uint8: jax.Array,
  key: jax.Array,
  likelihood: str,
  discretized: bool,
) -> dict[str, jax.Array]:
  """Per-image reconstruction NLL and per-dimension KL for one posterior sample (in float32).

  Returns the model's outputs too (``decoded``, ``mean``, ``logvar``, ``z``, ``log_scale``).
  """
  out = {k: v.astype(jnp.float32) for k, v in model.apply({"params": params}, x_uint8, key).items()}
  rec = losses.reconstruction_nll(
    likelihood, x_uint8, out["decoded"], out["log_scale"], discretized
  )
  return {"rec": rec, "kl_BZ": losses.gaussian_kl(out["mean"], out["logvar"]), **out}


def heldout_per_image(model: nn.Module, likelihood: str) -> Callable:
  """``(params, batch_uint8, key) -> per-image metrics`` of the held-out report (to be traced).

  −ELBO uses the discretised likelihood (nats of the 8-bit data) and β = 1,
  whatever β training used; PSNR and the squared error are of the
  posterior-mean reconstruction. Besides the metrics it returns what a
  caller may reuse instead of computing again: ``kl_BZ``, the posterior
  ``mean`` and ``logvar``, the ELBO's draw ``z`` and the reconstruction
  ``recon`` on the [0, 1] scale.
  """

  def per_image(params, x_uint8, key):
    terms = elbo_terms(
      model, params, x_uint8, key, likelihood, discretized=likelihood != "bernoulli"
    )
    recon = losses.mean_image(
      likelihood, model.apply({"params": params}, terms["mean"], method=model.decode)
    )
    kl = terms["kl_BZ"].sum(-1)
    mse = losses.squared_error(x_uint8, recon)
    return {
      "neg_elbo_nats": terms["rec"] + kl,
      "rec_nats": terms["rec"],
      "kl_nats": kl,
      "psnr_db": losses.psnr_of_mse(mse),
      "mse": mse,
      **{k: terms[k] for k in ("kl_BZ", "mean", "logvar", "z")},
      "recon": recon,
    }

  return per_image


HELDOUT_METRICS = ("neg_elbo_nats", "rec_nats", "kl_nats", "psnr_db", "mse")


def sums_of(per_image: dict[str, jax.Array], mask: jax.Array) -> dict[str, jax.Array]:
  """The masked sums of ``heldout_per_image``'s metrics, and ``kl_per_dim``'s."""
  sums = {k: jnp.sum(per_image[k] * mask) for k in HELDOUT_METRICS}
  sums["kl_per_dim"] = jnp.sum(per_image["kl_BZ"] * mask[:, None], axis=0)
  return sums


def eval_sums(model: nn.Module, likelihood: str) -> Callable:
  """``(params, batch_uint8, mask, key) -> sums`` of ``heldout_per_image`` (to be jitted)."""
  per_image = heldout_per_image(model, likelihood)

  def eval_step(params, x_uint8, mask, key):
    return sums_of(per_image(params, x_uint8, key), mask)

  return eval_step


def make_eval_step(model: nn.Module, likelihood: str) -> Callable:
  """``eval_sums`` jitted."""
  return jax.jit(eval_sums(model, likelihood))


def heldout_metrics(
  eval_step: Callable, params: Any, images_NHWC: np.ndarray, batch_size: int, key: jax.Array
) -> dict:
  """Held-out metrics of ``make_eval_step`` with bits per dimension, pooled PSNR, KL per latent.

  Two PSNRs, since both are in use: ``psnr_db`` is the mean of the per-image
  PSNRs; ``pooled_psnr_db`` is the PSNR of the mean squared error over every
  pixel of the split. The mean of logs rewards images that are already easy,
  so on data whose images differ in difficulty (galaxies: a bright core on a
  dark sky, or mostly sky) ``psnr_db`` is the higher by up to ~2 dB.
  """
  result = batching.batch_means(eval_step, params, images_NHWC, batch_size, key)
  dims = int(np.prod(images_NHWC.shape[1:]))
  out = {k: float(v) for k, v in result.items() if k != "kl_per_dim"}
  out["pooled_psnr_db"] = float(losses.psnr_of_mse(out["mse"]))
  out["bits_per_dim"] = float(losses.bits_per_dim(out["neg_elbo_nats"], dims))
  out["kl_per_dim"] = [round(float(v), 4) for v in result["kl_per_dim"]]
  return out
