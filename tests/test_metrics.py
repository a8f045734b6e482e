"""Metrics against closed forms and hand-computed values: IWAE, SSIM, PSNR, active units, MI/MIG."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from vae_jax import losses, metrics

# --- IWAE on a linear-Gaussian model, where log p(x) is known in closed form ---


@dataclasses.dataclass(frozen=True)
class LinearGaussian:
  """p(z) = N(0, I), p(x|z) = N(Wz + b, s² I)  ⇒  p(x) = N(b, W Wᵀ + s² I); one observed x."""

  w: np.ndarray
  b: np.ndarray
  s: float
  x: np.ndarray

  def log_px(self) -> float:
    cov = self.w @ self.w.T + self.s**2 * np.eye(len(self.x))
    d = self.x - self.b
    return float(
      -0.5
      * (d @ np.linalg.solve(cov, d) + np.linalg.slogdet(cov)[1] + len(d) * math.log(2 * math.pi))
    )

  def posterior(self) -> tuple[np.ndarray, np.ndarray]:
    cov = np.linalg.inv(np.eye(self.w.shape[1]) + self.w.T @ self.w / self.s**2)
    return cov @ self.w.T @ (self.x - self.b) / self.s**2, cov

  def elbo(self, q_mean: np.ndarray, q_var: np.ndarray) -> float:
    resid = self.x - self.w @ q_mean - self.b
    expected_sq = resid @ resid + np.trace(self.w @ np.diag(q_var) @ self.w.T)
    n = len(self.x)
    expected_log_lik = (
      -0.5 * expected_sq / self.s**2 - n * math.log(self.s) - 0.5 * n * math.log(2 * math.pi)
    )
    return float(expected_log_lik - np.sum(losses.gaussian_kl(q_mean, np.log(q_var))))

  def log_weight_fn(self, q_mean: np.ndarray, q_var: np.ndarray, copies: int):
    """``key -> log w`` for ``copies`` independent estimates (each row one example in the batch)."""
    mean = jnp.broadcast_to(jnp.asarray(q_mean, jnp.float32), (copies, len(q_mean)))
    logvar = jnp.broadcast_to(jnp.log(jnp.asarray(q_var, jnp.float32)), mean.shape)
    w_t, b, x = (jnp.asarray(a, jnp.float32) for a in (self.w.T, self.b, self.x))

    def log_weight(key):
      z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
      loc = z @ w_t + b
      log_px_z = losses.gaussian_log_prob(jnp.broadcast_to(x, loc.shape), loc, math.log(self.s))
      log_pz = metrics.diagonal_gaussian_log_prob(z, 0.0, jnp.zeros_like(z))
      return log_px_z + log_pz - metrics.diagonal_gaussian_log_prob(z, mean, logvar)

    return log_weight


TOY = LinearGaussian(
  w=np.array([[1.0, 0.5], [-0.3, 0.8], [0.6, -1.2]]),
  b=np.array([0.2, -0.1, 0.4]),
  s=0.7,
  x=np.array([1.1, -0.4, 0.9]),
)
# A deliberately poor diagonal proposal: shifted and too wide.
Q_MEAN = TOY.posterior()[0] + np.array([0.3, -0.2])
Q_VAR = 2.0 * np.diag(TOY.posterior()[1])


def test_iwae_with_one_sample_is_the_elbo_on_average():
  copies = 20000
  bound = metrics.iwae_log_likelihood(
    TOY.log_weight_fn(Q_MEAN, Q_VAR, copies), jax.random.key(0), 1
  )
  stderr = float(np.std(bound)) / math.sqrt(copies)
  assert float(np.mean(bound)) == pytest.approx(TOY.elbo(Q_MEAN, Q_VAR), abs=4 * stderr)


def test_iwae_tightens_with_k_towards_the_true_log_likelihood():
  log_px, elbo = TOY.log_px(), TOY.elbo(Q_MEAN, Q_VAR)
  assert elbo < log_px - 0.1  # the proposal is poor enough for the bound to have room to tighten
  means = []
  for k in (1, 4, 32, 256):
    bound = metrics.iwae_log_likelihood(
      TOY.log_weight_fn(Q_MEAN, Q_VAR, 8000), jax.random.key(k), k, chunk=32
    )
    means.append(float(np.mean(bound)))
  assert all(a < b for a, b in itertools.pairwise(means)), means
  assert means[-1] <= log_px + 1e-3
  assert log_px - means[-1] < 0.05 * (log_px - elbo), (means, log_px, elbo)


def test_iwae_with_the_exact_posterior_is_exact_for_every_k():
  """With q = p(z|x) every weight equals p(x); WᵀW diagonal makes that posterior diagonal."""
  toy = dataclasses.replace(TOY, w=np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]))
  mean, cov = toy.posterior()
  for k in (1, 7):
    bound = metrics.iwae_log_likelihood(
      toy.log_weight_fn(mean, np.diag(cov), 5), jax.random.key(3), k
    )
    np.testing.assert_allclose(bound, toy.log_px(), atol=1e-4)


def test_iwae_chunking_does_not_change_the_result():
  fn = TOY.log_weight_fn(Q_MEAN, Q_VAR, 8)
  whole = metrics.iwae_log_likelihood(fn, jax.random.key(1), 30)
  chunked = metrics.iwae_log_likelihood(fn, jax.random.key(1), 30, chunk=7)
  np.testing.assert_allclose(whole, chunked, rtol=1e-6)


# --- SSIM and PSNR ---


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
  """Direct transcription of Wang et al. (2004): windowed statistics at every valid position."""
  g = np.exp(-0.5 * ((np.arange(11) - 5) / 1.5) ** 2)
  w = np.outer(g, g) / np.outer(g, g).sum()
  values = []
  for c in range(x.shape[-1]):
    px = sliding_window_view(x[..., c].astype(np.float64), (11, 11))
    py = sliding_window_view(y[..., c].astype(np.float64), (11, 11))
    mx, my = (px * w).sum((-1, -2)), (py * w).sum((-1, -2))
    vx = (px**2 * w).sum((-1, -2)) - mx**2
    vy = (py**2 * w).sum((-1, -2)) - my**2
    cxy = (px * py * w).sum((-1, -2)) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    values.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
  return float(np.mean(values))


@pytest.mark.parametrize("shape", [(16, 16, 1), (20, 13, 3)])
def test_ssim_matches_a_direct_implementation(shape):
  rng = np.random.default_rng(0)
  x = rng.random((2,) + shape)
  y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
  got = np.asarray(metrics.ssim(jnp.asarray(x), jnp.asarray(y)))
  np.testing.assert_allclose(got, [_ssim_reference(x[i], y[i]) for i in range(2)], rtol=1e-4)


@pytest.mark.parametrize("shape", [(30, 30, 1), (64, 48, 3)])
def test_ssim_and_psnr_match_dm_pix(shape):
  """dm-pix's SSIM and PSNR give our numbers (ours runs its windows as matmuls, faster on CPU)."""
  dm_pix = pytest.importorskip("dm_pix")
  rng = np.random.default_rng(2)
  x = rng.random((3,) + shape).astype(np.float32)
  y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
  np.testing.assert_allclose(metrics.ssim(x, y), dm_pix.ssim(x, y), rtol=1e-5, atol=1e-6)
  x_uint8 = np.round(x * 255).astype(np.uint8)
  np.testing.assert_allclose(
    losses.psnr(x_uint8, y), dm_pix.psnr(x_uint8.astype(np.float32) / 255, y), rtol=1e-5
  )


