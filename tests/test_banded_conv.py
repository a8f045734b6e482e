"""Convolutions as banded matmuls: equal to XLA's convolutions, pooling and gradients included."""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import vae_jax.models.banded_conv as banded_conv_module
from vae_jax.models.banded_conv import banded_conv, banded_conv_max_pool_2x2
from vae_jax.models.conv import ConvDecoder, ConvEncoder

_NHWC = ("NHWC", "HWIO", "NHWC")


def _arrays(x_shape, k_shape, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=x_shape), jnp.float32), jnp.asarray(
    rng.normal(size=k_shape), jnp.float32
  )


# (input H, W, kernel h, w, stride, input dilation, padding): every combination of strides,
# dilations and paddings, on odd and even sizes, including outputs whose rows read only padding or
# dilation zeros.
_GEOMETRIES = [
  (7, 8, 3, 2, s, d, p) if (s + d) % 2 else (8, 5, 1, 4, s, d, p)
  for s, d, p in itertools.product([1, 2, 3], [1, 2, 3], [((0, 1), (2, 0)), ((2, 2), (1, 1))])
]


@pytest.mark.parametrize("min_columns", [1, 10**6], ids=["column_blocks", "whole_rows"])
@pytest.mark.parametrize("h,w,kh,kw,stride,dilation,padding", _GEOMETRIES)
def test_banded_conv_is_xla_convolution(
  h, w, kh, kw, stride, dilation, padding, min_columns, monkeypatch
):
  monkeypatch.setattr(banded_conv_module, "_MIN_MATMUL_COLUMNS", min_columns)
  x, kernel = _arrays((2, h, w, 3), (kh, kw, 3, 4))
  args = ((stride, stride), padding)
  expected = lax.conv_general_dilated(
    x, kernel, *args, lhs_dilation=(dilation,) * 2, dimension_numbers=_NHWC
  )
  got = banded_conv(x, kernel, *args, lhs_dilation=(dilation,) * 2, dimension_numbers=_NHWC)
  assert got.shape == expected.shape
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)


# The seed conv VAE's five layers: its two convolutions and its three transposed ones (as dilated
# inputs).
_SEED_LAYERS = {
  "conv_0": ((30, 30, 1), (5, 5, 1, 10), 1, 0, 1),
  "conv_1": ((13, 13, 10), (5, 5, 10, 5), 2, 1, 1),
  "deconv_0": ((3, 3, 5), (4, 4, 5, 10), 1, 3, 2),
  "deconv_1": ((8, 8, 10), (6, 6, 10, 3), 1, 5, 3),
  "deconv_2": ((27, 27, 3), (4, 4, 3, 1), 1, 3, 1),
}


@pytest.mark.parametrize("layer", sorted(_SEED_LAYERS))
def test_banded_conv_gradients_are_xla_convolution_gradients(layer):
  image, kernel_shape, stride, pad, dilation = _SEED_LAYERS[layer]
  x, kernel = _arrays((3,) + image, kernel_shape, seed=1)

  def loss(conv):
    geometry = {"lhs_dilation": (dilation,) * 2, "dimension_numbers": _NHWC}
    return lambda x, k: jnp.sum(jnp.sin(conv(x, k, (stride,) * 2, ((pad, pad),) * 2, **geometry)))

  expected = jax.jit(jax.grad(loss(lax.conv_general_dilated), argnums=(0, 1)))(x, kernel)
  got = jax.jit(jax.grad(loss(banded_conv), argnums=(0, 1)))(x, kernel)
  for g, e in zip(got, expected):
    np.testing.assert_allclose(
      np.asarray(g), np.asarray(e), rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(e)))
    )


