"""Image grids → PNG: tiles upscaled with nearest neighbour, thin separators."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def to_uint8(images01: np.ndarray) -> np.ndarray:
  """[0, 1] floats → uint8, clipped."""
  return np.clip(np.rint(np.asarray(images01, np.float32) * 255.0), 0, 255).astype(np.uint8)


def default_scale(tile_size: int, min_pixels: int = 96) -> int:
  """Nearest-neighbour factor that makes a tile at least ``min_pixels`` wide (30×30 → ×4)."""
  return max(1, math.ceil(min_pixels / tile_size))


def interleave_rows(groups: Sequence[np.ndarray], ncol: int) -> np.ndarray:
  """R×ncol×H×W×C tiles: ``ncol`` images of each group in turn, one row per group, so matching images stack.

  For inputs above their reconstructions (two groups), grey faces above
  their colourised versions and the originals (three), … . Every group holds
  the same number of uint8 images of one shape; the last rows are padded
  with blank (white) tiles.
  """
  ncol = min(ncol, len(groups[0]))
  pad = (-len(groups[0])) % ncol
  rows = [
    np.concatenate([g, np.full((pad,) + g.shape[1:], 255, np.uint8)]).reshape(
      (-1, ncol) + g.shape[1:]
    )
    for g in groups
  ]
  return np.stack(rows, axis=1).reshape((-1, ncol) + rows[0].shape[2:])


def make_grid(
  images: np.ndarray, ncol: int, scale: int | None = None, pad: int = 2, pad_value: int = 255
) -> np.ndarray:
  """Tile uint8 N×H×W×C images row-major into one H'×W'×3 uint8 picture.

  Args:
    images: uint8 N×H×W×C with C in {1, 3}; missing tiles at the end stay blank.
    ncol: tiles per row.
    scale: nearest-neighbour upscaling factor (default: ``default_scale``).
    pad: separator width in output pixels.
    pad_value: separator grey level.
  """
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(
      f"make_grid wants uint8 N×H×W×C with C in (1, 3); got {images.dtype} {images.shape}."
    )
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  n, h, w, _ = images.shape
  scale = scale or default_scale(max(h, w))
  images = images.repeat(scale, axis=1).repeat(scale, axis=2)
  h, w = h * scale, w * scale
  nrow = math.ceil(n / ncol)
  grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), pad_value, np.uint8)
  for i, img in enumerate(images):
    r, c = divmod(i, ncol)
    top, left = pad + r * (h + pad), pad + c * (w + pad)
    grid[top : top + h, left : left + w] = img
  return grid


def encode_png(picture: np.ndarray, fast: bool = False) -> bytes:
  """A uint8 H×W×3 array as PNG bytes.

  ``fast`` uses zlib's fastest level, for pictures written at every
  evaluation: a 1034×2066 grid of galaxies takes 0.14 s and 2.6 MB instead
  of 0.55 s and 2.2 MB at the default level.
  """
  out = io.BytesIO()
  Image.fromarray(picture).save(out, format="PNG", compress_level=1 if fast else 6)
  return out.getvalue()


def save_png(picture: np.ndarray, path: str | Path) -> Path:
  """Write a uint8 H×W×3 array as PNG (``~`` expanded), creating parent folders."""
  path = Path(path).expanduser()
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(encode_png(picture))
  return path
