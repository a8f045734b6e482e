"""2-D convolution as one matmul against a banded matrix built from the kernel.

XLA's CPU backend runs convolutions with few channels on small images at a
few GFLOP/s (the seed's conv VAE: 1 → 10 → 5 channels at 30×30, transposed
convolutions back to 1 channel), far below its matmul speed. Here each output
row is computed as a matmul: the input rows it reads (all their pixels and
channels, flattened) times a banded matrix T whose entries are kernel weights
placed by the convolution's geometry along the width. T is larger than the
kernel by about width/kernel-width, so the matmul does that many times the
convolution's FLOPs — and still runs 1.5–3× faster on CPU for these layers
(BENCHMARKS.md), with gradients that are matmuls too.

Input dilation (transposed convolutions) is folded into the geometry rather
than materialised: output rows are grouped by their phase modulo the dilation
(a sub-pixel decomposition), so no zero rows enter the matmul, and each phase
is a column block of the same T. The result equals ``lax.conv_general_dilated``
up to float summation order; `banded_conv` takes its signature so that it can
be passed as ``nn.Conv(conv_general_dilated=banded_conv)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_NHWC_HWIO = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


def _output_size(size: int, kernel: int, stride: int, pad: tuple[int, int], dilation: int) -> int:
  return ((size - 1) * dilation + 1 + pad[0] + pad[1] - kernel) // stride + 1


def _row_taps(size: int, kernel: int, stride: int, pad: tuple[int, int], dilation: int, pool: int):
  """Geometry along the height, for output rows grouped into ``phases`` by position.

  Output row ``phases·q + r`` reads kernel row ``i`` from input row
  ``step·q + offsets[a]`` whenever ``taps[a, r, i]`` is 1 (rows outside the
  input read zeros). ``phases`` is a multiple of ``pool``, so that pooling
  windows of ``pool`` rows never straddle two groups.

  Returns:
    (phases, step, offsets, taps, rows_out).
  """
  phases = dilation // math.gcd(stride, dilation) * pool
  step = stride * phases // dilation
  rows_out = _output_size(size, kernel, stride, pad, dilation)
  pairs = [
      (r, i, (stride * r + i - pad[0]) // dilation)
      for r in range(phases)
      for i in range(kernel)
      if (stride * r + i - pad[0]) % dilation == 0
  ]
  offsets = sorted({c for _, _, c in pairs}) or [0]  # [0] with no taps: an all-zero output
  taps = np.zeros((len(offsets), phases, kernel), np.float32)
  for r, i, c in pairs:
    taps[offsets.index(c), r, i] = 1
  return phases, step, offsets, taps, rows_out


def _column_taps(size: int, kernel: int, stride: int, pad: tuple[int, int], dilation: int, pool: int) -> np.ndarray:
  """S[j, x, rx, p] = 1 where output column ``pool·p + rx`` reads input column x through kernel column j.

  Output columns past the last whole pooling window are left out.
  """
  cols_out = _output_size(size, kernel, stride, pad, dilation) // pool
  s = np.zeros((kernel, size, pool, cols_out), np.float32)
  for j in range(kernel):
    for x in range(size):
      u = pad[0] + dilation * x - j
      if u % stride == 0 and 0 <= u // stride < pool * cols_out:
        s[j, x, u // stride % pool, u // stride // pool] = 1
  return s


def _banded_matmul(lhs, rhs, strides, padding, dilation, pool: int, precision=None, preferred_element_type=None):
  """The convolution's output as B × groups × phases × pool × W_out/pool × C_out, and its row count.

  Output row ``phases·q + r`` and column ``pool·p + rx`` land at
  ``[:, q, r, rx, p]`` (see `_row_taps`): with ``pool`` > 1 the values of
  each pooling window lie in separate contiguous blocks, so pooling is an
  elementwise max of blocks. Rows past the output's last are computed and
  must be dropped by the caller.
  """
  b, h, w, c_in = lhs.shape
  kh, kw, _, c_out = rhs.shape
  (sh, sw), (dh, dw) = tuple(strides), tuple(dilation)
  pad_h, pad_w = (tuple(p) for p in padding)
  phases, step, offsets, row_taps, rows_out = _row_taps(h, kh, sh, pad_h, dh, pool)
  col_taps = _column_taps(w, kw, sw, pad_w, dw, pool)
  groups = -(-rows_out // phases)

  # The input rows each output row group reads, stacked: B·groups × (offsets·W·C_in).
  top = max(0, -offsets[0])
  bottom = max(0, step * (groups - 1) + offsets[-1] + 1 - h)
  padded = jnp.pad(lhs, ((0, 0), (top, bottom), (0, 0), (0, 0)))
  rows = [lax.slice_in_dim(padded, top + c, top + c + step * (groups - 1) + 1, stride=step, axis=1) for c in offsets]
  x = jnp.stack(rows, axis=2).reshape(b * groups, len(offsets) * w * c_in)

  # Kernel weights placed by the geometry: (offsets·W·C_in) × (phases·pool·W_out/pool·C_out).
  band = jnp.einsum(
      "ijcd,ari,jxsp->axcrspd", rhs, jnp.asarray(row_taps, rhs.dtype), jnp.asarray(col_taps, rhs.dtype)
  ).reshape(len(offsets) * w * c_in, -1)
  y = jnp.dot(x, band, precision=precision, preferred_element_type=preferred_element_type)
  return y.reshape(b, groups, phases, pool, col_taps.shape[3], c_out), rows_out


def banded_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
  """``lax.conv_general_dilated`` for NHWC inputs and HWIO kernels, computed as a banded matmul.

  Supports explicit non-negative padding, window strides and input dilation
  (transposed convolutions); not kernel dilation or feature/batch groups.
  """
  layout = dimension_numbers and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  if layout not in (None, _NHWC_HWIO):
    raise ValueError("banded_conv supports NHWC inputs with HWIO kernels only.")
  if any(d != 1 for d in (rhs_dilation or (1, 1))) or feature_group_count != 1 or batch_group_count != 1:
    raise ValueError("banded_conv supports neither kernel dilation nor grouped convolutions.")
  if isinstance(padding, str) or any(p < 0 for pair in padding for p in pair):
    raise ValueError(f"banded_conv needs explicit non-negative padding, got {padding!r}.")
  y, rows_out = _banded_matmul(
      lhs, rhs, window_strides, padding, lhs_dilation or (1, 1), 1, precision, preferred_element_type
  )
  b, groups, phases, _, cols_out, c_out = y.shape
  return y.reshape(b, groups * phases, cols_out, c_out)[:, :rows_out]


@jax.custom_vjp
def _window_max(y: jax.Array) -> jax.Array:
  """Max over axis 3, the four values of each 2×2 pooling window (each a contiguous block); that axis removed."""
  return jnp.max(y, axis=3)


def _window_max_fwd(y):
  return jnp.max(y, axis=3), jnp.argmax(y, axis=3).astype(jnp.int8)


def _window_max_bwd(winner, g):
  """The whole gradient goes to the window's first maximum, as in PyTorch (JAX's own max splits ties)."""
  hit = jnp.arange(4, dtype=jnp.int8)[:, None, None] == winner[:, :, :, None]
  return (jnp.where(hit, g[:, :, :, None], jnp.zeros((), g.dtype)),)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)


def banded_conv_max_pool_2x2(lhs: jax.Array, rhs: jax.Array, strides: Sequence[int], padding) -> jax.Array:
  """2×2 max-pooling (stride 2, odd last row/column dropped) of ``banded_conv(lhs, rhs, strides, padding)``.

  The matmul lays each window's four values out in four contiguous blocks,
  so the pooling and its gradient are elementwise, not the strided
  reductions and scatters of pooling an NHWC array.
  """
  y, rows_out = _banded_matmul(lhs, rhs, strides, padding, (1, 1), 2)
  b, groups, phases, _, cols_out, c_out = y.shape
  pooled = _window_max(y.reshape(b, groups, phases // 2, 4, cols_out, c_out))
  return pooled.reshape(b, groups * phases // 2, cols_out, c_out)[:, : rows_out // 2]
