"""Where random codes come from: N(0, I), or a Gaussian mixture fitted to the codes in use.

A VAE's prior puts mass where the encoder never sends a training image
("prior holes"), and draws from there decode to blends. A Gaussian mixture
fitted to posterior draws of the training images (the aggregate posterior)
samples where the decoder was trained. It is fitted after training (and at
every checkpoint, from a few thousand images: a second or two), stored as
``<workdir>/sampler.npz`` with the step of its checkpoint, and changes
nothing about the model or its ELBO: only which codes are decoded.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import files
from vae_jax.rng import split_root_key

log = logging.getLogger(__name__)

SAMPLERS = ("gmm", "prior")  # the first is the default
FILENAME = "sampler.npz"
COMPONENTS = 20
FIT_IMAGES = 1000  # training images encoded for a fit, at most
FIT_PIXELS = 50_000_000  # and at most this many pixels of them (≈ 250 galaxies)
DRAWS = 2  # posterior draws per image


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
  """A mixture of full-covariance Gaussians over codes, fitted at checkpoint ``step``."""

  weights: np.ndarray  # K
  means: np.ndarray  # K×Z
  cholesky: np.ndarray  # K×Z×Z, lower triangular: covariance = L Lᵀ
  step: int

  def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What ``draw_codes`` takes: (weights, means, cholesky)."""
    return self.weights, self.means, self.cholesky


def draw_codes(
  key: jax.Array,
  n: int,
  latent_dim: int,
  temperature: jax.Array | float,
  mixture: tuple[jax.Array, jax.Array, jax.Array] | None,
) -> jax.Array:
  """``n`` codes from N(0, temperature² I) (``mixture`` None) or from a mixture's arrays.

  A mixture draw picks a component by weight, then adds ``temperature``
  times that component's spread to its mean. Traceable: ``jit`` it with
  ``n`` and ``latent_dim`` static.
  """
  if mixture is None:
    return temperature * jax.random.normal(key, (n, latent_dim))
  weights, means, cholesky = (jnp.asarray(a) for a in mixture)
  pick, noise = jax.random.split(key)
  component = jax.random.categorical(pick, jnp.log(weights), shape=(n,))
  eps = jax.random.normal(noise, (n, latent_dim))
  return means[component] + temperature * jnp.einsum("nij,nj->ni", cholesky[component], eps)


def fit_images(image_shape: tuple[int, ...]) -> int:
  """How many training images a fit encodes for images of ``image_shape``."""
  return max(1, min(FIT_IMAGES, FIT_PIXELS // int(np.prod(image_shape))))


def posterior_draws(mean_NZ: np.ndarray, logvar_NZ: np.ndarray, key: jax.Array) -> np.ndarray:
  """``DRAWS`` codes z ~ q(z|x) per image: (DRAWS·N)×Z draws of the aggregate posterior."""
  mean_NZ, logvar_NZ = np.asarray(mean_NZ, np.float32), np.asarray(logvar_NZ, np.float32)
  eps = np.asarray(jax.random.normal(key, (DRAWS,) + mean_NZ.shape))
  return (mean_NZ + np.exp(0.5 * logvar_NZ) * eps).reshape(-1, mean_NZ.shape[1])


def fit_gmm(
  codes_NZ: np.ndarray, step: int, components: int = COMPONENTS, seed: int = 0
) -> GaussianMixture:
  """Fit a full-covariance Gaussian mixture to codes (scikit-learn's EM, k-means initialised)."""
  # Imported here: scikit-learn is slow to import, and only fitting needs it.
  from sklearn.mixture import GaussianMixture as SkMixture

  components = max(1, min(components, len(codes_NZ) // (2 * codes_NZ.shape[1] + 2)))
  fitted = SkMixture(components, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(
    np.asarray(codes_NZ, np.float64)
  )
  return GaussianMixture(
    fitted.weights_.astype(np.float32),
    fitted.means_.astype(np.float32),
    np.linalg.cholesky(fitted.covariances_).astype(np.float32),
    step,
  )


def fit(
  encode: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
  images_uint8: np.ndarray,
  seed: int,
  step: int,
) -> GaussianMixture:
  """The mixture of a run's aggregate posterior at ``step``, from ``encode`` of training images.

  The draws use a key of the run's seed and the step, so a fit is repeatable.
  """
  mean, logvar = encode(images_uint8)
  key = jax.random.fold_in(split_root_key(seed)["sample"], step)
  return fit_gmm(posterior_draws(mean, logvar, key), step, seed=seed)


def save(mixture: GaussianMixture, workdir: Path) -> Path:
  out = io.BytesIO()
  np.savez(
    out, **{f.name: np.asarray(getattr(mixture, f.name)) for f in dataclasses.fields(mixture)}
  )
  return files.write_bytes(Path(workdir) / FILENAME, out.getvalue())


def load(workdir: Path, step: int) -> GaussianMixture | None:
  """The mixture stored in ``workdir`` for checkpoint ``step``, or None.

  None for a run trained before samplers existed, and for a mixture of
  another step (a run whose newest checkpoint was damaged, say).
  """
  path = Path(workdir) / FILENAME
  if not path.exists():
    return None
  try:
    with np.load(path) as stored:
      mixture = GaussianMixture(
        stored["weights"], stored["means"], stored["cholesky"], int(stored["step"])
      )
  except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
    log.warning("Ignoring %s, which cannot be read (%s); it is fitted again.", path, error)
    return None
  return mixture if mixture.step == step else None
