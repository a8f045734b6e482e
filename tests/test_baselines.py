"""PCA-k and probabilistic PCA-k, the yardsticks every run's PSNR and bits/dim stand beside."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from vae_jax import baselines


def _images(n=300, d=(6, 5, 1), k=3, noise=0.03, seed=0):
  """uint8 images of one PPCA model (k factors, isotropic noise, mid-grey); ``seed`` draws them."""
  dims = int(np.prod(d))
  w = np.random.default_rng(123).normal(scale=0.1, size=(dims, k))
  rng = np.random.default_rng(seed)
  x = 0.5 + rng.normal(size=(n, k)) @ w.T + noise * rng.normal(size=(n, dims))
  return np.clip(np.round(x * 255), 0, 255).astype(np.uint8).reshape((n,) + d)


def test_ppca_nll_is_the_density_of_its_closed_form_covariance_times_the_level_width():
  train, val = _images(seed=0), _images(n=40, seed=1)
  pca = baselines.fit_pca(train, 3)
  w = pca.basis.T * np.sqrt(pca.variances - pca.noise_variance)
  cov = w @ w.T + pca.noise_variance * np.eye(w.shape[0])
  x = baselines.flat(val).astype(np.float64)
  want = -(stats.multivariate_normal(pca.mean, cov).logpdf(x) - x.shape[1] * math.log(255))
  np.testing.assert_allclose(baselines.ppca_nll_nats(pca, val), want, rtol=1e-6)


def test_ppca_recovers_the_noise_and_beats_fewer_components():
  train, val = _images(n=2000, seed=0), _images(n=200, seed=1)
  pca = baselines.fit_pca(train, 3)
  assert abs(math.sqrt(pca.noise_variance) - 0.03) < 0.004
  three = baselines.report(train, val, 3)
  one = baselines.report(train, val, 1)
  assert three["ppca_bits_per_dim"] < one["ppca_bits_per_dim"]
  assert three["pca_psnr_db"] > one["pca_psnr_db"]


def test_both_gram_matrices_give_the_same_pca():
  train = _images(n=20, d=(6, 5, 1))  # fewer images than pixels: the images' Gram matrix
  wide = baselines.fit_pca(train, 3)
  tall = baselines.fit_pca(np.concatenate([train] * 2), 3)  # more images than pixels
  np.testing.assert_allclose(np.abs(wide.basis @ tall.basis.T), np.eye(3), atol=1e-4)
  np.testing.assert_allclose(wide.variances, tall.variances, rtol=1e-4)