def test_ssim_of_identical_images_is_one_and_of_constant_images_by_hand():
  rng = np.random.default_rng(1)
  x = rng.random((3, 12, 12, 3))
  np.testing.assert_allclose(metrics.ssim(x, x), 1.0, atol=1e-5)
  a, b = 0.3, 0.5  # flat images: no variance, so SSIM is the luminance term alone
  flat_a, flat_b = np.full((1, 12, 12, 1), a), np.full((1, 12, 12, 1), b)
  c1 = 0.01**2
  # The windowed variances are E[x²] − E[x]² ≈ 0.09 − 0.09: float32 rounding leaves ~1e-8 against c2
  # = 9e-4.
  np.testing.assert_allclose(
    metrics.ssim(flat_a, flat_b), (2 * a * b + c1) / (a * a + b * b + c1), rtol=1e-4
  )


def test_ssim_refuses_images_smaller_than_the_window():
  with pytest.raises(ValueError, match="at least 11"):
    metrics.ssim(np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 8, 1)))


def test_psnr_by_hand():
  zeros = np.zeros((2, 4, 4, 1), np.uint8)
  np.testing.assert_allclose(
    losses.psnr(zeros, np.full(zeros.shape, 0.1)), 20.0, rtol=1e-5
  )  # MSE 0.01
  whites = np.full((1, 4, 4, 3), 255, np.uint8)
  np.testing.assert_allclose(
    losses.psnr(whites, np.full(whites.shape, 0.5)), 10 * math.log10(4), rtol=1e-5
  )


