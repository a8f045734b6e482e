"""The gmm sampler: fitted to the codes in use, kept beside the checkpoints, refitted when stale."""

from __future__ import annotations

import shutil

import jax
import numpy as np
import pytest

from vae_jax import samplers, sampling
from vae_jax.errors import ConfigError
from vae_jax.inference import open_run


def _two_clusters(n: int = 2000) -> np.ndarray:
  rng = np.random.default_rng(0)
  centres = np.array([[-3.0, 0.0, 1.0], [3.0, 2.0, -1.0]])
  return centres[rng.integers(0, 2, n)] + 0.3 * rng.normal(size=(n, 3))


def test_the_mixture_finds_the_clusters_and_draws_from_them():
  mixture = samplers.fit_gmm(_two_clusters(), step=7, components=2)
  order = np.argsort(mixture.means[:, 0])
  np.testing.assert_allclose(mixture.means[order], [[-3, 0, 1], [3, 2, -1]], atol=0.05)
  np.testing.assert_allclose(mixture.weights.sum(), 1.0, rtol=1e-6)
  codes = np.asarray(samplers.draw_codes(jax.random.key(0), 4000, 3, 1.0, mixture.arrays()))
  near = np.min(np.linalg.norm(codes[:, None] - mixture.means[None], axis=-1), axis=1)
  assert np.mean(near < 1.5) > 0.99  # nothing drawn in the empty middle, as N(0, I) would
  cold = samplers.draw_codes(jax.random.key(1), 50, 3, 0.0, mixture.arrays())
  assert {tuple(np.round(c, 4)) for c in np.asarray(cold)} <= {
    tuple(np.round(m, 4)) for m in mixture.means
  }


def test_the_prior_sampler_is_a_standard_normal_scaled_by_the_temperature():
  codes = samplers.draw_codes(jax.random.key(0), 3, 4, 0.5, None)
  np.testing.assert_array_equal(codes, 0.5 * jax.random.normal(jax.random.key(0), (3, 4)))


def test_a_stored_mixture_is_read_back_for_its_step_only(tmp_path):
  mixture = samplers.fit_gmm(_two_clusters(), step=7, components=2)
  samplers.save(mixture, tmp_path)
  again = samplers.load(tmp_path, 7)
  np.testing.assert_array_equal(again.cholesky, mixture.cholesky)
  assert samplers.load(tmp_path, 8) is None  # another checkpoint's codes
  (tmp_path / samplers.FILENAME).write_bytes(b"not a zip")
  assert samplers.load(tmp_path, 7) is None


@pytest.fixture(scope="module")
def run(smoke_vae):
  return open_run(smoke_vae[0])


def test_training_keeps_the_sampler_of_its_last_checkpoint(run):
  assert run.mixture is not None and run.mixture.step == run.step
  assert run.samplers == ("gmm", "prior")
  assert run.mixture.means.shape[1] == run.latent_dim


def test_samples_of_each_sampler_are_repeatable_and_differ(run):
  key = jax.random.key(0)
  gmm, prior = run.sample(key, 6, sampler="gmm"), run.sample(key, 6, sampler="prior")
  np.testing.assert_array_equal(gmm, run.sample(key, 6, sampler="gmm"))
  assert gmm.shape == prior.shape == (6, 30, 30, 1) and not np.array_equal(gmm, prior)
  np.testing.assert_array_equal(gmm, run.decode(run.codes(key, 6, sampler="gmm")))
  with pytest.raises(ConfigError, match="Unknown sampler"):
    run.sample(key, 2, sampler="flow")


def test_a_run_without_its_sampler_fits_one_when_asked(smoke_vae, tmp_path):
  workdir = tmp_path / "copy"
  shutil.copytree(smoke_vae[0], workdir)
  (workdir / samplers.FILENAME).unlink()
  run = open_run(workdir)
  assert run.samplers == ("prior",)
  with pytest.raises(ConfigError, match="prepare_sampler"):
    run.sample(jax.random.key(0), 2, sampler="gmm")
  sampling.prepare_sampler(run, "gmm")
  assert run.mixture.step == run.step and (workdir / samplers.FILENAME).exists()
  # The fit in training and the one here see the same images, draws and seed.
  np.testing.assert_allclose(run.mixture.means, open_run(smoke_vae[0]).mixture.means, atol=1e-4)
