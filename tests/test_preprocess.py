"""Crop / resize / channel tests for Preprocess on constructed arrays."""

import numpy as np
import pytest
from PIL import Image

from vae_jax.data.preprocess import Preprocess


def ramp(height: int, width: int, channels: int = 1) -> np.ndarray:
  """uint8 image whose values identify their position."""
  return (
    (np.arange(height * width * channels) % 256).astype(np.uint8).reshape(height, width, channels)
  )


def test_center_crop_takes_largest_centred_square():
  wide, tall = ramp(4, 6), ramp(7, 4)
  np.testing.assert_array_equal(Preprocess(4, 1)(wide), wide[:, 1:5])
  np.testing.assert_array_equal(
    Preprocess(4, 1)(tall), tall[1:5]
  )  # odd margin: extra row at the bottom


def test_crop_size_takes_native_centre_before_resizing():
  image = ramp(10, 12, 3)
  np.testing.assert_array_equal(Preprocess(4, 3, crop_size=4)(image), image[3:7, 4:8])
  assert Preprocess(2, 3, crop_size=4)(image).shape == (2, 2, 3)


def test_crop_size_larger_than_image_names_the_sizes():
  with pytest.raises(ValueError, match=r"10×12.*crop_size=11"):
    Preprocess(4, 3, crop_size=11)(ramp(10, 12, 3))


def test_crop_none_squashes_whole_image():
  image = np.zeros((4, 8, 1), np.uint8)
  image[:, 6:] = 255  # a bright right quarter survives squashing but not a centre crop
  squashed = Preprocess(4, 1, crop="none")(image)
  assert squashed.shape == (4, 4, 1) and squashed[:, 3].min() > 200
  assert Preprocess(4, 1)(image).max() == 0


@pytest.mark.parametrize("shape, size", [((64, 48, 3), 32), ((10, 10, 1), 30), ((30, 30, 3), 30)])
def test_resize_gives_contiguous_uint8_square(shape, size):
  image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  out = Preprocess(size, shape[2])(image)
  assert out.shape == (size, size, shape[2]) and out.dtype == np.uint8 and out.flags.c_contiguous


def test_constant_image_stays_constant_through_resize():
  out = Preprocess(8, 3)(np.full((50, 70, 3), 77, np.uint8))
  assert (out == 77).all()


def test_rgb_to_grey_matches_pil_luminance():
  rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
  expected = np.asarray(Image.fromarray(rgb).convert("L"))
  np.testing.assert_array_equal(Preprocess(16, 1)(rgb)[..., 0], expected)


def test_grey_to_rgb_repeats_the_channel():
  grey = ramp(6, 6)
  out = Preprocess(6, 3)(grey)
  assert out.shape == (6, 6, 3)
  for channel in range(3):
    np.testing.assert_array_equal(out[..., channel], grey[..., 0])


def test_non_contiguous_input_is_handled():
  image = ramp(20, 40, 3)[:, ::2]  # strided view, 20×20
  out = Preprocess(10, 1)(image)
  assert out.shape == (10, 10, 1) and out.flags.c_contiguous


@pytest.mark.parametrize(
  "kwargs",
  [
    dict(image_size=0, channels=3),
    dict(image_size=8, channels=2),
    dict(image_size=8, channels=3, crop="left"),
    dict(image_size=8, channels=3, crop_size=-1),
  ],
)
def test_invalid_settings_are_rejected(kwargs):
  with pytest.raises(ValueError):
    Preprocess(**kwargs)


def test_rejects_non_uint8_or_bad_shape():
  with pytest.raises(ValueError, match="float32"):
    Preprocess(4, 3)(np.zeros((4, 4, 3), np.float32))
  with pytest.raises(ValueError, match=r"\(4, 4\)"):
    Preprocess(4, 3)(np.zeros((4, 4), np.uint8))


def test_is_hashable_and_frozen():
  preprocess = Preprocess(8, 3, crop_size=4)
  assert hash(preprocess) == hash(Preprocess(8, 3, crop_size=4))
  with pytest.raises(AttributeError):
    preprocess.image_size = 16


def test_max_upscale_refuses_images_that_would_be_enlarged_too_much():
  assert Preprocess(32, 1, max_upscale=4)(ramp(8, 10)).shape == (32, 32, 1)  # exactly 4×: allowed
  with pytest.raises(
    ValueError, match=r"7×9 pixels is too small for image_size=32.*4\.6×.*max_upscale=4"
  ):
    Preprocess(32, 1, max_upscale=4)(ramp(7, 9))
  assert Preprocess(32, 1)(ramp(7, 9)).shape == (32, 32, 1)  # 0: no limit


def test_is_identity_for_exactly_the_shapes_it_leaves_unchanged():
  image = ramp(8, 8, 3)
  for preprocess in (Preprocess(8, 3), Preprocess(8, 3, crop_size=8)):
    assert preprocess.is_identity_for(image.shape)
    np.testing.assert_array_equal(preprocess(image), image)
  assert not Preprocess(8, 1).is_identity_for(image.shape)
  assert not Preprocess(4, 3, crop_size=6).is_identity_for((4, 4, 3))
  assert not Preprocess(8, 3).is_identity_for((8, 9, 3))
