"""The seed's fully convolutional galaxy VAE, written the way XLA's CPU backend likes it.

Encoder: four stride-2 convolutions (no pooling), channels growing, the last
feature map flattened into mean and log-variance heads. Decoder: a dense
layer back to that feature map, then four ×2 upsampling stages, channels
shrinking to RGB, tanh output (mapped to the data scale by the VAE wrapper).

Each stride-2 convolution has a 2×2 kernel and is computed as space-to-depth
followed by a dense layer, and each ×2 upsampling as a dense layer followed by
depth-to-space (a kernel-2 stride-2 transposed convolution). These are exactly
those convolutions, but they run as plain matmuls, which XLA's CPU backend
runs many times faster than its k4 s2 ``nn.Conv``/``nn.ConvTranspose``
(BENCHMARKS.md). The hidden 1×1 mixing inside each stage (``mix``) adds depth
at matmul speed.

Kernel-2 upsamplings never mix neighbouring pixels: each 16×16 block of the
output is a separate function of z, and codes away from the training data
decode to a patchwork of unrelated blocks. An upsampling with neighbourhood
n > 1 (``up_neighbourhoods``, one entry per upsampling) is an n×n
convolution to 4× the channels followed by depth-to-space (a sub-pixel
convolution): each 2×2 output block reads n×n input pixels, blocks overlap,
and samples come out smooth. n = 2 is exactly a kernel-4 stride-2
transposed convolution, the ``ConvTranspose2d(4, stride=2, padding=1)`` of
a PyTorch FCN, shifted by one output pixel (each 2×2 block reads the input
pixel at its place and the next ones right and down); n = 3 is a kernel-6
one, 9/4 of the FLOPs. Used at the two coarsest stages they cost a fraction
of the step (BENCHMARKS.md); at full resolution they would cost several
times the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype


def space_to_depth(x_BHWC: jax.Array) -> jax.Array:
  """B×H×W×C → B×H/2×W/2×4C, grouping each 2×2 patch (row-major) into channels."""
  b, h, w, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def depth_to_space(x_BHWC: jax.Array) -> jax.Array:
  """Inverse of ``space_to_depth``: B×H×W×4C → B×2H×2W×C."""
  b, h, w, c4 = x_BHWC.shape
  c = c4 // 4
  x = x_BHWC.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, c)


def on_pixels(layer: nn.Module, x_BHWC: jax.Array) -> jax.Array:
  """``layer`` (acting on the last axis) applied to every pixel, as one B·H·W×C matrix.

  On the 4-D array XLA's CPU backend lays out the kernel gradient's dot with
  a transpose of the whole activation, which at full resolution costs more
  than the dot itself; on the flattened matrix it does not.
  """
  y = layer(x_BHWC.reshape(-1, x_BHWC.shape[-1]))
  return y.reshape(x_BHWC.shape[:-1] + y.shape[-1:])


class NeighbourhoodConv(nn.Module):
  """An n×n convolution (stride 1, ``"SAME"`` padding) computed as one matmul of the neighbourhoods.

  Each pixel's n×n neighbourhood (zero outside the image) is gathered into
  its channels, in ``nn.Conv``'s kernel order, and multiplied by the kernel
  as one matrix: the parameters, their initialisation and the result (up to
  float rounding) are ``nn.Conv(features, (n, n))``'s, at the speed of a
  matmul, where XLA's CPU convolutions and their gradients are slow.
  """

  features: int
  size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    n, (b, h, w, c) = self.size, x_BHWC.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (n, n, c, self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    x, kernel, bias = promote_dtype(x_BHWC, kernel, bias, dtype=self.dtype)
    low = (n - 1) // 2
    padded = jnp.pad(x, ((0, 0), (low, n - 1 - low), (low, n - 1 - low), (0, 0)))
    taps = [padded[:, dy : dy + h, dx : dx + w] for dy in range(n) for dx in range(n)]
    neighbourhoods = jnp.concatenate(taps, axis=-1).reshape(b * h * w, n * n * c)
    y = neighbourhoods @ kernel.reshape(n * n * c, self.features) + bias
    return y.reshape(b, h, w, self.features)


class FCNEncoder(nn.Module):
  """Stride-2 2×2 convolutions (space-to-depth + dense) with ReLU, then heads."""

  channels: Sequence[int]
  latent_dim: int
  mix: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = x_BHWC
    for i, c in enumerate(self.channels):
      h = nn.relu(on_pixels(nn.Dense(c, dtype=self.dtype, name=f"down_{i}"), space_to_depth(h)))
      for j in range(self.mix):
        h = nn.relu(on_pixels(nn.Dense(c, dtype=self.dtype, name=f"mix_{i}_{j}"), h))
    h = h.reshape(h.shape[0], -1)
    return (
      nn.Dense(self.latent_dim, dtype=self.dtype, name="mean")(h),
      nn.Dense(self.latent_dim, dtype=self.dtype, name="logvar")(h),
    )


class FCNDecoder(nn.Module):
  """Dense to the bottleneck map, then ×2 upsamplings (dense or n×n conv, then depth-to-space).

  Attributes:
    start_shape: (h, w, c) bottleneck feature map (image size / 2**len(channels)).
    channels: channels after each upsampling; the last is the image's.
    mix: hidden 1×1 layers after each upsampling.
    up_neighbourhoods: for each upsampling, the input pixels (per side)
      each 2×2 output block reads: 1 is a kernel-2 stride-2 transposed
      convolution (a dense layer), n > 1 an n×n sub-pixel convolution (2: a
      kernel-4 stride-2 transposed convolution). Default: 1 everywhere.
    dtype: the dtype of the computation (parameters stay float32).
  """

  start_shape: tuple[int, int, int]
  channels: Sequence[int]
  mix: int = 0
  up_neighbourhoods: Sequence[int] = ()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_BZ: jax.Array) -> jax.Array:
    h0, w0, c0 = self.start_shape
    h = nn.relu(nn.Dense(h0 * w0 * c0, dtype=self.dtype, name="dense")(z_BZ)).reshape(
      z_BZ.shape[0], h0, w0, c0
    )
    last = len(self.channels) - 1
    sizes = tuple(self.up_neighbourhoods) or (1,) * len(self.channels)
    for i, (c, size) in enumerate(zip(self.channels, sizes, strict=True)):
      if size == 1:
        h = on_pixels(nn.Dense(4 * c, dtype=self.dtype, name=f"up_{i}"), h)
      else:
        h = NeighbourhoodConv(4 * c, size, self.dtype, name=f"up_{i}")(h)
      h = depth_to_space(h)
      if i < last:
        h = nn.relu(h)
        for j in range(self.mix):
          h = nn.relu(on_pixels(nn.Dense(c, dtype=self.dtype, name=f"mix_{i}_{j}"), h))
    return h
