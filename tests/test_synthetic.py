"""Tests for the procedural face and galaxy sources (vae_jax.data.synthetic)."""

import numpy as np
import pytest

from vae_jax.data.synthetic import (
  FACE_FACTORS,
  GALAXY_FACTORS,
  SyntheticFaces,
  SyntheticGalaxies,
  render_face,
  render_galaxy,
)

SOURCES = [(SyntheticFaces, 64), (SyntheticGalaxies, 256)]


@pytest.mark.parametrize("cls,size", SOURCES)
def test_shape_dtype_len(cls, size):
  src = cls(num_images=10)
  assert len(src) == 10
  assert src.image_size == size
  img = src[0]
  assert img.dtype == np.uint8 and img.shape == (size, size, 3)
  assert img.max() > img.min()  # not a blank frame
  small = cls(num_images=3, image_size=30)[2]
  assert small.shape == (30, 30, 3) and small.dtype == np.uint8


@pytest.mark.parametrize("cls,size", SOURCES)
def test_pure_function_of_seed_and_index(cls, size):
  a, b = cls(num_images=8, image_size=48), cls(num_images=8, image_size=48)
  later = a[5]  # read out of order: must not shift any other image
  np.testing.assert_array_equal(a[3], b[3])
  np.testing.assert_array_equal(later, b[5])
  np.testing.assert_array_equal(a.factors(3), b.factors(3))
  assert not np.array_equal(a[3], a[4])
  other = cls(num_images=8, image_size=48, seed=1)
  assert not np.array_equal(a[3], other[3])
  assert not np.array_equal(a.factors(3), other.factors(3))


@pytest.mark.parametrize("cls,size", SOURCES)
def test_indexing(cls, size):
  src = cls(num_images=4, image_size=32)
  np.testing.assert_array_equal(src[np.int64(2)], src[2])
  np.testing.assert_array_equal(src[np.uint8(3)], src[3])
  for bad in (-1, 4, 100, np.int32(-2)):
    with pytest.raises(IndexError):
      src[bad]
    with pytest.raises(IndexError):
      src.factors(bad)
  with pytest.raises(TypeError):
    src[1.0]


@pytest.mark.parametrize(
  "cls,names", [(SyntheticFaces, FACE_FACTORS), (SyntheticGalaxies, GALAXY_FACTORS)]
)
def test_factors(cls, names):
  src = cls(num_images=64, image_size=32)
  assert src.factor_names == names
  assert len(set(names)) == len(names)
  assert {"hair_hue", "hair_length", "eye_hue", "yaw", "background_hue"} <= set(FACE_FACTORS)
  assert {
    "bulge_fraction",
    "arm_strength",
    "inclination",
    "position_angle",
    "size",
    "colour",
  } <= set(GALAXY_FACTORS)
  f = np.stack([src.factors(i) for i in range(len(src))])
  assert f.dtype == np.float32 and f.shape == (64, len(names))
  assert f.min() >= 0.0 and f.max() <= 1.0
  assert (f.std(axis=0) > 0.15).all()  # every factor actually varies over the data set


def test_galaxy_discrete_factors_are_binary():
  src = SyntheticGalaxies(num_images=32, image_size=32)
  f = np.stack([src.factors(i) for i in range(32)])
  for name in ("n_arms", "handedness"):
    col = f[:, GALAXY_FACTORS.index(name)]
    assert set(np.unique(col)) == {0.0, 1.0}


@pytest.mark.parametrize("name", FACE_FACTORS)
def test_each_face_factor_changes_the_image(name):
  lo, hi = np.full(len(FACE_FACTORS), 0.5, np.float32), np.full(len(FACE_FACTORS), 0.5, np.float32)
  lo[FACE_FACTORS.index(name)], hi[FACE_FACTORS.index(name)] = 0.2, 0.8
  diff = np.abs(render_face(lo).astype(int) - render_face(hi).astype(int))
  assert diff.mean() > 0.2, name


@pytest.mark.parametrize("name", GALAXY_FACTORS)
def test_each_galaxy_factor_changes_the_image(name):
  base = np.full(len(GALAXY_FACTORS), 0.5, np.float32)
  base[GALAXY_FACTORS.index("arm_strength")] = 0.9  # arms on, so arm shape factors show
  lo, hi = base.copy(), base.copy()
  k = GALAXY_FACTORS.index(name)
  lo[k], hi[k] = (0.0, 1.0) if name in ("n_arms", "handedness") else (0.2, 0.8)
  diff = np.abs(render_galaxy(lo, 128).astype(int) - render_galaxy(hi, 128).astype(int))
  assert diff.mean() > 0.2, name


def test_face_content():
  """Background corners are flat; two eyes (white sclera, dark pupil) sit left and right."""
  f = np.full(len(FACE_FACTORS), 0.5, np.float32)
  img = render_face(f, 64).astype(int)
  corner = img[:4, :4].reshape(-1, 3)
  assert np.ptp(corner, axis=0).max() <= 2  # plain background
  centre = img[24:40, 24:40].reshape(-1, 3)
  assert np.abs(centre - corner[0]).sum(axis=1).mean() > 40  # the face is not background
  grey = img.mean(axis=2)
  for half in (grey[26:44, 14:32], grey[26:44, 32:50]):
    assert half.min() < 80 and half.max() > 230
  # Every source image looks like that: a face region unlike its corner.
  src = SyntheticFaces(num_images=16)
  for i in range(len(src)):
    im = src[i].astype(int)
    assert np.abs(im[24:40, 24:40] - im[0, 0]).sum(axis=2).mean() > 30


def test_galaxy_content():
  """Bright centre on dark sky; an inclined disc is elongated along its position angle."""
  src = SyntheticGalaxies(num_images=16)
  for i in range(len(src)):
    grey = src[i].astype(float).mean(axis=2)
    corners = np.concatenate([grey[:32, :32], grey[:32, -32:], grey[-32:, :32], grey[-32:, -32:]])
    assert np.median(corners) < 20  # black sky
    assert grey[120:136, 120:136].mean() > 4 * np.median(corners) + 20

  def elongation(incl: float) -> float:
    f = np.zeros(len(GALAXY_FACTORS), np.float32)  # no arms, position angle 0: major axis along x
    f[GALAXY_FACTORS.index("inclination")] = incl
    f[GALAXY_FACTORS.index("size")] = 0.5
    w = render_galaxy(f, 128).astype(float).mean(axis=2)
    ys, xs = np.mgrid[:128, :128] - 63.5
    return (w * xs**2).sum() / (w * ys**2).sum()

  assert 0.8 < elongation(0.0) < 1.25
  assert elongation(1.0) > 3.0
