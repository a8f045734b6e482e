"""The linear yardsticks of a VAE with k latents: PCA-k for PSNR, probabilistic PCA-k for bits/dim.

Both are fitted in closed form on a run's training split (Tipping & Bishop,
1999, for PPCA): the top-k principal directions and their variances λ_i,
and an isotropic noise variance σ², the mean of the other D − k variances.
PPCA's density is N(μ, W Wᵀ + σ² I) with W = U_k (Λ_k − σ² I)^½. Its
bits/dim are those of the integer pixels, as the VAE's are: the density on
the [0, 1] scale times each level's width 1/255 (the midpoint rule, which
is exact to (1/(255 σ))² / 24 relative; PPCA's σ is tens of levels).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class PCA:
  """A k-component PCA of flat images on the [0, 1] scale, with what PPCA needs of it.

  Attributes:
    mean: D.
    basis: k×D, orthonormal rows, largest variance first.
    variances: the k largest variances λ_i (the covariance's top eigenvalues).
    noise_variance: σ², the mean of the other D − k variances.
  """

  mean: np.ndarray
  basis: np.ndarray
  variances: np.ndarray
  noise_variance: float


def flat(images_uint8: np.ndarray) -> np.ndarray:
  """N×H×W×C uint8 → N×D float32 on the [0, 1] scale."""
  return images_uint8.reshape(len(images_uint8), -1).astype(np.float32) / 255.0


def fit_pca(images_uint8: np.ndarray, k: int) -> PCA:
  """The k-component PCA of uint8 images (``fit_pca_flat`` of their flat [0, 1] values)."""
  return fit_pca_flat(flat(images_uint8), k)


def fit_pca_flat(x: np.ndarray, k: int) -> PCA:
  """The k-component PCA of N×D float32 rows (from the smaller of the two Gram matrices).

  For 1260 galaxies of 196 608 numbers the Gram matrix is 1260×1260:
  seconds, where an SVD of the data takes minutes.
  """
  n, d = x.shape
  if not 0 < k < min(n, d):
    raise ValueError(f"PCA needs 0 < k < min(images, pixels); got k={k} for {n}×{d}.")
  mean = x.mean(0)
  centred = x - mean
  total = float(np.einsum("nd,nd->", centred, centred, dtype=np.float64)) / n  # the trace
  gram = centred @ centred.T if n < d else centred.T @ centred  # float32: the data are 8-bit
  eigenvalues, vectors = np.linalg.eigh(gram.astype(np.float64))
  top = np.argsort(eigenvalues)[::-1][:k]
  if n < d:
    basis = vectors[:, top].T.astype(np.float32) @ centred
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
  else:
    basis = vectors[:, top].T
  variances = np.maximum(eigenvalues[top], 0.0) / n
  noise = max((total - float(variances.sum())) / (d - k), 1e-12)
  return PCA(mean, basis.astype(np.float32), variances, noise)


def reconstruct(pca: PCA, images_uint8: np.ndarray) -> np.ndarray:
  """Flat [0, 1] projections of the images on the principal subspace (unclipped)."""
  x = flat(images_uint8)
  return (x - pca.mean) @ pca.basis.T @ pca.basis + pca.mean


def psnr(pca: PCA, images_uint8: np.ndarray) -> dict[str, float]:
  """The projections' PSNR, clipped to [0, 1] as decoded images are: per-image mean and pooled."""
  mse = np.mean((np.clip(reconstruct(pca, images_uint8), 0.0, 1.0) - flat(images_uint8)) ** 2, 1)
  mse = np.maximum(mse, 1e-10)
  return {
    "psnr_db": float(np.mean(-10 * np.log10(mse))),
    "pooled_psnr_db": float(-10 * np.log10(np.mean(mse))),
  }


def ppca_nll_nats(pca: PCA, images_uint8: np.ndarray) -> np.ndarray:
  """−log P of each image's integer pixels under PPCA, in nats (density × level width)."""
  x = flat(images_uint8).astype(np.float64)
  d = x.shape[1]
  centred = x - pca.mean
  noise = pca.noise_variance
  shrink = np.maximum(pca.variances - noise, 0.0) / pca.variances  # Woodbury: C⁻¹ = (I − U S Uᵀ)/σ²
  projections = centred @ pca.basis.T.astype(np.float64)
  mahalanobis = (np.sum(centred**2, 1) - projections**2 @ shrink) / noise
  log_det = float(np.sum(np.log(np.maximum(pca.variances, noise))))
  log_det += (d - len(pca.variances)) * math.log(noise)
  log_density = -0.5 * (d * math.log(2 * math.pi) + log_det + mahalanobis)
  return -(log_density - d * math.log(255.0))


def report(train_uint8: np.ndarray, val_uint8: np.ndarray, k: int) -> dict[str, float]:
  """PCA-k's PSNR and PPCA-k's bits/dim on ``val``, both fitted on ``train``."""
  pca = fit_pca(train_uint8, k)
  dims = int(np.prod(val_uint8.shape[1:]))
  nll = float(np.mean(ppca_nll_nats(pca, val_uint8)))
  scores = psnr(pca, val_uint8)
  return {
    "components": k,
    "pca_psnr_db": scores["psnr_db"],
    "pca_pooled_psnr_db": scores["pooled_psnr_db"],
    "ppca_neg_log_likelihood_nats": nll,
    "ppca_bits_per_dim": nll / (dims * math.log(2)),
    "ppca_noise_levels": 255 * math.sqrt(pca.noise_variance),
  }
