"""The seed's fully connected VAE (900→512→96→25 → heads; mirror decoder)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLPEncoder(nn.Module):
  """ReLU between hidden layers, the last hidden layer linear (as the seed).

  Attributes:
    hidden: widths of the hidden layers (seed: 512, 96, 25).
    latent_dim: size of z.
    dtype: the dtype of the computation (parameters stay float32).
  """

  hidden: Sequence[int]
  latent_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = x_BHWC.reshape(x_BHWC.shape[0], -1)
    for i, width in enumerate(self.hidden):
      h = nn.Dense(width, dtype=self.dtype, name=f"dense_{i}")(h)
      if i < len(self.hidden) - 1:
        h = nn.relu(h)
    return (
      nn.Dense(self.latent_dim, dtype=self.dtype, name="mean")(h),
      nn.Dense(self.latent_dim, dtype=self.dtype, name="logvar")(h),
    )


class MLPDecoder(nn.Module):
  """z → hidden layers with ReLU → one dense layer to every pixel.

  Attributes:
    hidden: widths of the hidden layers (seed: 25, 96, 512).
    image_shape: (H, W, C) of the output.
    dtype: the dtype of the computation (parameters stay float32).
  """

  hidden: Sequence[int]
  image_shape: tuple[int, int, int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_BZ: jax.Array) -> jax.Array:
    h = z_BZ
    for i, width in enumerate(self.hidden):
      h = nn.relu(nn.Dense(width, dtype=self.dtype, name=f"dense_{i}")(h))
    out = nn.Dense(math.prod(self.image_shape), dtype=self.dtype, name="out")(h)
    return out.reshape((z_BZ.shape[0],) + tuple(self.image_shape))
