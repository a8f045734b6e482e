"""Open a trained run and look inside it: ``run = open_run(workdir)``, then ``run.decode(z)``, ….

Light on purpose: it builds the model from the run's saved config, reads
only the parameters the run is judged by (the moving average if it keeps
one) from its newest intact checkpoint — their shapes come from
``jax.eval_shape(model.init, …)``, no optimiser is built — and compiles
each function once per run and batch size. It imports neither the trainer
nor optax, grain, tensorboardX or tqdm, so a notebook, ``bin/sample.py``,
``bin/evaluate.py`` and the explorer open a run in about a second.

Batches of any size run through a few compiled shapes: a batch is cut into
chunks of at most ``MAX_BATCH`` images and each chunk padded to the next
power of two.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax import checkpoint, losses, samplers
from vae_jax.config import load_config, workdir_path
from vae_jax.data.preprocess import Preprocess, preprocess_from_config
from vae_jax.errors import CheckpointNotFoundError, ConfigError, WorkdirError
from vae_jax.models import build_colorizer, build_model, image_shape
from vae_jax.models.vae import VAE

log = logging.getLogger(__name__)

MAX_BATCH = 256  # images per compiled call; larger requests run in chunks
# LLVM's level 2 instead of XLA's default 3 for the CPU code: the same results (the prior draws and
# decoded images bit for bit), a third of the compile time, which is most of opening a run.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 2}


def jit(fn: Callable, **kwargs) -> Callable:
  """``jax.jit`` with ``COMPILER_OPTIONS``, for programs compiled each time a run is opened."""
  return jax.jit(fn, compiler_options=COMPILER_OPTIONS, **kwargs)


def _padded_size(n: int) -> int:
  """The compiled batch size that holds ``n`` (≤ ``MAX_BATCH``) items: the next power of two."""
  return min(MAX_BATCH, 1 << max(0, n - 1).bit_length())


def in_batches(fn: Callable[[jax.Array], Any], x: np.ndarray) -> Any:
  """``fn`` over the leading axis of ``x`` in padded chunks (a few compiled shapes)."""
  x = np.asarray(x)
  parts = []
  for start in range(0, len(x), MAX_BATCH):
    chunk = x[start : start + MAX_BATCH]
    padded = np.zeros((_padded_size(len(chunk)),) + chunk.shape[1:], chunk.dtype)
    padded[: len(chunk)] = chunk
    count = len(chunk)
    parts.append(jax.tree.map(lambda a, count=count: np.asarray(a)[:count], fn(padded)))
  if not parts:
    return jax.tree.map(lambda a: np.asarray(a)[:0], fn(np.zeros((1,) + x.shape[1:], x.dtype)))
  return jax.tree.map(lambda *a: np.concatenate(a), *parts)


def _read_params(
  workdir: Path, model: nn.Module, dummy: jax.ShapeDtypeStruct, field: str, train_hint: str
):
  """(step, parameters) of ``workdir``'s newest intact checkpoint, shaped as ``model.init``'s."""
  ckpt_dir = workdir / "checkpoints"
  if not checkpoint.has_checkpoint(ckpt_dir):
    raise CheckpointNotFoundError(
      f"No checkpoint in {ckpt_dir}: train first ({train_hint} {workdir})."
    )

  def init():  # traced only: no key or parameter is computed
    key = jax.random.key(0)
    inputs = (jnp.zeros(dummy.shape, dummy.dtype),) + ((key,) if isinstance(model, VAE) else ())
    return model.init(key, *inputs)["params"]

  params_like = jax.eval_shape(init)
  return checkpoint.newest_intact(
    ckpt_dir, lambda step_dir: checkpoint.read_params(step_dir, params_like, field), field=field
  )


class Run:
  """A trained VAE opened for looking inside; build it with ``open_run``.

  Attributes:
    workdir: where the run lives.
    config: its resolved config.
    model: the VAE its config builds.
    params: the parameters it is judged by.
    step: the step of the checkpoint they come from.
    preprocess: what turns any uint8 image into this model's input.
    mixture: the Gaussian mixture fitted to this step's codes (the ``gmm``
      sampler), or None where the run has none for this step
      (``vae_jax.sampling.prepare_sampler`` fits one).
  """

  def __init__(
    self,
    workdir: Path,
    config: ml_collections.ConfigDict,
    model: VAE,
    params: Any,
    step: int,
    mixture: samplers.GaussianMixture | None = None,
  ):
    self.workdir, self.config, self.model, self.params, self.step = (
      workdir,
      config,
      model,
      params,
      step,
    )
    self.mixture = mixture
    self.preprocess: Preprocess = preprocess_from_config(config.data)
    likelihood = config.loss.likelihood
    apply = functools.partial(model.apply, {"params": params})

    def decode01(z_BZ):
      return losses.mean_image(likelihood, apply(z_BZ, method=model.decode))

    self._encode = jit(lambda x: apply(x, method=model.encode))
    self._decode = jit(lambda z: _to_uint8(decode01(z)))
    self._reconstruct = jit(lambda x: _to_uint8(decode01(apply(x, method=model.encode)[0])))
    self._sample = jit(
      lambda key, t, mixture, n: _to_uint8(
        decode01(samplers.draw_codes(key, n, self.latent_dim, t, mixture))
      ),
      static_argnums=3,
    )

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return image_shape(self.config.data)

  @property
  def latent_dim(self) -> int:
    return self.config.model.latent_dim

  def encode(self, x_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior ``(mean_NZ, logvar_NZ)`` of uint8 model inputs N×H×W×C (see ``preprocess``)."""
    return in_batches(self._encode, np.asarray(x_uint8, np.uint8))

  def decode(self, z_NZ: np.ndarray) -> np.ndarray:
    """Decoder means of codes (N(0, I) draws are prior samples) as uint8 images N×H×W×C."""
    return in_batches(self._decode, np.asarray(z_NZ, np.float32))

  def reconstruct(self, x_uint8: np.ndarray) -> np.ndarray:
    """The posterior-mean reconstructions of uint8 model inputs."""
    return in_batches(self._reconstruct, np.asarray(x_uint8, np.uint8))

  @property
  def samplers(self) -> tuple[str, ...]:
    """The samplers this run can draw codes from now."""
    return samplers.SAMPLERS if self.mixture is not None else ("prior",)

  def _mixture_arrays(self, sampler: str) -> tuple | None:
    if sampler not in samplers.SAMPLERS:
      raise ConfigError(f"Unknown sampler {sampler!r}; choose one of {samplers.SAMPLERS}.")
    if sampler == "prior":
      return None
    if self.mixture is None:
      raise ConfigError(
        f"{self.workdir} has no gmm sampler for step {self.step}; "
        "vae_jax.sampling.prepare_sampler(run, 'gmm') fits one, or use the sampler 'prior'."
      )
    return self.mixture.arrays()

  def codes(
    self, key: jax.Array, n: int, temperature: float = 1.0, sampler: str = "prior"
  ) -> np.ndarray:
    """``n`` codes from ``sampler``: ``prior`` (N(0, temperature² I)) or ``gmm`` (``mixture``)."""
    mixture = self._mixture_arrays(sampler)
    return np.asarray(samplers.draw_codes(key, n, self.latent_dim, temperature, mixture))

  def sample(
    self, key: jax.Array, n: int, temperature: float = 1.0, sampler: str = "prior"
  ) -> np.ndarray:
    """``n`` decoded draws of ``codes(key, n, temperature, sampler)``, as uint8 images."""
    mixture = self._mixture_arrays(sampler)
    return np.asarray(self._sample(key, jnp.float32(temperature), mixture, n))

  def kl_per_dim(self, x_uint8: np.ndarray) -> np.ndarray:
    """Average KL(q(z|x) ‖ p(z)) of each latent dimension over ``x_uint8``, in nats."""
    mean, logvar = self.encode(x_uint8)
    return np.asarray(losses.gaussian_kl(mean, logvar)).mean(axis=0)


