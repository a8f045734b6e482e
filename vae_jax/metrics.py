"""Measurements of a trained VAE beyond the ELBO the training loop reports.

* ``iwae_log_likelihood``: the importance-weighted bound on log p(x)
  (Burda et al., 2016) with K samples; K = 1 is the ELBO in expectation and
  the bound tightens towards log p(x) as K grows.
* ``ssim``: structural similarity (Wang et al., 2004) per image.
* ``active_units``: dimensions whose posterior mean varies with the data
  (Burda et al., 2016).
* ``factor_report``: how each latent dimension relates to each known
  generating factor (normalised mutual information, correlation) and the
  mutual information gap, MIG (Chen et al., 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import losses

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def iwae_log_likelihood(
  log_weight_fn: Callable[[jax.Array], jax.Array],
  key: jax.Array,
  num_samples: int,
  chunk: int | None = None,
  drawn: jax.Array | None = None,
) -> jax.Array:
  """log((1/K) Σ_k w_k) per example, a lower bound on log p(x) for any K.

  Args:
    log_weight_fn: ``key -> (B,)``: draws one z ~ q(z|x) per example and
      returns log w = log p(x|z) + log p(z) − log q(z|x). Written for any
      model, so the bound can be checked on one whose log p(x) is known.
    key: PRNG key; sample k uses ``split(key, K)[k]``.
    num_samples: K.
    chunk: how many samples are drawn at once (vectorised); the rest run
      sequentially, so memory is ``chunk`` decodes of a batch whatever K is.
    drawn: (B,) log weights of one draw already made (the ELBO's): it is
      one of the K, and only K − 1 more are drawn.

  Returns:
    The bound per example, shape (B,).
  """
  fresh = num_samples - (drawn is not None)
  parts = [] if drawn is None else [drawn[None]]
  if fresh:
    keys = jax.random.split(key, fresh)
    parts.append(jax.lax.map(log_weight_fn, keys, batch_size=chunk))
  return jax.nn.logsumexp(jnp.concatenate(parts), axis=0) - math.log(num_samples)


def diagonal_gaussian_log_prob(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z; mean, diag(exp(logvar))), summed over the last axis."""
  return jnp.sum(-0.5 * (jnp.square(z - mean) * jnp.exp(-logvar) + logvar) - _HALF_LOG_2PI, axis=-1)


def vae_log_weight_fn(
  model: Any, params: Any, x_uint8: jax.Array, mean: jax.Array, logvar: jax.Array, likelihood: str
) -> Callable[[jax.Array], jax.Array]:
  """``key -> log w`` for a VAE whose posterior for ``x_uint8`` is N(mean, exp(logvar)).

  The likelihood is the discretised one for Gaussians (as the evaluation's
  −ELBO), so the bound is on the probability of the 8-bit pixel values.
  """
  discretized = likelihood != "bernoulli"

  def log_weight(key: jax.Array) -> jax.Array:
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
    decoded, log_scale = model.apply({"params": params}, z, method=model.decode_likelihood)
    log_px_z = -losses.reconstruction_nll(likelihood, x_uint8, decoded, log_scale, discretized)
    log_pz = diagonal_gaussian_log_prob(z, 0.0, jnp.zeros_like(z))
    return log_px_z + log_pz - diagonal_gaussian_log_prob(z, mean, logvar)

  return log_weight


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
  offsets = np.arange(size) - (size - 1) / 2
  w = np.exp(-0.5 * (offsets / sigma) ** 2)
  return w / w.sum()


def _valid_filter_matrix(length: int, window: np.ndarray) -> np.ndarray:
  """(length − size + 1) × length matrix whose rows are the window at each valid offset."""
  size = len(window)
  out = np.zeros((length - size + 1, length), np.float32)
  for i in range(out.shape[0]):
    out[i, i : i + size] = window
  return out


def ssim(x01: jax.Array, y01: jax.Array, window: int = 11, sigma: float = 1.5) -> jax.Array:
  """Mean SSIM per image of B×H×W×C images on the [0, 1] scale.

  The standard definition: Gaussian-weighted local means, variances and
  covariance (window 11, σ 1.5), C1 = (0.01)², C2 = (0.03)² for a dynamic
  range of 1, the SSIM map over the 'valid' positions (no padding), averaged
  over positions and channels (grey or RGB alike).
  """
  h, w = x01.shape[1:3]
  if min(h, w) < window:
    raise ValueError(f"SSIM needs images of at least {window}×{window} pixels; got {h}×{w}.")
  g = _gaussian_window(window, sigma)
  fh, fw = jnp.asarray(_valid_filter_matrix(h, g)), jnp.asarray(_valid_filter_matrix(w, g))

  def blur(a):  # separable Gaussian filter as two small matmuls
    return jnp.einsum("ih,bhwc,jw->bijc", fh, a, fw)

  x, y = x01.astype(jnp.float32), y01.astype(jnp.float32)
  mu_x, mu_y = blur(x), blur(y)
  var_x = blur(x * x) - mu_x * mu_x
  var_y = blur(y * y) - mu_y * mu_y
  cov = blur(x * y) - mu_x * mu_y
  c1, c2 = 0.01**2, 0.03**2
  ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
    (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
  )
  return ssim_map.reshape(ssim_map.shape[0], -1).mean(axis=-1)


ACTIVE_VARIANCE = 0.01  # the usual threshold (Burda et al., 2016)


def active_units(means_NZ: np.ndarray, threshold: float = ACTIVE_VARIANCE) -> int:
  """How many latent dimensions' posterior means vary over the data by more than ``threshold``."""
  return int(np.sum(np.var(np.asarray(means_NZ, np.float64), axis=0) > threshold))


def discretize(values_N: np.ndarray, bins: int) -> np.ndarray:
  """Integer codes of a variable: its distinct values if at most ``bins``, else equal-width bins."""
  values_N = np.asarray(values_N, np.float64)
  distinct, codes = np.unique(values_N, return_inverse=True)
  if len(distinct) <= bins:
    return codes
  edges = np.histogram_bin_edges(values_N, bins)
  return np.digitize(values_N, edges[1:-1])


def entropy(codes_N: np.ndarray) -> float:
  """Plug-in entropy in nats of integer codes."""
  p = np.bincount(codes_N) / len(codes_N)
  p = p[p > 0]
  return float(-np.sum(p * np.log(p)))


def mutual_information(a_N: np.ndarray, b_N: np.ndarray) -> float:
  """Plug-in mutual information in nats of two integer-coded variables."""
  joint = a_N * (int(b_N.max()) + 1) + b_N
  return entropy(a_N) + entropy(b_N) - entropy(joint)


def normalized_mutual_info(
  latents_NZ: np.ndarray, factors_NF: np.ndarray, bins: int = 10
) -> np.ndarray:
  """F×Z table of I(z_j; v_k) / H(v_k): the share of factor k's entropy that dimension j carries.

  Both sides are discretised (``discretize``); a constant factor has no
  entropy to share and gets a row of NaN.
  """
  z_codes = [discretize(z, bins) for z in np.asarray(latents_NZ).T]
  table = np.full((factors_NF.shape[1], len(z_codes)), np.nan)
  for k, v in enumerate(np.asarray(factors_NF).T):
    v_codes = discretize(v, bins)
    h = entropy(v_codes)
    if h > 0:
      table[k] = [mutual_information(z, v_codes) / h for z in z_codes]
  return table


def mig(nmi_FZ: np.ndarray) -> tuple[float, np.ndarray]:
  """Mutual information gap: per factor, the best dimension's normalised MI minus the runner-up's.

  Returns:
    ``(mean over factors with entropy, per-factor gaps)``. 1: each factor is
    captured by one dimension alone; 0: by none, or equally by two.
  """
  top2 = -np.sort(-nmi_FZ, axis=1)[:, :2]
  gaps = top2[:, 0] - (top2[:, 1] if nmi_FZ.shape[1] > 1 else 0.0)
  return float(np.nanmean(gaps)), gaps


def correlation(latents_NZ: np.ndarray, factors_NF: np.ndarray) -> np.ndarray:
  """F×Z Pearson correlations (0 where either side is constant)."""
  z = np.asarray(latents_NZ, np.float64)
  v = np.asarray(factors_NF, np.float64)
  z, v = z - z.mean(0), v - v.mean(0)
  denom = np.outer(np.linalg.norm(v, axis=0), np.linalg.norm(z, axis=0))
  return np.divide(v.T @ z, denom, out=np.zeros_like(denom), where=denom > 0)


def factor_report(
  latents_NZ: np.ndarray, factors_NF: np.ndarray, names: Sequence[str], bins: int = 10
) -> dict[str, Any]:
  """Which latent dimension carries which generating factor, as plain JSON-ready values.

  Returns:
    ``mig``; ``per_factor``: for each factor name, its best dimension, that
    dimension's normalised MI, its gap over the runner-up, and the full
    normalised-MI and correlation rows (one entry per latent dimension);
    ``bins`` and ``n_images`` so a reader knows what the estimates rest on.

  Inactive dimensions (posterior-mean variance ≤ 0.01, see ``active_units``)
  count as carrying no information: binning each dimension over its own
  range would otherwise let a collapsed dimension's tiny wiggles "win" a factor.
  """
  nmi = normalized_mutual_info(latents_NZ, factors_NF, bins)
  active = np.var(np.asarray(latents_NZ, np.float64), axis=0) > ACTIVE_VARIANCE
  nmi = np.where(
    active | np.isnan(nmi), nmi, 0.0
  )  # a constant factor's row stays all NaN: no gap, no MIG share
  corr = correlation(latents_NZ, factors_NF)
  score, gaps = mig(nmi)
  per_factor = {}
  for k, name in enumerate(names):
    if np.isnan(gaps[k]):
      per_factor[name] = None
      continue
    best = int(np.argmax(nmi[k]))
    per_factor[name] = {
      "best_dim": best,
      "nmi": round(float(nmi[k, best]), 4),
      "gap": round(float(gaps[k]), 4),
      "nmi_per_dim": [round(float(x), 4) for x in nmi[k]],
      "corr_per_dim": [round(float(x), 4) for x in corr[k]],
    }
  return {
    "mig": round(score, 4),
    "bins": bins,
    "n_images": len(latents_NZ),
    "per_factor": per_factor,
  }
