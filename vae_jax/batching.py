"""Running a jitted per-batch function over a whole array of images in batches of one size.

One batch size means one compilation: the last batch is zero-padded, and a
mask (or a count) says which of its images are real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def fixed_size_batches(
  images_NHWC: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, int]]:
  """``(batch, count)`` over ``images_NHWC``; the last batch is zero-padded, ``count`` real."""
  for start in range(0, len(images_NHWC), batch_size):
    batch = images_NHWC[start : start + batch_size]
    padding = np.zeros((batch_size - len(batch),) + batch.shape[1:], batch.dtype)
    yield np.concatenate([batch, padding]), len(batch)


def batch_means(
  sums_fn: Callable, params: Any, images_NHWC: np.ndarray, batch_size: int, key: jax.Array
) -> dict[str, np.ndarray]:
  """Means over ``images_NHWC`` of the per-batch sums ``sums_fn(params, batch, mask, key)`` returns.

  The padding of the last batch is masked out; batch ``i`` gets the key ``fold_in(key, i)``.
  The sums stay on the device until the last batch, so batches are dispatched back to back.
  """
  totals: dict[str, Any] = {}
  for i, (batch, count) in enumerate(
    fixed_size_batches(images_NHWC, min(batch_size, len(images_NHWC)))
  ):
    mask = (np.arange(len(batch)) < count).astype(np.float32)
    sums = sums_fn(params, batch, mask, jax.random.fold_in(key, i))
    totals = sums if not totals else jax.tree.map(jnp.add, totals, sums)
  return {k: np.asarray(v) / len(images_NHWC) for k, v in jax.device_get(totals).items()}


def per_image(
  fn: Callable, params: Any, images_NHWC: np.ndarray, batch_size: int, key: jax.Array
) -> dict[str, np.ndarray]:
  """``fn(params, batch, key) -> {name: per-image values}`` over every image, padding dropped.

  Batch ``i`` gets the key ``fold_in(key, i)``.
  """
  parts = []
  for i, (batch, count) in enumerate(fixed_size_batches(images_NHWC, batch_size)):
    out = jax.device_get(fn(params, batch, jax.random.fold_in(key, i)))
    parts.append({k: v[:count] for k, v in out.items()})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