def _to_uint8(images01: jax.Array) -> jax.Array:
  """[0, 1] → uint8 on the device, rounding as ``images.to_uint8`` does."""
  return jnp.clip(jnp.rint(images01.astype(jnp.float32) * 255.0), 0, 255).astype(jnp.uint8)


def _open_config(
  workdir: str | Path, task: str, what: str
) -> tuple[Path, ml_collections.ConfigDict]:
  workdir = workdir_path(workdir)
  config = load_config(workdir)
  if config.task != task:
    raise WorkdirError(f"{workdir} holds a {config.task!r} run, not {what}.")
  return workdir, config


def open_run(workdir: str | Path) -> Run:
  """The VAE of ``workdir``, with the parameters of its newest intact checkpoint.

  Raises:
    WorkdirError: no config.json, or the workdir holds another kind of run (a colouriser).
    CheckpointNotFoundError: no checkpoint, or none intact.
    CheckpointMismatchError: the checkpoint does not fit the saved config.
  """
  workdir, config = _open_config(workdir, "vae", "a VAE: point --workdir at a VAE's workdir")
  shape = image_shape(config.data)
  model = build_model(config.model, config.loss, shape)
  field = "ema_params" if config.train.ema_decay > 0 else "params"
  step, params = _read_params(
    workdir,
    model,
    jax.ShapeDtypeStruct((1,) + shape, jnp.uint8),
    field,
    "python bin/train.py --config ... --workdir",
  )
  return Run(workdir, config, model, params, step, samplers.load(workdir, step))


class Colorizer:
  """A trained colouriser opened for use; build it with ``open_colorizer``."""

  def __init__(self, config: ml_collections.ConfigDict, model: nn.Module, params: Any):
    self.config, self.model, self.params = config, model, params
    self._colorize = jit(
      lambda grey: _to_uint8(jnp.clip(model.apply({"params": params}, losses.to_unit(grey)), 0, 1))
    )

  @property
  def grey_shape(self) -> tuple[int, int, int]:
    return image_shape(self.config.data)[:2] + (1,)

  def colorize(self, grey_uint8: np.ndarray) -> np.ndarray:
    """Colour uint8 grey images N×H×W×1; uint8 N×H×W×3."""
    grey_uint8 = np.asarray(grey_uint8, np.uint8)
    if tuple(grey_uint8.shape[1:]) != self.grey_shape:
      raise WorkdirError(
        f"This colouriser takes grey {self.grey_shape} images; got {tuple(grey_uint8.shape[1:])}."
      )
    return in_batches(self._colorize, grey_uint8)


def open_colorizer(workdir: str | Path) -> Colorizer:
  """The colouriser of ``workdir`` (``configs/colorizer.py``), with its newest intact checkpoint."""
  workdir, config = _open_config(
    workdir, "colorizer", "a colouriser (a workdir trained with configs/colorizer.py)"
  )
  shape = image_shape(config.data)
  model = build_colorizer(config.model, shape)
  field = "ema_params" if config.train.ema_decay > 0 else "params"
  _, params = _read_params(
    workdir,
    model,
    jax.ShapeDtypeStruct((1,) + shape[:2] + (1,), jnp.float32),
    field,
    "python bin/train.py --config configs/colorizer.py --workdir",
  )
  return Colorizer(config, model, params)
