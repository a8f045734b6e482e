"""Model registry: ``config.model.name`` → a VAE (or a colouriser) built for the data's shape.

``check_config`` says, before anything is built, whether a config's model
can take its images (layer plans, sizes); the builders then only build.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import ml_collections

from vae_jax.errors import ConfigError
from vae_jax.losses import PER_PIXEL_SCALE
from vae_jax.models.colorizer import build_colorizer, check_colorizer_config
from vae_jax.models.conv import (
  ConvDecoder,
  ConvEncoder,
  conv_decoder_size,
  conv_encoder_geometry,
)
from vae_jax.models.fcn import FCNDecoder, FCNEncoder
from vae_jax.models.mlp import MLPDecoder, MLPEncoder
from vae_jax.models.vae import VAE

__all__ = ["VAE", "build_colorizer", "build_model", "check_config", "image_shape"]

ImageShape = tuple[int, int, int]


def image_shape(data_cfg: ml_collections.ConfigDict) -> ImageShape:
  """(H, W, C) of the images a run's preprocessing produces."""
  return (data_cfg.image_size, data_cfg.image_size, data_cfg.channels)


def _sizes(cfg: ml_collections.ConfigDict, name: str, allow_empty: bool = False) -> tuple[int, ...]:
  """``cfg[name]`` as a tuple of whole numbers ≥ 1 (≥ 0 for paddings), or a ``ConfigError``."""
  if name not in cfg:
    raise ConfigError(f"config.model.{name} is missing: this model needs it.")
  values = tuple(cfg[name]) if isinstance(cfg[name], (list, tuple)) else None
  low = 0 if name.endswith("paddings") else 1
  if values is None or (not values and not allow_empty):
    raise ConfigError(f"config.model.{name}={cfg[name]!r} must be a list of whole numbers.")
  if any(not isinstance(v, int) or isinstance(v, bool) or v < low for v in values):
    raise ConfigError(f"config.model.{name}={values} must hold whole numbers ≥ {low}.")
  return values


def _mlp(cfg: ml_collections.ConfigDict, shape: ImageShape, dtype: Any):
  return (
    MLPEncoder(_sizes(cfg, "encoder_hidden"), cfg.latent_dim, dtype),
    MLPDecoder(_sizes(cfg, "decoder_hidden"), shape, dtype),
  )


def _conv(cfg: ml_collections.ConfigDict, shape: ImageShape, dtype: Any):
  encoder_layers = {n: _sizes(cfg, f"encoder_{n}") for n in ("channels", "kernels", "strides")}
  encoder_layers["paddings"] = _sizes(cfg, "encoder_paddings")
  # The decoder's channels leave out its last layer's, the image's.
  decoder_layers = {n: _sizes(cfg, f"decoder_{n}") for n in ("kernels", "strides")}
  decoder_channels = _sizes(cfg, "decoder_channels", allow_empty=True) + (shape[-1],)
  described = {
    "encoder": {f"encoder_{k}": v for k, v in encoder_layers.items()},
    "decoder": {
      **{f"decoder_{k}": v for k, v in decoder_layers.items()},
      "decoder_channels": decoder_channels[:-1] + ("(image)",),
    },
  }
  for side, layers in described.items():
    if len({len(v) for v in layers.values()}) > 1:
      raise ConfigError(f"config.model needs one entry per layer in each of {layers} ({side}).")
  size = conv_encoder_geometry(
    shape[0], encoder_layers["kernels"], encoder_layers["strides"], encoder_layers["paddings"]
  )
  out = conv_decoder_size(size, decoder_layers["kernels"], decoder_layers["strides"])
  if out != shape[0] or shape[0] != shape[1]:
    raise ConfigError(
      f"The transposed-conv plan produces {out}×{out} images but the data are "
      f"{shape[0]}×{shape[1]}; "
      "adjust config.model.decoder_kernels/decoder_strides or config.data.image_size."
    )
  encoder = ConvEncoder(
    encoder_layers["channels"],
    encoder_layers["kernels"],
    encoder_layers["strides"],
    encoder_layers["paddings"],
    cfg.latent_dim,
    dtype,
  )
  decoder = ConvDecoder(
    (size, size, encoder_layers["channels"][-1]),
    decoder_channels,
    decoder_layers["kernels"],
    decoder_layers["strides"],
    dtype,
  )
  return encoder, decoder


def _fcn(cfg: ml_collections.ConfigDict, shape: ImageShape, dtype: Any):
  channels = _sizes(cfg, "channels")
  levels = len(channels)
  sizes = _sizes(cfg, "up_neighbourhoods", allow_empty=True)
  if sizes and len(sizes) != levels:
    raise ConfigError(
      f"config.model.up_neighbourhoods needs one size (1, 2, 3, …) per upsampling ({levels}); "
      f"got {sizes}."
    )
  if not isinstance(cfg.mix, int) or cfg.mix < 0:
    raise ConfigError(f"config.model.mix={cfg.mix!r} must be a whole number ≥ 0.")
  size = shape[0] // 2**levels
  if size < 1 or size * 2**levels != shape[0] or shape[0] != shape[1]:
    raise ConfigError(
      f"The FCN halves the image {levels} times, so config.data.image_size must be a multiple of "
      f"{2**levels}; got {shape[:2]}."
    )
  encoder = FCNEncoder(channels, cfg.latent_dim, cfg.mix, dtype)
  decoder = FCNDecoder(
    (size, size, channels[-1]), tuple(reversed(channels[:-1])) + (shape[-1],), cfg.mix, sizes, dtype
  )
  return encoder, decoder


REGISTRY: dict[str, Callable] = {"mlp": _mlp, "conv": _conv, "fcn": _fcn}


def build_model(
  model_cfg: ml_collections.ConfigDict,
  loss_cfg: ml_collections.ConfigDict,
  shape: ImageShape,
  dtype: Any = jnp.float32,
) -> VAE:
  """The VAE named by ``model_cfg.name`` for images of ``shape`` (H, W, C), computing in ``dtype``.

  Raises:
    ConfigError: the model cannot take images of this shape, or its config is malformed.
  """
  if model_cfg.name not in REGISTRY:
    raise ConfigError(
      f"Unknown config.model.name {model_cfg.name!r}; choose one of {sorted(REGISTRY)}."
    )
  per_pixel = loss_cfg.likelihood in PER_PIXEL_SCALE
  out_shape = tuple(shape[:2]) + (shape[2] * (2 if per_pixel else 1),)  # the scale's channels too
  encoder, decoder = REGISTRY[model_cfg.name](model_cfg, out_shape, dtype)
  return VAE(
    encoder=encoder,
    decoder=decoder,
    output_activation=model_cfg.output_activation,
    learn_scale=loss_cfg.likelihood == "gaussian_learned",
    scale_per_pixel=per_pixel,
    init_log_scale=math.log(loss_cfg.scale),
    min_scale=loss_cfg.min_scale,
    dtype=dtype,
    latent_dim=model_cfg.latent_dim,
    learned_prior=model_cfg.learned_prior,
  )


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raise ``ConfigError`` unless the config's model can be built for its images."""
  shape = image_shape(config.data)
  if config.task == "colorizer":
    check_colorizer_config(config.model, shape)
  else:
    build_model(config.model, config.loss, shape)
