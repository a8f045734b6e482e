"""Colourisers: grey images (B×H×W×1 on [0, 1]) → RGB images (B×H×W×3, unclipped, on [0, 1]).

Two models, registered by ``config.model.name`` (a registry of its own: a
colouriser is not a VAE and has no encoder, latent or likelihood):

* ``stacknn``: the reference blog's "StackNN", layer for layer. A
  transposed convolution maps the grey image to a larger feature map
  (1→10 channels, k5 s2: 30→63), a convolution shrinks it (10→5, k5: 63→59),
  and two dense layers with no activation between them (5·59·59 = 17405 →
  5·30·30 = 4500 → 3·30·30 = 2700) produce the colour image. On 30×30
  inputs that is 90,481,215 parameters, 99.98 % of them in the two dense
  layers, which act as one rank-4500 linear map from features to pixels:
  nothing in it knows that neighbouring pixels are related.
* ``conv`` (the default): a small U-Net of 3×3 convolutions that predicts
  colour and keeps luminance. Its output is the input luminance plus a
  learned correction, and two chroma planes (B − Y, R − Y) from which RGB is
  assembled so that 0.30 R + 0.59 G + 0.11 B equals that luminance exactly.
  The last layer starts at zero, so an untrained model returns the grey
  image itself, and training only has to learn colour. ~0.1 M parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.errors import ConfigError

ImageShape = tuple[int, int, int]

# The luminance the reference's loss uses (its ``(30 R + 59 G + 11 B) / 100``).
LUMA_WEIGHTS = (0.30, 0.59, 0.11)


def luminance(rgb_BHW3: jax.Array) -> jax.Array:
  """0.30 R + 0.59 G + 0.11 B, keeping a trailing channel axis (B×H×W×1)."""
  return rgb_BHW3 @ jnp.asarray(LUMA_WEIGHTS, rgb_BHW3.dtype)[:, None]


def rgb_from_luma_chroma(y: jax.Array, u: jax.Array, v: jax.Array) -> jax.Array:
  """RGB with luminance exactly ``y`` from chroma ``u = B − Y`` and ``v = R − Y`` (all B×H×W×1).

  G follows from ``wr R + wg G + wb B = Y`` and ``wr + wg + wb = 1``:
  ``G = Y − (wr v + wb u) / wg``.
  """
  wr, wg, wb = LUMA_WEIGHTS
  return jnp.concatenate([y + v, y - (wr * v + wb * u) / wg, y + u], axis=-1)


class StackNN(nn.Module):
  """The reference colouriser, with every size derived from the image shape.

  Attributes:
    image_shape: (H, W, 3) of the colour output.
    remap_channels: channels of the transposed convolution and of the convolution.
    kernel: kernel size of both (the transposed one has stride 2).
    hidden_per_pixel: the first dense layer has this many units per output
      pixel (the reference's 5·30·30).
    dtype: the dtype of the computation (parameters stay float32).
  """

  image_shape: ImageShape
  remap_channels: Sequence[int] = (10, 5)
  kernel: int = 5
  hidden_per_pixel: int = 5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, grey_BHW1: jax.Array) -> jax.Array:
    h, w, c = self.image_shape
    k = (self.kernel, self.kernel)
    x = nn.relu(
      nn.ConvTranspose(
        self.remap_channels[0], k, strides=(2, 2), padding="VALID", dtype=self.dtype, name="remap_0"
      )(grey_BHW1)
    )
    x = nn.relu(
      nn.Conv(self.remap_channels[1], k, padding="VALID", dtype=self.dtype, name="remap_1")(x)
    )
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.hidden_per_pixel * h * w, dtype=self.dtype, name="fc_0")(x)
    x = nn.Dense(h * w * c, dtype=self.dtype, name="fc_1")(x)
    return x.reshape((x.shape[0], h, w, c))


class ConvColorizer(nn.Module):
  """A small U-Net: two 3×3 convolutions a level, mean pooling down, nearest upsampling and skips.

  Attributes:
    features: channels at each level, from full resolution down; every level
      after the first halves the resolution (odd sizes round up).
    dtype: the dtype of the computation (parameters, the input and the output stay float32).
  """

  features: Sequence[int] = (32, 64)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, grey_BHW1: jax.Array) -> jax.Array:
    h = grey_BHW1
    skips = []
    for level, c in enumerate(self.features):
      if level:
        h = nn.avg_pool(h, (2, 2), strides=(2, 2), padding="SAME")
      h = nn.relu(nn.Conv(c, (3, 3), dtype=self.dtype, name=f"down_{level}_0")(h))
      h = nn.relu(nn.Conv(c, (3, 3), dtype=self.dtype, name=f"down_{level}_1")(h))
      skips.append(h)
    for level in reversed(range(len(self.features) - 1)):
      skip = skips[level]
      h = jax.image.resize(h, skip.shape[:3] + h.shape[3:], "nearest")
      h = nn.relu(
        nn.Conv(self.features[level], (3, 3), dtype=self.dtype, name=f"up_{level}")(
          jnp.concatenate([skip, h], axis=-1)
        )
      )
    dy, u, v = jnp.split(
      nn.Conv(3, (1, 1), kernel_init=nn.initializers.zeros, dtype=self.dtype, name="out")(h),
      3,
      axis=-1,
    )
    f32 = lambda a: a.astype(jnp.float32)
    return rgb_from_luma_chroma(grey_BHW1 + f32(dy), f32(u), f32(v))


def _stacknn(cfg: ml_collections.ConfigDict, image_shape: ImageShape, dtype: Any) -> nn.Module:
  del cfg  # the reference architecture has no knobs
  return StackNN(image_shape=image_shape, dtype=dtype)


def _conv(cfg: ml_collections.ConfigDict, image_shape: ImageShape, dtype: Any) -> nn.Module:
  del image_shape  # fully convolutional
  return ConvColorizer(features=tuple(cfg.features), dtype=dtype)


COLORIZERS: dict[str, Callable[[ml_collections.ConfigDict, ImageShape, Any], nn.Module]] = {
  "conv": _conv,
  "stacknn": _stacknn,
}


def check_colorizer_config(model_cfg: ml_collections.ConfigDict, image_shape: ImageShape) -> None:
  """Raise ``ConfigError`` unless ``model_cfg`` names a colouriser for images of ``image_shape``."""
  if model_cfg.name not in COLORIZERS:
    raise ConfigError(
      f"Unknown colouriser config.model.name {model_cfg.name!r}; choose one of "
      f"{sorted(COLORIZERS)}."
    )
  if image_shape[-1] != 3:
    raise ConfigError(
      f"The colouriser learns from RGB images: set config.data.channels=3, not {image_shape[-1]}."
    )
  if model_cfg.name == "conv":
    features = tuple(model_cfg.features)
    if not features or any(not isinstance(c, int) or c < 1 for c in features):
      raise ConfigError(f"config.model.features={features} must be channel counts ≥ 1.")


def build_colorizer(
  model_cfg: ml_collections.ConfigDict, image_shape: ImageShape, dtype: Any = jnp.float32
) -> nn.Module:
  """The colouriser named by ``model_cfg.name`` for colour images of ``image_shape`` (H, W, 3)."""
  check_colorizer_config(model_cfg, image_shape)
  return COLORIZERS[model_cfg.name](model_cfg, tuple(image_shape), dtype)