# --- active units, mutual information, MIG ---


def test_active_units_counts_dimensions_whose_mean_varies():
  rng = np.random.default_rng(0)
  stds = np.array([1.0, 0.2, 0.05, 0.0])  # variances 1, 0.04, 0.0025, 0
  means = rng.standard_normal((5000, 4)) * stds + 3.0
  assert metrics.active_units(means) == 2


def test_mutual_information_by_hand():
  a = np.array([0, 0, 1, 1])
  b = np.array([0, 1, 1, 1])
  h_b = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
  h_joint = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))  # pairs (0,0), (0,1), (1,1)×2
  assert metrics.mutual_information(a, b) == pytest.approx(math.log(2) + h_b - h_joint)
  assert metrics.mutual_information(a, np.array([0, 1, 0, 1])) == pytest.approx(0.0, abs=1e-12)
  assert metrics.mutual_information(a, a) == pytest.approx(math.log(2))


def test_discretize_keeps_few_distinct_values_and_bins_continuous_ones():
  np.testing.assert_array_equal(
    metrics.discretize(np.array([5.0, 2.0, 5.0, 2.0]), 10), [1, 0, 1, 0]
  )
  codes = metrics.discretize(np.linspace(0, 1, 100), 10)
  np.testing.assert_array_equal(np.bincount(codes), [10] * 10)


@pytest.fixture(scope="module")
def factors():
  return np.random.default_rng(0).random((5000, 3))


def test_mig_is_one_when_each_latent_copies_one_factor(factors):
  latents = np.stack([-2.0 * factors[:, 2] + 1.0, 3.0 * factors[:, 0], factors[:, 1] - 5.0], axis=1)
  report = metrics.factor_report(latents, factors, ["a", "b", "c"])
  assert report["mig"] > 0.95
  assert [report["per_factor"][n]["best_dim"] for n in "abc"] == [1, 2, 0]
  assert report["per_factor"]["c"]["corr_per_dim"][0] == pytest.approx(-1.0)
  json.dumps(report)  # plain JSON values


def test_mig_is_zero_for_independent_latents(factors):
  latents = np.random.default_rng(1).standard_normal((5000, 4))
  assert metrics.factor_report(latents, factors, ["a", "b", "c"])["mig"] < 0.03


def test_mig_penalises_a_factor_split_over_two_latents(factors):
  """z0 and z1 copy factor a (no gap), z2 copies b, nothing carries c: MIG = (0 + 1 + 0) / 3."""
  latents = np.stack([factors[:, 0], 2.0 * factors[:, 0], factors[:, 1]], axis=1)
  nmi = metrics.normalized_mutual_info(latents, factors)
  score, gaps = metrics.mig(nmi)
  assert gaps[0] == pytest.approx(0.0, abs=1e-12)
  assert nmi[0, 0] == pytest.approx(1.0)
  assert gaps[1] == pytest.approx(1.0, abs=0.03)
  assert gaps[2] == pytest.approx(0.0, abs=0.03)
  assert score == pytest.approx(1.0 / 3.0, abs=0.03)


def test_collapsed_dimension_cannot_win_a_factor():
  """A dimension of tiny variance that still tracks a factor (a collapsed latent) scores zero MI."""
  rng = np.random.default_rng(0)
  factors = rng.uniform(size=(2000, 2))
  latents = np.stack([factors[:, 0] * 3.0, factors[:, 1] * 1e-3, rng.normal(size=2000)], axis=1)
  report = metrics.factor_report(latents, factors, ["a", "b"])
  assert report["per_factor"]["a"]["best_dim"] == 0
  assert report["per_factor"]["b"]["nmi_per_dim"][1] == 0.0


def test_a_constant_factor_stays_out_of_mig_beside_collapsed_dimensions():
  """A constant factor has no entropy to share: no entry; MIG is the other factor's gap alone."""
  rng = np.random.default_rng(0)
  factors = np.stack([rng.uniform(size=2000), np.full(2000, 0.5)], axis=1)
  collapsed = rng.normal(size=(2000, 2)) * 1e-3  # dimensions 1 and 2
  latents = np.concatenate([factors[:, :1] * 3.0, collapsed], axis=1)
  report = metrics.factor_report(latents, factors, ["a", "const"])
  assert report["per_factor"]["const"] is None
  assert report["mig"] == pytest.approx(report["per_factor"]["a"]["gap"])
  assert report["mig"] > 0.9
