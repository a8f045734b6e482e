"""The classifier two-sample test: ≈ 0.5 for one distribution, ≈ 1 for clearly different ones."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from vae_jax import realism


def _blobs(rng: np.random.Generator, n: int, side: int = 16, brightness: float = 0.0) -> np.ndarray:
  """n grey images of a Gaussian blob at a random place on noise, ``brightness`` added."""
  yy, xx = np.mgrid[:side, :side]
  centres = rng.uniform(4, side - 4, (n, 2))
  blob = np.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / 8.0)
  images = 60 + 120 * blob + brightness + rng.normal(0, 20, (n, side, side))
  return np.clip(images, 0, 255).astype(np.uint8)[..., None]


def test_two_draws_of_one_distribution_are_not_told_apart():
  rng = np.random.default_rng(0)
  auc = realism.two_sample_auc(_blobs(rng, 200), _blobs(rng, 200), jax.random.key(0))
  assert 0.4 < auc < 0.6, auc


def test_clearly_different_distributions_are_told_apart():
  rng = np.random.default_rng(1)
  auc = realism.two_sample_auc(
    _blobs(rng, 200), _blobs(rng, 200, brightness=40.0), jax.random.key(0)
  )
  assert auc > 0.95, auc


def test_the_test_is_deterministic_for_a_key():
  rng = np.random.default_rng(2)
  a, b = _blobs(rng, 60), _blobs(rng, 60, brightness=5.0)
  assert realism.two_sample_auc(a, b, jax.random.key(3)) == realism.two_sample_auc(
    a, b, jax.random.key(3)
  )


def test_features_average_large_images_down_to_32_pixels_a_side():
  images = np.zeros((2, 256, 200, 3), np.uint8)
  images[:, :8, :8] = 255  # one 8×8 block: one feature pixel of value 1
  features = realism.features(images).reshape(2, 32, 25, 3)
  assert features[0, 0, 0, 0] == pytest.approx(1.0) and features[0, 1:, 1:].max() == 0.0


def test_too_few_images_is_an_error():
  with pytest.raises(ValueError, match="at least 4"):
    realism.two_sample_auc(np.zeros((3, 8, 8, 1), np.uint8), np.zeros((9, 8, 8, 1), np.uint8), None)
