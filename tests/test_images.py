"""Picture grids: tile layout, separators, nearest-neighbour upscaling, PNG round trip."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vae_jax.images import default_scale, interleave_rows, make_grid, save_png, to_uint8


def _tiles(n: int, h: int, w: int, c: int) -> np.ndarray:
  """n distinct uint8 images with no value equal to the separator grey used below (7)."""
  values = np.arange(n * h * w * c).reshape(n, h, w, c)
  return (10 + values % 240).astype(np.uint8)


def _tile(grid: np.ndarray, index: int, ncol: int, h: int, w: int, pad: int) -> np.ndarray:
  r, c = divmod(index, ncol)
  top, left = pad + r * (h + pad), pad + c * (w + pad)
  return grid[top : top + h, left : left + w]


def test_grid_layout_separators_and_incomplete_last_row():
  n, h, w, ncol, scale, pad = 5, 3, 2, 2, 3, 1
  images = _tiles(n, h, w, 3)
  grid = make_grid(images, ncol=ncol, scale=scale, pad=pad, pad_value=7)
  sh, sw = h * scale, w * scale
  assert grid.shape == (3 * (sh + pad) + pad, ncol * (sw + pad) + pad, 3)
  assert grid.dtype == np.uint8
  covered = np.zeros(grid.shape[:2], bool)
  for i in range(n):  # row-major: image i at row i // ncol, column i % ncol
    r, c = divmod(i, ncol)
    top, left = pad + r * (sh + pad), pad + c * (sw + pad)
    np.testing.assert_array_equal(grid[top : top + sh : scale, left : left + sw : scale], images[i])
    covered[top : top + sh, left : left + sw] = True
  # Everything else (separators and the missing sixth tile) is the separator grey.
  assert np.all(grid[~covered] == 7)
  assert np.all(_tile(grid, 5, ncol, sh, sw, pad) == 7)


def test_upscaling_is_exact_nearest_neighbour():
  images = _tiles(2, 4, 5, 3)
  grid = make_grid(images, ncol=2, scale=4, pad=2)
  tile = _tile(grid, 1, 2, 16, 20, 2)
  np.testing.assert_array_equal(tile, np.kron(images[1], np.ones((4, 4, 1), np.uint8)))
  ys, xs = np.meshgrid(np.arange(16), np.arange(20), indexing="ij")
  np.testing.assert_array_equal(tile, images[1][ys // 4, xs // 4])


def test_grey_tiles_become_rgb():
  images = _tiles(3, 2, 2, 1)
  grid = make_grid(images, ncol=3, scale=1, pad=0)
  assert grid.shape == (2, 6, 3)
  for channel in range(3):
    np.testing.assert_array_equal(grid[..., channel], np.concatenate(list(images[..., 0]), axis=1))


def test_default_scale_makes_small_tiles_visible():
  assert default_scale(30) == 4
  assert default_scale(256) == 1
  grid = make_grid(_tiles(1, 30, 30, 1), ncol=1, pad=0)
  assert grid.shape == (120, 120, 3)


@pytest.mark.parametrize(
  "images",
  [
    np.zeros((2, 4, 4, 3), np.float32),  # not uint8
    np.zeros((4, 4, 3), np.uint8),  # no batch axis
    np.zeros((2, 4, 4, 2), np.uint8),  # two channels
    np.zeros((2, 4, 4, 4), np.uint8),  # RGBA
  ],
)
def test_invalid_input_raises(images):
  with pytest.raises(ValueError, match="uint8 N×H×W×C"):
    make_grid(images, ncol=2)


def test_to_uint8_rounds_and_clips():
  np.testing.assert_array_equal(
    to_uint8(np.array([-0.5, 0.0, 0.5, 1.0, 3.0])), [0, 0, 128, 255, 255]
  )
  np.testing.assert_array_equal(to_uint8(np.array([1.4 / 255, 1.6 / 255])), [1, 2])


def test_save_png_round_trip(tmp_path):
  picture = make_grid(_tiles(3, 5, 4, 3), ncol=2, scale=2)
  path = save_png(picture, tmp_path / "new" / "folder" / "grid.png")
  assert path == tmp_path / "new" / "folder" / "grid.png"
  with Image.open(path) as img:
    assert img.format == "PNG" and img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img), picture)


def test_interleave_rows_stacks_matching_images_and_pads_the_last_rows_white():
  a = np.arange(5, dtype=np.uint8).reshape(5, 1, 1, 1)  # image i is the value i
  b = a + 100
  tiles = interleave_rows([a, b], ncol=2)
  assert tiles.shape == (6, 2, 1, 1, 1)
  np.testing.assert_array_equal(
    tiles[..., 0, 0, 0], [[0, 1], [100, 101], [2, 3], [102, 103], [4, 255], [104, 255]]
  )
  assert interleave_rows([a, b, a], ncol=8).shape == (
    3,
    5,
    1,
    1,
    1,
  )  # fewer images than columns: one block
