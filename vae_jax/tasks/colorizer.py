"""The colouriser as a task on the trainer: grey → RGB, trained on pairs made from one RGB dataset.

Training pairs come from the shared pipeline with ``config.data.channels=3``:
the target is the RGB image, the input its grey version, computed inside
the jitted step exactly as the data preprocessing's PIL ``convert("L")``
does, and optionally passed through a trained VAE's posterior-mean
reconstruction (``config.colorizer.vae_workdir``) as the reference did, so
the colouriser learns to colour what a VAE produces.

Loss (the reference's, mean-reduced so its two terms weigh the same):
colour MSE to the RGB target + ``config.loss.luminance_weight`` × MSE between
the output's luminance (0.30 R + 0.59 G + 0.11 B) and the clean grey input.
Gaussian noise of standard deviation ``config.colorizer.input_noise`` (on the
[0, 1] scale) is added to the input from the step's key, so a resumed run
draws the noise an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax import batching, images, losses
from vae_jax.data.augment import augment
from vae_jax.data.dataset import Dataset
from vae_jax.errors import ConfigError
from vae_jax.inference import open_run
from vae_jax.models import build_colorizer
from vae_jax.models.colorizer import luminance
from vae_jax.trainer import Task, TaskSpec
from vae_jax.trainer.state import LossFn


def grey_from_rgb(rgb_uint8: jax.Array) -> jax.Array:
  """uint8 B×H×W×3 → B×H×W×1, bit-exact with PIL's ``convert("L")`` (ITU-R 601 luma, rounded)."""
  r, g, b = (rgb_uint8[..., i : i + 1].astype(jnp.int32) for i in range(3))
  return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(jnp.uint8)


def colorizer_losses(
  rgb01: jax.Array, target_uint8: jax.Array, grey01: jax.Array
) -> dict[str, jax.Array]:
  """Per-image colour MSE to the target and luminance MSE to the grey input, shape (B,)."""
  per_image = lambda x: jnp.mean(x.reshape(x.shape[0], -1), axis=-1)
  return {
    "color_mse": per_image(jnp.square(rgb01 - losses.to_unit(target_uint8))),
    "luminance_mse": per_image(jnp.square(luminance(rgb01) - grey01)),
  }


@dataclasses.dataclass(frozen=True)
class GreyInput:
  """How an RGB batch becomes the colouriser's input: luma, or a VAE's reconstruction of the luma.

  Called as ``grey_fn(vae_params, rgb_uint8) -> grey01`` (B×H×W×1) inside
  jitted steps; the VAE's parameters are an argument so they are not baked
  into the compiled program as constants.

  Attributes:
    vae: the trained VAE (grey images of the colouriser's size), or None.
    likelihood: the VAE's (``config.loss.likelihood``), which says what its decoder outputs.
  """

  vae: nn.Module | None = None
  likelihood: str = "gaussian"

  def __call__(self, vae_params: Any, rgb_uint8: jax.Array) -> jax.Array:
    grey = grey_from_rgb(rgb_uint8)
    if self.vae is None:
      return losses.to_unit(grey)
    apply = functools.partial(self.vae.apply, {"params": vae_params})
    mean, _ = apply(grey, method=self.vae.encode)
    return losses.mean_image(self.likelihood, apply(mean, method=self.vae.decode))


def grey_input(vae_workdir: str, shape: tuple[int, int, int]) -> tuple[GreyInput, Any]:
  """The ``GreyInput`` of ``config.colorizer.vae_workdir`` ("": luma) and the VAE's parameters."""
  if not vae_workdir:
    return GreyInput(), None
  vae = open_run(vae_workdir)
  if vae.image_shape != shape[:2] + (1,):
    raise ConfigError(
      f"The VAE in {vae_workdir} models {vae.image_shape} images; the colouriser's input must be "
      f"grey {shape[:2] + (1,)}. Train the colouriser at "
      f"--config.data.image_size={vae.config.data.image_size} or use a grey VAE of this size."
    )
  # On the host: the trainer places it beside the train state, on whatever devices that spans.
  return GreyInput(vae.model, vae.config.loss.likelihood), jax.device_get(vae.params)


