"""The VAE as a task on the trainer: its ELBO loss, held-out evaluation and training grids.

Randomness: step ``n``'s key (``fold_in(train_key, n)``, from the trainer)
is split into the reparameterisation key and the augmentation key, so a
resumed run draws exactly the noise an uninterrupted one would; evaluation
and the grids use the run's fixed ``eval`` and ``sample`` keys.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax import images, losses, samplers
from vae_jax.data.augment import augment
from vae_jax.data.dataset import Dataset, load_images
from vae_jax.elbo import elbo_terms, heldout_metrics, make_eval_step
from vae_jax.inference import in_batches
from vae_jax.models import VAE, build_model, image_shape
from vae_jax.trainer import (
  ParamGroups,
  Task,
  TaskSpec,
  TrainState,
  create_train_state,
  fit,
  make_optimizer,
  make_train_step,
)
from vae_jax.trainer.state import LossFn

DIVERGENCE_HINT = (
  "Try a lower --config.opt.learning_rate, a smaller --config.opt.grad_clip, a larger "
  "--config.loss.scale, or a KL warm-up (--config.loss.warmup_steps)."
)


def make_loss(model: nn.Module, config: ml_collections.ConfigDict) -> LossFn:
  """The training objective: −ELBO (continuous likelihood, β, warm-up, free bits), batch mean."""
  loss_cfg = config.loss

  def loss(params, x_uint8, key, step, constants):
    del constants
    z_key, augment_key = jax.random.split(key)
    x_uint8 = augment(x_uint8, augment_key, config.data)
    terms = elbo_terms(model, params, x_uint8, z_key, loss_cfg.likelihood, discretized=False)
    kl_objective = losses.kl_with_free_bits(terms["kl_BZ"], loss_cfg.free_bits)
    weight = losses.kl_weight(step, loss_cfg.beta, loss_cfg.warmup_steps)
    value = jnp.mean(terms["rec"] + weight * kl_objective)
    recon = losses.mean_image(loss_cfg.likelihood, terms["decoded"])
    return value, {
      "loss": value,
      "rec_nats": jnp.mean(terms["rec"]),
      "kl_nats": jnp.mean(terms["kl_BZ"].sum(-1)),
      "kl_weight": weight,
      "psnr_db": jnp.mean(losses.psnr(x_uint8, recon)),
      "log_scale": jnp.mean(terms["log_scale"]),  # a scale per pixel is logged as its mean
    }

  return loss


def make_grids_fn(model: nn.Module, likelihood: str, num_prior: int) -> Callable:
  """Jitted ``(params, images_uint8, key) -> (recon01, prior01)``: reconstructions, prior draws."""

  def grids(params, x_uint8, key):
    def decode(z):
      return losses.mean_image(likelihood, model.apply({"params": params}, z, method=model.decode))

    mean, _ = model.apply({"params": params}, x_uint8, method=model.encode)
    return decode(mean), decode(jax.random.normal(key, (num_prior, mean.shape[-1])))

  return jax.jit(grids)


def training_grids(grids_fn: Callable, params, val_images: np.ndarray, key: jax.Array) -> dict:
  """Inputs with their reconstructions on the row below, and a square of prior samples."""
  recon, prior = (images.to_uint8(a) for a in grids_fn(params, val_images, key))
  tiles = images.interleave_rows([val_images, recon], math.ceil(math.sqrt(len(val_images))))
  return {
    "recon": images.make_grid(tiles.reshape((-1,) + tiles.shape[2:]), tiles.shape[1]),
    "prior": images.make_grid(prior, math.ceil(math.sqrt(len(prior)))),
  }


PARAM_GROUPS = ParamGroups(labels=VAE.optimizer_groups, decayed=VAE.weight_decayed)


def init_params_fn(model: nn.Module, shape: tuple[int, int, int]) -> Callable[[jax.Array], Any]:
  """``key -> params`` of a fresh ``model`` for images of ``shape``."""

  def init_params(key):
    return model.init(key, jnp.zeros((1,) + shape, jnp.uint8), jax.random.key(0))["params"]

  return init_params


def standalone_training(
  config: ml_collections.ConfigDict,
  key: jax.Array,
  total_steps: int | None = None,
  tx: optax.GradientTransformation | None = None,
) -> tuple[nn.Module, TrainState, Callable]:
  """``(model, initial state, jitted step)`` as ``fit`` builds them, without data or a workdir.

  For benchmarks and notebooks that drive steps themselves:
  ``state, metrics = step(state, batch_uint8, train_key)``. ``total_steps``
  (default ``config.train.steps``) sets the learning-rate schedule's length;
  ``tx`` replaces the config's optimiser.
  """
  shape = image_shape(config.data)
  model = build_model(config.model, config.loss, shape)
  train_model = build_model(config.model, config.loss, shape, jnp.dtype(config.train.compute_dtype))
  tx = tx or make_optimizer(config.opt, total_steps or config.train.steps, PARAM_GROUPS)
  state = create_train_state(init_params_fn(model, shape), tx, key, config.train.ema_decay > 0)
  step = make_train_step(
    make_loss(train_model, config), config.train.ema_decay, config.train.steps_per_dispatch
  )
  return model, state, step


def make_sampler_refresh(model: VAE, seed: int, dataset: Dataset) -> Callable | None:
  """``(params, step, workdir) -> None``: fit the ``gmm`` sampler to ``step``'s codes and keep it.

  The same training images (the first ``samplers.fit_images``) at every
  checkpoint; loaded once here. None without training images.
  """
  count = samplers.fit_images(dataset.image_shape)
  if not len(dataset.train):
    return None
  train_images = load_images(dataset.train, dataset.preprocess, count, desc="sampler images")
  encode = jax.jit(lambda params, x: model.apply({"params": params}, x, method=model.encode))

  def refresh(params, step: int, workdir: Path) -> None:
    mixture = samplers.fit(
      lambda x: in_batches(functools.partial(encode, params), x), train_images, seed, step
    )
    if jax.process_index() == 0:
      samplers.save(mixture, workdir)

  return refresh


def build_task(
  config: ml_collections.ConfigDict,
  dataset: Dataset,
  keys: dict[str, jax.Array],
  val_images: np.ndarray,
) -> Task:
  """The VAE's model, ELBO loss, evaluation and grids, as the trainer takes them (``Task``)."""
  shape, likelihood = dataset.image_shape, config.loss.likelihood
  model = build_model(config.model, config.loss, shape)  # evaluation and grids in float32
  train_model = build_model(config.model, config.loss, shape, jnp.dtype(config.train.compute_dtype))
  eval_step = make_eval_step(model, likelihood)
  grid_images = val_images[: config.train.num_grid_images]
  grids_fn = make_grids_fn(model, likelihood, num_prior=max(16, len(grid_images)))
  refresh_sampler = make_sampler_refresh(model, config.seed, dataset)

  return Task(
    init_params=init_params_fn(model, shape),
    loss=make_loss(train_model, config),
    evaluate=lambda params: heldout_metrics(
      eval_step, params, val_images, config.train.eval_batch_size, keys["eval"]
    ),
    grids=lambda params: training_grids(grids_fn, params, grid_images, keys["sample"]),
    summary=lambda r: (
      f"-ELBO {r['neg_elbo_nats']:.1f} nats ({r['bits_per_dim']:.3f} bits/dim), "
      f"PSNR {r['psnr_db']:.2f} dB (pooled {r['pooled_psnr_db']:.2f} dB)"
    ),
    divergence_hint=DIVERGENCE_HINT,
    param_groups=PARAM_GROUPS,
    after_checkpoint=refresh_sampler,
  )


SPEC = TaskSpec(build=build_task, resume_fields=("loss.likelihood",))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> TrainState:
  """Train the VAE ``config`` describes in ``workdir``, resuming from its newest checkpoint."""
  return fit(config, workdir, SPEC)
