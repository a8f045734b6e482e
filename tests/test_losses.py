"""ELBO pieces against closed forms, scipy and Monte Carlo."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from vae_jax import losses

# (mean, logvar) pairs: the prior itself, shifted, narrow, wide.
_POSTERIORS = [(0.0, 0.0), (1.5, 0.0), (0.0, -3.0), (-0.7, 1.2), (2.0, -0.5)]


def _kl_normal_np(m1, s1, m2, s2):
  """KL(N(m1, s1²) ‖ N(m2, s2²)) from the textbook formula, in float64."""
  return np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


# --- Gaussian KL ---------------------------------------------------------------------------------


def test_gaussian_kl_of_the_prior_is_zero():
  kl = losses.gaussian_kl(jnp.zeros((3, 4)), jnp.zeros((3, 4)))
  assert kl.shape == (3, 4)
  np.testing.assert_array_equal(np.asarray(kl), 0.0)


def test_gaussian_kl_matches_closed_form_per_dimension():
  mean = np.array([m for m, _ in _POSTERIORS], np.float32)
  logvar = np.array([lv for _, lv in _POSTERIORS], np.float32)
  got = np.asarray(losses.gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar)))
  want = _kl_normal_np(mean.astype(np.float64), np.exp(0.5 * logvar.astype(np.float64)), 0.0, 1.0)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all(got[1:] > 0)


@pytest.mark.parametrize("mean, logvar", _POSTERIORS[1:])
def test_gaussian_kl_matches_monte_carlo(mean, logvar):
  std = math.exp(0.5 * logvar)
  x = np.random.default_rng(0).normal(mean, std, size=400_000)
  log_ratio = stats.norm.logpdf(x, mean, std) - stats.norm.logpdf(x)
  estimate, stderr = log_ratio.mean(), log_ratio.std() / math.sqrt(x.size)
  got = float(losses.gaussian_kl(jnp.float32(mean), jnp.float32(logvar)))
  assert abs(got - estimate) < 5 * stderr + 1e-4


# --- Continuous Gaussian -------------------------------------------------------------------------


def test_gaussian_log_prob_matches_scipy_with_scalar_and_per_pixel_scale():
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(3, 4, 5, 2)).astype(np.float32)
  loc = rng.uniform(size=x.shape).astype(np.float32)
  log_scale = rng.uniform(-3, 0.5, size=x.shape).astype(np.float32)
  for ls in (np.float32(-1.7), log_scale):
    got = np.asarray(losses.gaussian_log_prob(jnp.asarray(x), jnp.asarray(loc), jnp.asarray(ls)))
    want = stats.norm.logpdf(x, loc, np.exp(ls)).reshape(3, -1).sum(-1)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=1e-5)


# --- Discretised Gaussian ------------------------------------------------------------------------

_LEVELS = np.arange(256, dtype=np.uint8).reshape(256, 1, 1, 1)  # one image per level
# (loc, scale): central, mode on a bin edge, outside [0, 1] on both sides, tiny, wide, huge.
_DISCRETE_CASES = [
  (0.3, 0.1),
  (0.5, 0.02),
  (-0.4, 0.2),
  (1.7, 0.3),
  (0.3, 1e-3),
  (100.7 / 255, 1e-4),
  (0.31, 1e-5),
  (0.0, 5e-4),
  (0.5, 0.5),
  (0.5, 3.0),
  (0.5, 100.0),
]
# One compilation for every case: loc and log σ are traced scalars.
_discretized = jax.jit(losses.discretized_gaussian_log_prob)


def _discrete_log_probs(loc: float, scale: float) -> np.ndarray:
  """log P(level) for all 256 levels from the library, float64 for summing."""
  logp = _discretized(jnp.asarray(_LEVELS), jnp.float32(loc), jnp.float32(math.log(scale)))
  return np.asarray(logp, np.float64)


def _scipy_bin_probs(loc: float, scale: float) -> np.ndarray:
  """Bin probabilities in float64: Φ differences, computed on the tail side for accuracy."""
  k = np.arange(256, dtype=np.float64)
  upper = np.where(k == 255, np.inf, (k + 0.5) / 255)
  lower = np.where(k == 0, -np.inf, (k - 0.5) / 255)
  cdf = stats.norm.cdf(upper, loc, scale) - stats.norm.cdf(lower, loc, scale)
  sf = stats.norm.sf(lower, loc, scale) - stats.norm.sf(upper, loc, scale)
  return np.where(lower > loc, sf, cdf)


@pytest.mark.parametrize("loc, scale", _DISCRETE_CASES)
def test_discretized_gaussian_levels_sum_to_one_and_are_finite(loc, scale):
  logp = _discrete_log_probs(loc, scale)
  assert logp.shape == (256,)
  assert np.all(np.isfinite(logp)), np.flatnonzero(~np.isfinite(logp))
  assert np.all(logp <= 1e-6)
  assert np.exp(logp).sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("loc, scale", _DISCRETE_CASES)
def test_discretized_gaussian_matches_scipy_cdf_differences(loc, scale):
  got = _discrete_log_probs(loc, scale)
  want = _scipy_bin_probs(loc, scale)
  np.testing.assert_allclose(np.exp(got), want, atol=2e-6)
  # In log space wherever the float64 reference is meaningful (not deep in the tails).
  resolvable = want > 1e-20
  assert resolvable.any()
  np.testing.assert_allclose(got[resolvable], np.log(want[resolvable]), rtol=1e-4, atol=3e-4)


@pytest.mark.parametrize("loc, scale", [(0.9, 0.01), (0.05, 0.02), (0.5, 0.003)])
def test_discretized_gaussian_is_exact_far_in_the_tails(loc, scale):
  """Bins tens of σ from the mean, where erfc underflows, against scipy's log CDF in float64."""
  k = np.arange(256, dtype=np.float64)
  upper = np.where(k == 255, np.inf, (k + 0.5) / 255 - loc) / scale
  lower = np.where(k == 0, -np.inf, (k - 0.5) / 255 - loc) / scale
  right = lower > 0
  hi, lo = np.where(right, -lower, upper), np.where(right, -upper, lower)
  log_hi = stats.norm.logcdf(hi)
  want = log_hi + np.log1p(-np.exp(stats.norm.logcdf(lo) - log_hi))
  got = _discrete_log_probs(loc, scale)
  far = np.minimum(np.abs(upper), np.abs(lower)) > 10
  assert far.sum() > 100
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-3)


