"""2-D convolution as matmuls against a banded matrix built from the kernel.

XLA's CPU backend runs convolutions with few channels on small images at a
few GFLOP/s (the seed's conv VAE: 1 → 10 → 5 channels at 30×30, transposed
convolutions back to 1 channel), far below its matmul speed. Here a row of
output pixels is computed as a matmul: the input rows it reads (their pixels
and channels, flattened) times a band, a matrix whose entries are kernel
weights placed by the convolution's geometry along the width. Rows are cut
into column blocks that share one band; a block of b output columns reads
about b + kernel − 1 input columns, so the matmul does about that over the
kernel width times the convolution's FLOPs (the band's zeros). Narrower
blocks waste less but make narrower matmuls (`_MIN_MATMUL_COLUMNS`). For
the conv VAE's few channels this still beats XLA's CPU convolutions, with
gradients that are matmuls too; with many channels it does not pay
(BENCHMARKS.md has the figures).

Input dilation (transposed convolutions) is folded into the geometry rather
than materialised: output rows are grouped by their phase modulo the
dilation (a sub-pixel decomposition), so no zero rows enter the matmul, and
the phases are separate columns of the same band. The result equals
``lax.conv_general_dilated`` up to float summation order; `banded_conv`
takes its signature so that it can be passed as
``nn.Conv(conv_general_dilated=banded_conv)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_NHWC_HWIO = lax.ConvDimensionNumbers(
  lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2)
)


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


def _column_taps(
  size: int, kernel: int, stride: int, pad: tuple[int, int], dilation: int, pool: int, block: int
):
  """Geometry along the width, for output columns in blocks of ``block`` pooling windows.

  Every block has the same taps, shifted by ``shift`` input columns: block
  β's output column ``pool·(block·β + p) + rx`` reads input column
  ``shift·β + first + t`` through kernel column j whenever
  ``taps[j, t, rx, p]`` is 1 (columns outside the input read zeros). With a
  single block, only the input's own columns are kept.

  Returns:
    (blocks, shift, first, taps, units): ``units`` is the number of output
    columns in whole pooling windows.
  """
  units = _output_size(size, kernel, stride, pad, dilation) // pool
  align = dilation // math.gcd(stride * pool, dilation)  # blocks must start on the same input phase
  block = min(-(-block // align) * align, units)
  blocks = -(-units // block)
  shift = stride * pool * block // dilation
  entries = [
    (j, (stride * (pool * p + rx) + j - pad[0]) // dilation, rx, p)
    for j in range(kernel)
    for rx in range(pool)
    for p in range(block)
    if (stride * (pool * p + rx) + j - pad[0]) % dilation == 0
  ]
  if blocks == 1:
    entries = [e for e in entries if 0 <= e[1] < size]
  first = min((e[1] for e in entries), default=0)
  span = max((e[1] for e in entries), default=0) - first + 1
  taps = np.zeros((kernel, span, pool, block), np.float32)
  for j, x, rx, p in entries:
    taps[j, x - first, rx, p] = 1
  return blocks, shift, first, taps, units


# Narrow column blocks waste fewer FLOPs on the band's zeros, but matmuls with few columns run
# slowly: 64 columns was the fastest width for the conv VAE's step (BENCHMARKS.md).
_MIN_MATMUL_COLUMNS = 64


def _block_size(phases: int, pool: int, c_out: int) -> int:
  """Pooling windows per column block: the fewest that give ``_MIN_MATMUL_COLUMNS`` columns."""
  return max(1, -(-_MIN_MATMUL_COLUMNS // (phases * pool * c_out)))


def _banded_matmul(
  lhs, rhs, strides, padding, dilation, pool: int, precision=None, preferred_element_type=None
):
  """The convolution as B × groups × blocks × phases × pool × block × C_out, its rows and columns.

  Output row ``phases·q + r`` and column ``pool·(block·β + p) + rx`` land at
  ``[:, q, β, r, rx, p]`` (see `_row_taps`, `_column_taps`): with ``pool`` >
  1 the values of each pooling window lie in separate contiguous blocks, so
  pooling is an elementwise max of blocks. Rows and columns past the
  output's last are computed and must be dropped by the caller.
  """
  b, h, w, c_in = lhs.shape
  kh, kw, _, c_out = rhs.shape
  (sh, sw), (dh, dw) = tuple(strides), tuple(dilation)
  pad_h, pad_w = (tuple(p) for p in padding)
  phases, step, offsets, row_taps, rows_out = _row_taps(h, kh, sh, pad_h, dh, pool)
  blocks, shift, first, col_taps, cols_out = _column_taps(
    w, kw, sw, pad_w, dw, pool, _block_size(phases, pool, c_out)
  )
  groups = -(-rows_out // phases)
  span = col_taps.shape[1]

  # The input rows and columns each output block reads: (B·groups·blocks) × (offsets·span·C_in).
  top = max(0, -offsets[0])
  bottom = max(0, step * (groups - 1) + offsets[-1] + 1 - h)
  left = max(0, -first)
  right = max(0, first + shift * (blocks - 1) + span - w)
  padded = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
  rows = jnp.stack(
    [
      lax.slice_in_dim(padded, top + c, top + c + step * (groups - 1) + 1, stride=step, axis=1)
      for c in offsets
    ],
    axis=2,
  )
  starts = [left + first + shift * beta for beta in range(blocks)]
  x = jnp.stack([rows[:, :, :, s : s + span] for s in starts], axis=2)
  x = x.reshape(b * groups * blocks, len(offsets) * span * c_in)

  # Kernel weights placed by the geometry: (offsets·span·C_in) × (phases·pool·block·C_out).
  band = jnp.einsum(
    "ijcd,ari,jxsp->axcrspd",
    rhs,
    jnp.asarray(row_taps, rhs.dtype),
    jnp.asarray(col_taps, rhs.dtype),
  ).reshape(len(offsets) * span * c_in, -1)
  y = jnp.dot(x, band, precision=precision, preferred_element_type=preferred_element_type)
  return y.reshape(b, groups, blocks, phases, pool, col_taps.shape[3], c_out), rows_out, cols_out


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
  if (
    any(d != 1 for d in (rhs_dilation or (1, 1)))
    or feature_group_count != 1
    or batch_group_count != 1
  ):
    raise ValueError("banded_conv supports neither kernel dilation nor grouped convolutions.")
  if isinstance(padding, str) or any(p < 0 for pair in padding for p in pair):
    raise ValueError(f"banded_conv needs explicit non-negative padding, got {padding!r}.")
  y, rows_out, cols_out = _banded_matmul(
    lhs, rhs, window_strides, padding, lhs_dilation or (1, 1), 1, precision, preferred_element_type
  )
  b, groups, blocks, phases, _, block, c_out = y.shape
  y = y.reshape(b, groups, blocks, phases, block, c_out).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(b, groups * phases, blocks * block, c_out)[:, :rows_out, :cols_out]


@jax.custom_vjp
def _window_max(y: jax.Array) -> jax.Array:
  """Max over axis 3 (removed): the four values of each 2×2 pooling window, each a block."""
  return jnp.max(y, axis=3)


def _window_max_fwd(y):
  return jnp.max(y, axis=3), jnp.argmax(y, axis=3).astype(jnp.int8)


def _window_max_bwd(winner, g):
  """The gradient goes to the window's first maximum, as in PyTorch (JAX's own max splits ties)."""
  hit = jnp.arange(4, dtype=jnp.int8)[:, None, None] == winner[:, :, :, None]
  return (jnp.where(hit, g[:, :, :, None], jnp.zeros((), g.dtype)),)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)


def banded_conv_max_pool_2x2(
  lhs: jax.Array, rhs: jax.Array, strides: Sequence[int], padding
) -> jax.Array:
  """2×2 max-pooling (stride 2, odd last row and column dropped) of ``banded_conv(...)``.

  The matmul lays each window's four values out in four contiguous blocks,
  so the pooling and its gradient are elementwise, not the strided
  reductions and scatters of pooling an NHWC array.
  """
  y, rows_out, cols_out = _banded_matmul(lhs, rhs, strides, padding, (1, 1), 2)
  b, groups, blocks, phases, _, block, c_out = y.shape
  y = y.reshape(b, groups, blocks, phases // 2, 4, block, c_out).transpose(0, 1, 3, 2, 4, 5, 6)
  pooled = _window_max(y.reshape(b, groups * phases // 2, blocks, 4, block, c_out))
  return pooled.reshape(b, groups * phases // 2, blocks * block, c_out)[
    :, : rows_out // 2, :cols_out
  ]