def make_loss(model: nn.Module, config: ml_collections.ConfigDict, grey_fn: GreyInput) -> LossFn:
  """Colour MSE + weighted luminance MSE, on an augmented batch with noise on the grey input."""
  noise_std = config.colorizer.input_noise
  luminance_weight = config.loss.luminance_weight

  def loss(params, rgb_uint8, key, step, vae_params):
    del step
    augment_key, noise_key = jax.random.split(key)
    rgb_uint8 = augment(rgb_uint8, augment_key, config.data)
    grey01 = grey_fn(vae_params, rgb_uint8)
    noisy01 = grey01 + noise_std * jax.random.normal(noise_key, grey01.shape)
    rgb01 = model.apply({"params": params}, noisy01).astype(jnp.float32)
    terms = {k: jnp.mean(v) for k, v in colorizer_losses(rgb01, rgb_uint8, grey01).items()}
    value = terms["color_mse"] + luminance_weight * terms["luminance_mse"]
    return value, {"loss": value, **terms, "psnr_db": jnp.mean(losses.psnr(rgb_uint8, rgb01))}

  return loss


def make_eval_step(
  model: nn.Module, config: ml_collections.ConfigDict, grey_fn: GreyInput
) -> Callable:
  """Jitted ``eval_step(params, rgb_uint8, mask, key, vae_params) -> sums`` of per-image metrics.

  No input noise. ``grey_psnr_db`` scores the grey input itself as the
  colour image: the yardstick a colouriser has to beat.
  """
  luminance_weight = config.loss.luminance_weight

  def eval_step(params, rgb_uint8, mask, key, vae_params):
    del key  # evaluation is deterministic
    grey01 = grey_fn(vae_params, rgb_uint8)
    rgb01 = model.apply({"params": params}, grey01)
    per_image = colorizer_losses(rgb01, rgb_uint8, grey01)
    per_image["loss"] = per_image["color_mse"] + luminance_weight * per_image["luminance_mse"]
    per_image["psnr_db"] = losses.psnr(rgb_uint8, rgb01)
    per_image["grey_psnr_db"] = losses.psnr(rgb_uint8, jnp.repeat(grey01, 3, axis=-1))
    return {k: jnp.sum(v * mask) for k, v in per_image.items()}

  return jax.jit(eval_step)


def evaluate(
  eval_step: Callable, params: Any, vae_params: Any, rgb_uint8: np.ndarray, batch_size: int
) -> dict:
  """Held-out means of ``make_eval_step``'s metrics, as floats."""
  step = functools.partial(eval_step, vae_params=vae_params)
  means = batching.batch_means(step, params, rgb_uint8, batch_size, jax.random.key(0))
  return {k: float(v) for k, v in means.items()}


def build_task(
  config: ml_collections.ConfigDict,
  dataset: Dataset,
  keys: dict[str, jax.Array],
  val_images: np.ndarray,
) -> Task:
  """What the trainer needs to train a colouriser (``vae_jax.trainer.Task``)."""
  del keys  # evaluation is deterministic and the grids show fixed held-out images
  shape = dataset.image_shape
  model = build_colorizer(config.model, shape)  # evaluation and grids in float32
  train_model = build_colorizer(config.model, shape, jnp.dtype(config.train.compute_dtype))
  grey_fn, vae_params = grey_input(config.colorizer.vae_workdir, shape)
  eval_step = make_eval_step(model, config, grey_fn)
  grid_images = val_images[: config.train.num_grid_images]
  grid_grey01 = grey_fn(vae_params, jnp.asarray(grid_images))
  apply_fn = jax.jit(model.apply)

  def grids(params):
    rgb01 = apply_fn({"params": params}, grid_grey01)
    tiles = images.comparison_tiles(
      images.to_uint8(grid_grey01), images.to_uint8(rgb01), grid_images
    )
    return {"colorize": images.make_grid(tiles.reshape((-1,) + tiles.shape[2:]), tiles.shape[1])}

  def init_params(key):
    return model.init(key, jnp.zeros((1,) + shape[:2] + (1,), jnp.float32))["params"]

  return Task(
    init_params=init_params,
    loss=make_loss(train_model, config, grey_fn),
    evaluate=lambda params: evaluate(
      eval_step, params, vae_params, val_images, config.train.eval_batch_size
    ),
    grids=grids,
    summary=lambda r: (
      f"colour PSNR {r['psnr_db']:.2f} dB (grey input {r['grey_psnr_db']:.2f} dB), "
      f"loss {r['loss']:.5f}"
    ),
    divergence_hint="Try a lower --config.opt.learning_rate or a smaller --config.opt.grad_clip.",
    constants=vae_params,
  )


SPEC = TaskSpec(build=build_task)