def test_discretized_gaussian_small_bins_are_density_times_width():
  """With σ ≫ bin width (1/255), interior bins hold ≈ density × width."""
  loc, scale = 0.45, 0.5
  got = _discrete_log_probs(loc, scale)[1:-1]
  centres = np.arange(1, 255) / 255
  want = stats.norm.logpdf(centres, loc, scale) + math.log(1 / 255)
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_discretized_gaussian_sums_over_pixels():
  rng = np.random.default_rng(2)
  x = rng.integers(0, 256, size=(2, 3, 3, 1), dtype=np.uint8)
  loc = jnp.asarray(rng.uniform(size=x.shape), jnp.float32)
  per_image = _discretized(jnp.asarray(x), loc, jnp.float32(-2.0))
  per_pixel = _discretized(
    jnp.asarray(x.reshape(-1, 1, 1, 1)), loc.reshape(-1, 1, 1, 1), jnp.float32(-2.0)
  )
  np.testing.assert_allclose(
    np.asarray(per_image), np.asarray(per_pixel).reshape(2, -1).sum(-1), rtol=1e-5
  )


# --- Bernoulli and the reconstruction term -------------------------------------------------------


def test_bernoulli_log_prob_matches_hand_computed_bce():
  rng = np.random.default_rng(3)
  x = rng.uniform(size=(2, 4, 4, 1))
  logits = rng.normal(scale=3.0, size=x.shape)
  p = special.expit(logits)
  want = (x * np.log(p) + (1 - x) * np.log1p(-p)).reshape(2, -1).sum(-1)
  got = losses.bernoulli_log_prob(jnp.asarray(x, jnp.float32), jnp.asarray(logits, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


@pytest.mark.parametrize("likelihood", losses.LIKELIHOODS)
def test_mean_image_is_the_likelihoods_mean(likelihood):
  """A Gaussian decoder outputs its mean; a Bernoulli one logits, whose mean is their sigmoid."""
  decoded = jnp.asarray([[-2.0, 0.0, 0.3, 0.9]], jnp.float32)
  want = special.expit(decoded) if likelihood == "bernoulli" else decoded
  np.testing.assert_allclose(
    np.asarray(losses.mean_image(likelihood, decoded)), np.asarray(want), rtol=1e-6
  )


@pytest.mark.parametrize("likelihood", losses.LIKELIHOODS)
@pytest.mark.parametrize("discretized", [False, True])
def test_reconstruction_nll_is_summed_per_image(likelihood, discretized):
  """Doubling the pixels (a side-by-side copy) doubles the NLL of each image."""
  rng = np.random.default_rng(4)
  x = rng.integers(0, 256, size=(3, 5, 4, 1), dtype=np.uint8)
  decoded = rng.uniform(0.05, 0.95, size=x.shape).astype(np.float32)
  if likelihood == "bernoulli":
    decoded = special.logit(decoded).astype(np.float32)
  log_scale = jnp.float32(math.log(0.1))
  nll = losses.reconstruction_nll(
    likelihood, jnp.asarray(x), jnp.asarray(decoded), log_scale, discretized
  )
  nll2 = losses.reconstruction_nll(
    likelihood,
    jnp.asarray(np.concatenate([x, x], axis=2)),
    jnp.asarray(np.concatenate([decoded, decoded], axis=2)),
    log_scale,
    discretized,
  )
  assert nll.shape == (3,)
  np.testing.assert_allclose(np.asarray(nll2), 2 * np.asarray(nll), rtol=1e-5)
  # And it is the negative of the matching log-likelihood.
  x01 = jnp.asarray(x, jnp.float32) / 255
  if likelihood == "bernoulli":
    want = -losses.bernoulli_log_prob(x01, jnp.asarray(decoded))
  elif likelihood == "logistic":  # always the discrete probability
    want = -losses.discretized_logistic_log_prob(jnp.asarray(x), jnp.asarray(decoded), log_scale)
  elif discretized:
    want = -losses.discretized_gaussian_log_prob(jnp.asarray(x), jnp.asarray(decoded), log_scale)
  else:
    want = -losses.gaussian_log_prob(x01, jnp.asarray(decoded), log_scale)
  np.testing.assert_allclose(np.asarray(nll), np.asarray(want), rtol=1e-6)


@pytest.mark.parametrize("loc", [0.0, 0.3, 0.5, 1.0, 1.4])
@pytest.mark.parametrize("scale", [0.5 / 255, 3 / 255, 0.05, 0.4])
def test_the_discretised_logistic_is_a_distribution_over_the_256_levels(loc, scale):
  levels = jnp.arange(256, dtype=jnp.uint8).reshape(256, 1, 1, 1)
  logp = losses.discretized_logistic_log_prob(
    levels, jnp.full(levels.shape, loc), jnp.full(levels.shape, math.log(scale))
  )
  assert np.isfinite(np.asarray(logp)).all()
  np.testing.assert_allclose(float(jnp.sum(jnp.exp(logp))), 1.0, rtol=1e-5)
  # Each bin is σ(a) − σ(b), computed here in float64 (a, b its ends in units of the scale).
  k = np.arange(256)
  cdf = lambda v: special.expit((v - loc) / scale)
  upper = np.where(k == 255, 1.0, cdf((k + 0.5) / 255))
  lower = np.where(k == 0, 0.0, cdf((k - 0.5) / 255))
  want = np.log(np.maximum(upper - lower, 1e-300))
  mass = upper - lower > 1e-12  # where float64 itself can still tell the difference
  np.testing.assert_allclose(np.asarray(logp)[mass], want[mass], rtol=2e-4, atol=2e-4)


def test_the_discretised_logistic_takes_a_scale_per_pixel():
  x = jnp.asarray([[[[10], [200]]]], jnp.uint8)
  loc = jnp.asarray([[[[10 / 255], [200 / 255]]]])
  narrow, wide = math.log(0.5 / 255), math.log(40 / 255)
  both = losses.discretized_logistic_log_prob(x, loc, jnp.asarray([[[[narrow], [wide]]]]))
  each = [
    losses.discretized_logistic_log_prob(x[:, :, i : i + 1], loc[:, :, i : i + 1], s)
    for i, s in enumerate((narrow, wide))
  ]
  np.testing.assert_allclose(float(both[0]), float(each[0][0] + each[1][0]), rtol=1e-6)


def test_reconstruction_nll_rejects_an_unknown_likelihood():
  x = jnp.zeros((1, 2, 2, 1), jnp.uint8)
  with pytest.raises(ValueError, match="laplace"):
    losses.reconstruction_nll("laplace", x, jnp.zeros(x.shape), jnp.float32(0.0))


# --- β warm-up and free bits ---------------------------------------------------------------------


def test_kl_weight_ramps_linearly_then_holds():
  steps = jnp.asarray([0, 5, 10, 20, 1000])
  np.testing.assert_allclose(
    np.asarray(losses.kl_weight(steps, 2.0, 10)), [0.0, 1.0, 2.0, 2.0, 2.0]
  )
  assert float(losses.kl_weight(jnp.asarray(0), 0.5, 0)) == 0.5
  assert float(jax.jit(losses.kl_weight, static_argnums=(1, 2))(jnp.asarray(3), 1.0, 4)) == 0.75


def test_kl_with_free_bits_keeps_the_value_and_floors_only_low_dimensions():
  # Batch means per dimension: 0.05, 0.5, 2.0, 0.15; floor 0.2 → dimensions 0 and 3 are below.
  kl_BZ = jnp.asarray([[0.0, 0.4, 1.0, 0.1], [0.1, 0.6, 3.0, 0.2]])
  plain = kl_BZ.sum(-1)
  np.testing.assert_allclose(np.asarray(losses.kl_with_free_bits(kl_BZ, 0.0)), np.asarray(plain))
  np.testing.assert_allclose(np.asarray(losses.kl_with_free_bits(kl_BZ, 0.2)), np.asarray(plain))

  def objective(kl, free_bits):
    return jnp.mean(losses.kl_with_free_bits(kl, free_bits))

  grad_plain = np.asarray(jax.grad(objective)(kl_BZ, 0.0))
  grad_floor = np.asarray(jax.grad(objective)(kl_BZ, 0.2))
  np.testing.assert_allclose(grad_plain, 0.5)
  np.testing.assert_array_equal(grad_floor[:, [0, 3]], 0.0)
  np.testing.assert_array_equal(grad_floor[:, [1, 2]], grad_plain[:, [1, 2]])


# --- Reporting -----------------------------------------------------------------------------------


def test_bits_per_dim():
  dims = 30 * 30
  assert float(losses.bits_per_dim(jnp.float32(dims * math.log(2)), dims)) == pytest.approx(1.0)
  np.testing.assert_allclose(
    np.asarray(losses.bits_per_dim(jnp.asarray([0.0, 3 * 8 * math.log(2)]), 3)),
    [0.0, 8.0],
    rtol=1e-6,
  )


def test_psnr_against_hand_computed_values():
  x = np.full((3, 4, 4, 1), 51, np.uint8)  # 0.2 on the [0, 1] scale
  recon = np.empty(x.shape, np.float32)
  recon[0] = 0.3  # constant error 0.1 → MSE 1e-2 → 20 dB
  recon[1] = 0.2 + np.where(np.arange(16).reshape(4, 4, 1) % 2, 0.01, -0.01)  # MSE 1e-4 → 40 dB
  recon[2] = 0.2
  got = np.asarray(losses.psnr(jnp.asarray(x), jnp.asarray(recon)))
  np.testing.assert_allclose(got[:2], [20.0, 40.0], atol=1e-3)
  assert got[2] > 60  # perfect: capped, finite
  assert np.isfinite(got[2])


def test_squared_error_and_its_psnr():
  x = np.full((2, 4, 4, 1), 51, np.uint8)  # 0.2
  recon = np.stack(
    [np.full((4, 4, 1), 0.3, np.float32), np.full((4, 4, 1), 0.2 + 0.03, np.float32)]
  )
  mse = np.asarray(losses.squared_error(jnp.asarray(x), jnp.asarray(recon)))
  np.testing.assert_allclose(mse, [1e-2, 9e-4], rtol=1e-4)
  per_image = np.asarray(losses.psnr(jnp.asarray(x), jnp.asarray(recon)))
  np.testing.assert_allclose(per_image, [20.0, 10 * np.log10(1 / 9e-4)], rtol=1e-4)
  # The pooled PSNR of the two (mean MSE 5.45e-3: 22.6 dB) is below the mean of their PSNRs (25.2
  # dB).
  pooled = float(losses.psnr_of_mse(jnp.mean(jnp.asarray(mse))))
  assert (
    pooled == pytest.approx(-10 * np.log10(5.45e-3), rel=1e-4) and pooled < per_image.mean() - 2
  )


def test_psnr_clips_the_reconstruction_to_the_data_range():
  x = np.zeros((1, 2, 2, 1), np.uint8)
  x[0, 0, 0, 0] = 255
  recon = np.full(x.shape, -3.0, np.float32)
  recon[0, 0, 0, 0] = 7.0  # clipped to exactly the data
  assert float(losses.psnr(jnp.asarray(x), jnp.asarray(recon))[0]) > 60
