"""The colouriser: train a grey→RGB network, restore it, colour a VAE's grey samples.

Training pairs come from one RGB dataset (the shared pipeline with
``config.data.channels=3``): the target is the RGB image, the input its grey
version, computed inside the jitted step exactly as the data preprocessing's
PIL ``convert("L")`` does, and optionally passed through a trained VAE's
posterior-mean reconstruction (``config.colorizer.vae_workdir``) as the
reference did, so the colouriser learns to colour what a VAE produces.

Loss (the reference's, mean-reduced so its two terms weigh the same):
colour MSE to the RGB target + ``config.loss.luminance_weight`` × MSE between
the output's luminance (0.30 R + 0.59 G + 0.11 B) and the clean grey input.
Gaussian noise of standard deviation ``config.colorizer.input_noise`` (on the
[0, 1] scale) is added to the input from ``fold_in(train_key, step)``, so a
resumed run draws the noise an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax import images, losses, parallel, sampling
from vae_jax.config import load_config, workdir_path
from vae_jax.data.augment import augment
from vae_jax.data.pipeline import Dataset
from vae_jax.models.colorizer import build_colorizer, luminance
from vae_jax.restore import Run, image_shape, load_run, restore_params
from vae_jax.train import (
  Task,
  TrainState,
  batch_means,
  fit,
  jit_steps,
  make_optimizer,
  steps_per_dispatch,
)

TASK = "colorizer"


def grey_from_rgb(rgb_uint8: jax.Array) -> jax.Array:
  """uint8 B×H×W×3 → uint8 B×H×W×1, bit-exact with PIL's ``convert("L")`` (ITU-R 601 luma, rounded)."""
  r, g, b = (rgb_uint8[..., i : i + 1].astype(jnp.int32) for i in range(3))
  return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(jnp.uint8)


def colorizer_losses(
  rgb01: jax.Array, target_uint8: jax.Array, grey01: jax.Array
) -> dict[str, jax.Array]:
  """Per-image colour MSE against the target and luminance MSE against the grey input, shape (B,)."""
  per_image = lambda x: jnp.mean(x.reshape(x.shape[0], -1), axis=-1)
  return {
    "color_mse": per_image(jnp.square(rgb01 - losses.to_unit(target_uint8))),
    "luminance_mse": per_image(jnp.square(luminance(rgb01) - grey01)),
  }


@dataclasses.dataclass(frozen=True)
class GreyInput:
  """How an RGB batch becomes the colouriser's input: PIL luma, optionally a VAE's reconstruction of it.

  An instance is called as ``grey_fn(vae_params, rgb_uint8) -> grey01``
  (B×H×W×1) inside jitted steps; the VAE's parameters are an argument so they
  are not baked into the compiled program as constants.

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
    mean, _ = self.vae.apply({"params": vae_params}, grey, method=self.vae.encode)
    return losses.mean_image(
      self.likelihood, self.vae.apply({"params": vae_params}, mean, method=self.vae.decode)
    )


def grey_input(vae_workdir: str, shape: tuple[int, int, int]) -> tuple[GreyInput, Any]:
  """The ``GreyInput`` for ``config.colorizer.vae_workdir`` ("" for plain luma) and the VAE's parameters."""
  if not vae_workdir:
    return GreyInput(), None
  vae = load_run(vae_workdir)
  if image_shape(vae.config.data) != shape[:2] + (1,):
    raise ValueError(
      f"The VAE in {vae_workdir} models {image_shape(vae.config.data)} images; the colouriser's input must be "
      f"grey {shape[:2] + (1,)}. Train the colouriser at --config.data.image_size={vae.config.data.image_size} "
      "or use a grey VAE of this size."
    )
  return GreyInput(vae.model, vae.config.loss.likelihood), vae.params


