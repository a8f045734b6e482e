"""Model registry: ``config.model.name`` → a VAE built for the data's shape."""

from __future__ import annotations

import math
from collections.abc import Callable

import ml_collections

from vae_jax.models.conv import ConvDecoder, ConvEncoder, conv_encoder_geometry
from vae_jax.models.fcn import FCNDecoder, FCNEncoder
from vae_jax.models.mlp import MLPDecoder, MLPEncoder
from vae_jax.models.vae import VAE

ImageShape = tuple[int, int, int]


def _mlp(cfg: ml_collections.ConfigDict, image_shape: ImageShape):
  return (
    MLPEncoder(hidden=tuple(cfg.encoder_hidden), latent_dim=cfg.latent_dim),
    MLPDecoder(hidden=tuple(cfg.decoder_hidden), image_shape=image_shape),
  )


def _conv(cfg: ml_collections.ConfigDict, image_shape: ImageShape):
  for side, names in (
    ("encoder", ("channels", "kernels", "strides", "paddings")),
    ("decoder", ("kernels", "strides")),
  ):
    layers = {f"{side}_{n}": tuple(cfg[f"{side}_{n}"]) for n in names}
    if side == "decoder":  # its channels leave out the last layer's, the image's
      layers["decoder_channels"] = tuple(cfg.decoder_channels) + ("image",)
    if len({len(v) for v in layers.values()}) > 1:
      raise ValueError(f"config.model needs one entry per layer in each of {layers}.")
  size = conv_encoder_geometry(
    image_shape[0], cfg.encoder_kernels, cfg.encoder_strides, cfg.encoder_paddings
  )
  encoder = ConvEncoder(
    channels=tuple(cfg.encoder_channels),
    kernels=tuple(cfg.encoder_kernels),
    strides=tuple(cfg.encoder_strides),
    paddings=tuple(cfg.encoder_paddings),
    latent_dim=cfg.latent_dim,
  )
  decoder = ConvDecoder(
    start_shape=(size, size, cfg.encoder_channels[-1]),
    channels=tuple(cfg.decoder_channels) + (image_shape[-1],),
    kernels=tuple(cfg.decoder_kernels),
    strides=tuple(cfg.decoder_strides),
    image_shape=image_shape,
  )
  return encoder, decoder


def _fcn(cfg: ml_collections.ConfigDict, image_shape: ImageShape):
  levels = len(cfg.channels)
  sizes = tuple(cfg.get("up_neighbourhoods", ()))
  if sizes and (len(sizes) != levels or any(s < 1 for s in sizes)):
    raise ValueError(
      f"config.model.up_neighbourhoods needs one size (1, 2, 3, …) per upsampling ({levels}); got {sizes}."
    )
  size = image_shape[0] // 2**levels
  if size * 2**levels != image_shape[0] or image_shape[0] != image_shape[1]:
    raise ValueError(
      f"The FCN halves the image {levels} times, so config.data.image_size must be a multiple of "
      f"{2**levels}; got {image_shape[:2]}."
    )
  encoder = FCNEncoder(channels=tuple(cfg.channels), latent_dim=cfg.latent_dim, mix=cfg.mix)
  decoder = FCNDecoder(
    start_shape=(size, size, cfg.channels[-1]),
    channels=tuple(reversed(cfg.channels[:-1])) + (image_shape[-1],),
    mix=cfg.mix,
    up_neighbourhoods=sizes,
  )
  return encoder, decoder


REGISTRY: dict[str, Callable] = {"mlp": _mlp, "conv": _conv, "fcn": _fcn}


def build_model(
  model_cfg: ml_collections.ConfigDict, loss_cfg: ml_collections.ConfigDict, image_shape: ImageShape
) -> VAE:
  """Build the VAE named by ``model_cfg.name`` for images of ``image_shape`` (H, W, C)."""
  if model_cfg.name not in REGISTRY:
    raise ValueError(
      f"Unknown config.model.name {model_cfg.name!r}; choose one of {sorted(REGISTRY)}."
    )
  if model_cfg.latent_dim < 1:
    raise ValueError(f"config.model.latent_dim must be at least 1; got {model_cfg.latent_dim}.")
  if loss_cfg.likelihood == "bernoulli" and model_cfg.output_activation != "none":
    raise ValueError(
      "The Bernoulli likelihood takes logits: set config.model.output_activation='none'."
    )
  encoder, decoder = REGISTRY[model_cfg.name](model_cfg, tuple(image_shape))
  return VAE(
    encoder=encoder,
    decoder=decoder,
    output_activation=model_cfg.output_activation,
    learn_scale=loss_cfg.likelihood == "gaussian_learned",
    init_log_scale=math.log(loss_cfg.scale),
    latent_dim=model_cfg.latent_dim,
    learned_prior=model_cfg.get("learned_prior", False),
  )
