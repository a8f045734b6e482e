"""The seed's convolutional VAE for 30×30 grey faces.

Encoder: Conv 1→10 k5 → ReLU → MaxPool 2 → Conv 10→5 k5 s2 p1 → ReLU →
MaxPool 2 (5×3×3) → heads. Decoder: dense z→45 → 3×3×5 → ConvT 5→10 k4 s2 →
ConvT 10→3 k6 s3 → ConvT 3→1 k4 s1 (3→8→27→30), ReLU between. The seed ends
with a ReLU on the output; here the configured output activation maps it
onto the data scale instead.

Every convolution, transposed ones included, runs as a banded matmul
(``vae_jax.models.banded_conv``): with 1–10 channels at 30×30, XLA's CPU
convolutions are its slowest code, and these are the seed's layers exactly,
with the parameters ``nn.Conv``/``nn.ConvTranspose`` would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from vae_jax.errors import ConfigError
from vae_jax.models.banded_conv import banded_conv, banded_conv_max_pool_2x2


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
  return (size + 2 * pad - kernel) // stride + 1


def conv_encoder_geometry(
  image_size: int, kernels: Sequence[int], strides: Sequence[int], paddings: Sequence[int]
) -> int:
  """Spatial size after each conv + 2×2 max-pool of the encoder."""
  size = image_size
  for k, s, p in zip(kernels, strides, paddings, strict=True):
    size = _conv_out(size, k, s, p) // 2
    if size < 1:
      raise ConfigError(
        f"The conv encoder plan shrinks a {image_size}px image to nothing; use fewer layers."
      )
  return size


def conv_decoder_size(start: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
  """Spatial size after the decoder's transposed convolutions (unpadded): ``(n − 1)·s + k`` each."""
  size = start
  for k, s in zip(kernels, strides, strict=True):
    size = (size - 1) * s + k
  return size


class ConvReluPool(nn.Module):
  """Conv → ReLU → 2×2 max-pool (odd last row/column dropped), as conv → pool → bias → ReLU.

  A per-channel bias and the ReLU commute with the max, so they act on the
  4× smaller pooled map, and the convolution and pooling run as one banded
  matmul with each pooling window's values in separate blocks. Parameters
  are ``nn.Conv``'s (``kernel`` H×W×in×out, ``bias``), initialised the same way.
  """

  features: int
  kernel_size: int
  stride: int
  padding: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    k, p = self.kernel_size, self.padding
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (k, k, x_BHWC.shape[-1], self.features)
    )
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    x, kernel, bias = promote_dtype(x_BHWC, kernel, bias, dtype=self.dtype)
    return nn.relu(
      banded_conv_max_pool_2x2(x, kernel, (self.stride, self.stride), ((p, p), (p, p))) + bias
    )


class ConvEncoder(nn.Module):
  """Conv → ReLU → MaxPool blocks, flattened into mean/log-variance heads."""

  channels: Sequence[int]
  kernels: Sequence[int]
  strides: Sequence[int]
  paddings: Sequence[int]
  latent_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = x_BHWC
    for i, (c, k, s, p) in enumerate(
      zip(self.channels, self.kernels, self.strides, self.paddings, strict=True)
    ):
      h = ConvReluPool(c, k, s, p, self.dtype, name=f"conv_{i}")(h)
    h = h.reshape(h.shape[0], -1)
    return (
      nn.Dense(self.latent_dim, dtype=self.dtype, name="mean")(h),
      nn.Dense(self.latent_dim, dtype=self.dtype, name="logvar")(h),
    )


class ConvDecoder(nn.Module):
  """Dense to the encoder's last feature map, then transposed convolutions.

  Each transposed convolution (kernel k, stride s, no padding, the kernel not
  flipped: ``nn.ConvTranspose(padding="VALID")``, with the same parameters)
  is written as the convolution it is: input dilated by s, padded by k - 1.

  Attributes:
    start_shape: (h, w, c) of the feature map the dense layer produces.
    channels/kernels/strides: the transposed convolutions; the last channel
      count is the image's.
    dtype: the dtype of the computation (parameters stay float32).

  The plan must reach the image's size (``conv_decoder_size``; the model
  registry checks it).
  """

  start_shape: tuple[int, int, int]
  channels: Sequence[int]
  kernels: Sequence[int]
  strides: Sequence[int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_BZ: jax.Array) -> jax.Array:
    h0, w0, c0 = self.start_shape
    h = nn.Dense(h0 * w0 * c0, dtype=self.dtype, name="dense")(z_BZ).reshape(
      z_BZ.shape[0], h0, w0, c0
    )
    n = len(self.channels)
    for i, (c, k, s) in enumerate(zip(self.channels, self.kernels, self.strides, strict=True)):
      h = nn.Conv(
        c,
        (k, k),
        padding=((k - 1, k - 1), (k - 1, k - 1)),
        input_dilation=(s, s),
        conv_general_dilated=banded_conv,
        dtype=self.dtype,
        name=f"deconv_{i}",
      )(h)
      if i < n - 1:
        h = nn.relu(h)
    return h