def create_colorizer_state(
  model: nn.Module, tx: optax.GradientTransformation, shape: tuple[int, int, int], key: jax.Array
) -> TrainState:
  """Initialise a colouriser for RGB images of ``shape`` (jitted: one compile, no eager op-by-op init)."""

  @jax.jit
  def init(key):
    params = model.init(key, jnp.zeros((1,) + shape[:2] + (1,), jnp.float32))["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  return init(key)


def make_colorizer_step(
  model: nn.Module, config: ml_collections.ConfigDict, grey_fn: GreyInput
) -> Callable:
  """Jitted, state-donating ``step(state, rgb_uint8, train_key, vae_params) -> (state, metrics)``."""
  noise_std = config.colorizer.input_noise
  luminance_weight = config.loss.luminance_weight

  def loss_fn(params, noisy01, grey01, rgb_uint8):
    rgb01 = model.apply({"params": params}, noisy01)
    terms = {k: jnp.mean(v) for k, v in colorizer_losses(rgb01, rgb_uint8, grey01).items()}
    loss = terms["color_mse"] + luminance_weight * terms["luminance_mse"]
    return loss, {"loss": loss, **terms, "psnr_db": jnp.mean(losses.psnr(rgb_uint8, rgb01))}

  def step(state: TrainState, rgb_uint8: jax.Array, train_key: jax.Array, vae_params: Any):
    augment_key, noise_key = jax.random.split(jax.random.fold_in(train_key, state.step))
    rgb_uint8 = augment(rgb_uint8, augment_key, config.data)
    grey01 = grey_fn(vae_params, rgb_uint8)
    noisy01 = grey01 + noise_std * jax.random.normal(noise_key, grey01.shape)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, noisy01, grey01, rgb_uint8)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return state.apply_gradients(grads=grads), metrics

  return jit_steps(step, steps_per_dispatch(config.train))


def make_colorizer_eval_step(
  model: nn.Module, config: ml_collections.ConfigDict, grey_fn: GreyInput
) -> Callable:
  """Jitted ``eval_step(params, rgb_uint8, mask, key, vae_params) -> sums`` of per-image metrics (no input noise).

  ``grey_psnr_db`` scores the grey input itself as the colour image: the
  yardstick a colouriser has to beat.
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


def evaluate_colorizer(
  eval_step: Callable, params: Any, vae_params: Any, rgb_uint8: np.ndarray, batch_size: int
) -> dict:
  """Held-out means of ``make_colorizer_eval_step``'s metrics, as floats."""
  step = functools.partial(eval_step, vae_params=vae_params)
  means = batch_means(step, params, rgb_uint8, batch_size, jax.random.key(0))
  return {k: float(v) for k, v in means.items()}


def comparison_tiles(
  grey_uint8: np.ndarray,
  rgb_uint8: np.ndarray,
  target_uint8: np.ndarray | None = None,
  ncol: int = 8,
) -> np.ndarray:
  """R×C×H×W×3 tiles: each row of grey images above their colourised versions (and the originals, if given)."""
  groups = [np.repeat(grey_uint8, 3, axis=-1), rgb_uint8] + (
    [target_uint8] if target_uint8 is not None else []
  )
  return images.interleave_rows(groups, ncol)


def colorizer_task(
  config: ml_collections.ConfigDict,
  dataset: Dataset,
  keys: dict[str, jax.Array],
  val_images: np.ndarray,
) -> Task:
  """What ``fit`` needs to train a colouriser (see ``vae_jax.train.Task``)."""
  shape = dataset.image_shape
  model = build_colorizer(config.model, shape)
  grey_fn, vae_params = grey_input(config.colorizer.vae_workdir, shape)
  if vae_params is not None:  # beside the replicated train state on every device of fit's mesh
    vae_params = parallel.replicate(jax.device_get(vae_params), parallel.make_mesh())
  state = create_colorizer_state(
    model, make_optimizer(config.opt, config.train.steps), shape, keys["init"]
  )
  train_step = make_colorizer_step(model, config, grey_fn)
  eval_step = make_colorizer_eval_step(model, config, grey_fn)
  grid_images = val_images[: config.train.num_grid_images]
  grid_grey01 = grey_fn(vae_params, jnp.asarray(grid_images))
  apply_fn = jax.jit(model.apply)

  def pictures(params):
    grey01, rgb01 = grid_grey01, apply_fn({"params": params}, grid_grey01)
    tiles = comparison_tiles(images.to_uint8(grey01), images.to_uint8(rgb01), grid_images)
    return {"colorize": images.make_grid(tiles.reshape((-1,) + tiles.shape[2:]), tiles.shape[1])}

  return Task(
    state=state,
    train_step=lambda state, rgb, key: train_step(state, rgb, key, vae_params),
    evaluate=lambda params: evaluate_colorizer(
      eval_step, params, vae_params, val_images, config.train.eval_batch_size
    ),
    pictures=pictures,
    summary=lambda r: (
      f"colour PSNR {r['psnr_db']:.2f} dB (grey input {r['grey_psnr_db']:.2f} dB), loss {r['loss']:.5f}"
    ),
    divergence_hint="Try a lower --config.opt.learning_rate or a smaller --config.opt.grad_clip.",
  )


