"""The seed's convolutional VAE for 30×30 grey faces.

Encoder: Conv 1→10 k5 → ReLU → MaxPool 2 → Conv 10→5 k5 s2 p1 → ReLU →
MaxPool 2 (5×3×3) → heads. Decoder: dense z→45 → 3×3×5 → ConvT 5→10 k4 s2 →
ConvT 10→3 k6 s3 → ConvT 3→1 k4 s1 (3→8→27→30), ReLU between. The seed ends
with a ReLU on the output; here the configured output activation maps it
onto the data scale instead.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
  return (size + 2 * pad - kernel) // stride + 1


def max_pool_2x2(x_BHWC: jax.Array) -> jax.Array:
  """2×2 max-pooling with stride 2, dropping an odd last row/column (as ``nn.max_pool`` and the seed do).

  Written as a reshape and a max rather than ``nn.max_pool``: XLA's CPU
  gradient of the windowed reduction (select-and-scatter) is ~4× slower than
  that of a plain reduction over the two new axes.
  """
  b, h, w, c = x_BHWC.shape
  x = x_BHWC[:, : h // 2 * 2, : w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def conv_encoder_geometry(
    image_size: int, kernels: Sequence[int], strides: Sequence[int], paddings: Sequence[int]
) -> int:
  """Spatial size after each conv + 2×2 max-pool of the encoder."""
  size = image_size
  for k, s, p in zip(kernels, strides, paddings):
    size = _conv_out(size, k, s, p) // 2
    if size < 1:
      raise ValueError(f"The conv encoder plan shrinks a {image_size}px image to nothing; use fewer layers.")
  return size


class ConvEncoder(nn.Module):
  """Conv → ReLU → MaxPool blocks, flattened into mean/log-variance heads."""

  channels: Sequence[int]
  kernels: Sequence[int]
  strides: Sequence[int]
  paddings: Sequence[int]
  latent_dim: int

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = x_BHWC
    for i, (c, k, s, p) in enumerate(zip(self.channels, self.kernels, self.strides, self.paddings)):
      h = nn.Conv(c, (k, k), strides=(s, s), padding=((p, p), (p, p)), name=f"conv_{i}")(h)
      h = max_pool_2x2(nn.relu(h))
    h = h.reshape(h.shape[0], -1)
    return nn.Dense(self.latent_dim, name="mean")(h), nn.Dense(self.latent_dim, name="logvar")(h)


class ConvDecoder(nn.Module):
  """Dense to the encoder's last feature map, then transposed convolutions.

  Attributes:
    start_shape: (h, w, c) of the feature map the dense layer produces.
    channels/kernels/strides: the transposed convolutions; the last channel
      count is the image's.
    image_shape: (H, W, C) the plan must reach exactly.
  """

  start_shape: tuple[int, int, int]
  channels: Sequence[int]
  kernels: Sequence[int]
  strides: Sequence[int]
  image_shape: tuple[int, int, int]

  @nn.compact
  def __call__(self, z_BZ: jax.Array) -> jax.Array:
    h0, w0, c0 = self.start_shape
    h = nn.Dense(h0 * w0 * c0, name="dense")(z_BZ).reshape(z_BZ.shape[0], h0, w0, c0)
    n = len(self.channels)
    for i, (c, k, s) in enumerate(zip(self.channels, self.kernels, self.strides)):
      h = nn.ConvTranspose(c, (k, k), strides=(s, s), padding="VALID", name=f"deconv_{i}")(h)
      if i < n - 1:
        h = nn.relu(h)
    if h.shape[1:] != tuple(self.image_shape):
      raise ValueError(
          f"The transposed-conv plan produces {h.shape[1:]} but the images are {tuple(self.image_shape)}; "
          "adjust config.model.decoder_kernels/decoder_strides or config.data.image_size."
      )
    return h