@pytest.mark.parametrize(
  "image,kernel_shape,stride,pad,min_columns",
  [
    ((30, 30, 1), (5, 5, 1, 10), 1, 0, 64),  # the seed's layers, in column blocks
    ((13, 13, 10), (5, 5, 10, 5), 2, 1, 64),
    ((11, 12, 2), (3, 2, 2, 4), 1, 1, 10**6),  # odd rows, whole rows
    ((11, 13, 2), (3, 2, 2, 4), 1, 1, 1),  # odd columns, blocks of one window
  ],
)
def test_banded_conv_max_pool_is_conv_then_max_pool(
  image, kernel_shape, stride, pad, min_columns, monkeypatch
):
  monkeypatch.setattr(banded_conv_module, "_MIN_MATMUL_COLUMNS", min_columns)
  x, kernel = _arrays((3,) + image, kernel_shape, seed=2)

  def reference(x, k):
    y = lax.conv_general_dilated(x, k, (stride,) * 2, ((pad, pad),) * 2, dimension_numbers=_NHWC)
    return nn.max_pool(
      y, (2, 2), strides=(2, 2)
    )  # drops an odd last row/column, as the seed's pooling

  fused = lambda x, k: banded_conv_max_pool_2x2(x, k, (stride,) * 2, ((pad, pad),) * 2)
  np.testing.assert_allclose(
    np.asarray(fused(x, kernel)), np.asarray(reference(x, kernel)), rtol=1e-5, atol=1e-4
  )
  expected = jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.sin(reference(x, k))), argnums=(0, 1)))(
    x, kernel
  )
  got = jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.sin(fused(x, k))), argnums=(0, 1)))(x, kernel)
  for g, e in zip(got, expected):
    np.testing.assert_allclose(
      np.asarray(g), np.asarray(e), rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(e)))
    )


def test_pooling_gives_a_tied_window_s_gradient_to_one_value():
  """Flat regions give equal values in a window; the gradient goes to the first, as in PyTorch."""
  x = jnp.ones((1, 4, 4, 1))
  kernel = jnp.ones((1, 1, 1, 1))
  grad = jax.grad(lambda x: jnp.sum(banded_conv_max_pool_2x2(x, kernel, (1, 1), ((0, 0), (0, 0)))))(
    x
  )
  expected = np.zeros((4, 4))
  expected[::2, ::2] = 1.0  # the top-left of each 2×2 window
  np.testing.assert_array_equal(np.asarray(grad)[0, :, :, 0], expected)


def test_conv_vae_layers_are_nn_conv_and_nn_conv_transpose():
  """The parameter tree of the plain linen layers, and with the same parameters the same outputs."""

  class LinenEncoder(nn.Module):
    @nn.compact
    def __call__(self, x):
      for i, (c, s, p) in enumerate([(10, 1, 0), (5, 2, 1)]):
        x = nn.max_pool(
          nn.relu(nn.Conv(c, (5, 5), (s, s), ((p, p), (p, p)), name=f"conv_{i}")(x)), (2, 2), (2, 2)
        )
      x = x.reshape(x.shape[0], -1)
      return nn.Dense(10, name="mean")(x), nn.Dense(10, name="logvar")(x)

  class LinenDecoder(nn.Module):
    @nn.compact
    def __call__(self, z):
      h = nn.Dense(45, name="dense")(z).reshape(-1, 3, 3, 5)
      for i, (c, k, s) in enumerate([(10, 4, 2), (3, 6, 3), (1, 4, 1)]):
        h = nn.ConvTranspose(c, (k, k), (s, s), padding="VALID", name=f"deconv_{i}")(h)
        h = nn.relu(h) if i < 2 else h
      return h

  x = jax.random.normal(jax.random.key(0), (2, 30, 30, 1))
  z = jax.random.normal(jax.random.key(1), (2, 10))
  pairs = [
    (ConvEncoder((10, 5), (5, 5), (1, 2), (0, 1), 10), LinenEncoder(), x),
    (ConvDecoder((3, 3, 5), (10, 3, 1), (4, 6, 4), (2, 3, 1)), LinenDecoder(), z),
  ]
  for banded, linen, inputs in pairs:
    params = jax.jit(banded.init)(jax.random.key(2), inputs)
    linen_shapes = jax.eval_shape(linen.init, jax.random.key(2), inputs)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, linen_shapes)
    outputs = jax.jit(banded.apply)(params, inputs), jax.jit(linen.apply)(params, inputs)
    for got, expected in zip(*map(jax.tree.leaves, outputs)):
      np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
  "kwargs,message",
  [
    ({"rhs_dilation": (2, 2)}, "kernel dilation"),
    ({"feature_group_count": 3}, "grouped"),
    ({"dimension_numbers": ("NCHW", "OIHW", "NCHW")}, "NHWC"),
  ],
)
def test_banded_conv_refuses_what_it_does_not_compute(kwargs, message):
  x, kernel = _arrays((1, 6, 6, 3), (3, 3, 3, 3))
  with pytest.raises(ValueError, match=message):
    banded_conv(x, kernel, (1, 1), ((0, 0), (0, 0)), **kwargs)
  with pytest.raises(ValueError, match="padding"):
    banded_conv(x, kernel, (1, 1), "SAME")
