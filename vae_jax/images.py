"""Image grids → PNG: tiles upscaled with nearest neighbour, thin separators."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vae_jax import files


def to_uint8(images01: np.ndarray) -> np.ndarray:
  """[0, 1] floats → uint8, clipped."""
  return np.clip(np.rint(np.asarray(images01, np.float32) * 255.0), 0, 255).astype(np.uint8)


def default_scale(tile_size: int, min_pixels: int = 96) -> int:
  """Nearest-neighbour factor that makes a tile at least ``min_pixels`` wide (30×30 → ×4)."""
  return max(1, math.ceil(min_pixels / tile_size))


def interleave_rows(groups: Sequence[np.ndarray], ncol: int) -> np.ndarray:
  """R×ncol×H×W×C tiles: ``ncol`` images of each group in turn, so matching images stack.

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
  """A uint8 H×W×3 (or H×W×1, grey) array as PNG bytes.

  ``fast`` uses zlib's fastest level, for the grids written at every
  evaluation: a few times faster than the default level, for files a little larger.
  """
  out = io.BytesIO()
  picture = picture[..., 0] if picture.ndim == 3 and picture.shape[-1] == 1 else picture
  Image.fromarray(picture).save(out, format="PNG", compress_level=1 if fast else 6)
  return out.getvalue()


def save_png(picture: np.ndarray, path: str | Path) -> Path:
  """Write a uint8 H×W×3 array as PNG (``~`` expanded, parent folders created, written whole)."""
  return files.write_bytes(path, encode_png(picture))


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
  left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
  return right - left, bottom - top


def layout(
  tiles: np.ndarray,
  row_labels: Sequence[str] | None = None,
  caption: str | None = None,
  pad: int = 2,
) -> np.ndarray:
  """R×C tiles as one enlarged uint8 H×W×3 picture, with row labels and a caption."""
  rows, cols, h, w = tiles.shape[:4]
  scale = default_scale(max(h, w))
  grid = make_grid(tiles.reshape((rows * cols,) + tiles.shape[2:]), cols, scale=scale, pad=pad)
  if not row_labels and not caption:
    return grid
  font = ImageFont.load_default(size=min(24, max(12, h * scale // 8)))
  measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  margin = 6
  label_w = (
    max(_text_size(measure, t, font)[0] for t in row_labels) + 2 * margin if row_labels else 0
  )
  caption_w, caption_h = 0, 0
  if caption:
    caption_w, text_h = _text_size(measure, caption, font)
    caption_h = text_h + 2 * margin
  width = label_w + max(grid.shape[1], caption_w + 2 * margin)
  canvas = Image.new("RGB", (width, grid.shape[0] + caption_h), (255, 255, 255))
  canvas.paste(Image.fromarray(grid), (label_w, caption_h))
  draw = ImageDraw.Draw(canvas)
  if caption:
    draw.text((label_w + margin, margin), caption, fill=(0, 0, 0), font=font)
  for r, text in enumerate(row_labels or ()):
    centre = caption_h + pad + r * (h * scale + pad) + h * scale // 2
    draw.text((margin, centre), text, fill=(0, 0, 0), font=font, anchor="lm")
  return np.asarray(canvas)


def comparison_tiles(
  grey_uint8: np.ndarray,
  rgb_uint8: np.ndarray,
  target_uint8: np.ndarray | None = None,
  ncol: int = 8,
) -> np.ndarray:
  """R×C×H×W×3 tiles: rows of grey images above their colourised versions (and originals)."""
  groups = [np.repeat(grey_uint8, 3, axis=-1), rgb_uint8]
  if target_uint8 is not None:
    groups.append(target_uint8)
  return interleave_rows(groups, ncol)