def train_colorizer(config: ml_collections.ConfigDict, workdir: str | Path) -> TrainState:
  """Train the colouriser ``config`` describes (``configs/colorizer.py``) in ``workdir``, resuming if it can.

  The workdir gets the same files as a VAE run (``vae_jax.train.fit``);
  ``samples/training/colorize.png`` shows held-out grey inputs, their colourised
  versions and the originals, row by row.
  """
  if config.get("task") != TASK:
    raise ValueError(
      f"train_colorizer wants a colouriser config (config.task={TASK!r}): configs/colorizer.py."
    )
  if config.data.channels != 3:
    raise ValueError(
      f"The colouriser learns from RGB images: set config.data.channels=3, not {config.data.channels}."
    )
  unsupported = {
    "ema_decay": 0.0,
    "compute_dtype": "float32",
  }  # VAE-only train options, and their off values
  for name, off in unsupported.items():
    if config.train.get(name, off) != off:
      raise ValueError(
        f"The colouriser does not implement config.train.{name} (a VAE training option); leave it at {off!r}."
      )
  return fit(config, workdir, colorizer_task)


def load_colorizer(workdir: str | Path) -> Run:
  """``(config, model, params)`` of a colouriser workdir's latest checkpoint."""
  workdir = workdir_path(workdir)
  config = load_config(workdir)
  if config.get("task") != TASK:
    raise ValueError(
      f"{workdir} holds a {config.get('task', 'vae')!r} run, not a colouriser (configs/colorizer.py)."
    )
  shape = image_shape(config.data)
  model = build_colorizer(config.model, shape)
  tx = make_optimizer(config.opt, config.train.steps)
  params = restore_params(
    workdir,
    lambda: create_colorizer_state(model, tx, shape, jax.random.key(0)),
    "python bin/train.py --config configs/colorizer.py --workdir",
  )
  return Run(config, model, params)


@functools.partial(jax.jit, static_argnames=("model",))
def _colorize(model: nn.Module, params: Any, grey_uint8: jax.Array) -> jax.Array:
  return jnp.clip(model.apply({"params": params}, losses.to_unit(grey_uint8)), 0.0, 1.0)


def colorize(colorizer: Run, grey_uint8: np.ndarray) -> np.ndarray:
  """Colour uint8 grey images N×H×W×1 with a restored colouriser; uint8 N×H×W×3."""
  shape = image_shape(colorizer.config.data)
  if tuple(grey_uint8.shape[1:]) != shape[:2] + (1,):
    raise ValueError(
      f"This colouriser takes grey {shape[:2] + (1,)} images; got {tuple(grey_uint8.shape[1:])}."
    )
  return images.to_uint8(
    np.asarray(_colorize(colorizer.model, colorizer.params, jnp.asarray(grey_uint8)))
  )


def colorize_prior(
  vae: Run, colorizer: Run, n: int, key: jax.Array, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
  """``n`` grey decoded prior draws z ~ N(0, temperature² I) and their colourised versions (uint8)."""
  if vae.config.data.channels != 1:
    raise ValueError("The colouriser colours grey samples; this VAE models RGB images already.")
  z = temperature * jax.random.normal(key, (n, vae.config.model.latent_dim))
  grey = sampling.decode(vae, np.asarray(z))
  return grey, colorize(colorizer, grey)


def colorize_picture(
  vae: Run, colorizer_workdir: str | Path, n: int, seed: int, temperature: float = 1.0
) -> np.ndarray:
  """The ``colorize`` kind of ``bin/sample.py``: rows of grey prior samples above their colourised versions."""
  grey, rgb = colorize_prior(
    vae, load_colorizer(colorizer_workdir), n, jax.random.key(seed), temperature
  )
  caption = f"grey prior samples (temperature {temperature:g}) above their colourised versions"
  return sampling.picture(comparison_tiles(grey, rgb), caption=caption)
