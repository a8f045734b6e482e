"""On-device augmentation: identity when off, exact geometry when on, deterministic per key."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vae_jax.data.augment import affine_warp, augment, random_affine


def _cfg(**kw):
  base = {"hflip": False, "max_shift": 0.0, "max_rotation": 0.0, "max_zoom": 0.0}
  return ml_collections.ConfigDict({**base, **kw})


@pytest.fixture(scope="module")
def batch():
  return jax.random.randint(jax.random.key(0), (8, 12, 10, 3), 0, 256).astype(jnp.uint8)


def test_no_augmentation_is_identity(batch):
  np.testing.assert_array_equal(augment(batch, jax.random.key(1), _cfg()), batch)


def test_zero_warp_is_identity(batch):
  out = random_affine(batch, jax.random.key(1), 0.0, 0.0, 0.0)
  np.testing.assert_allclose(out, batch.astype(np.float32), atol=1e-3)


def test_hflip_mirrors_some_images_and_keeps_the_rest(batch):
  out = np.asarray(augment(batch, jax.random.key(3), _cfg(hflip=True)))
  x = np.asarray(batch)
  flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)]
  kept = [np.array_equal(o, i) for o, i in zip(out, x)]
  assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_integer_shift_moves_content_exactly():
  x = jnp.zeros((1, 7, 7, 1)).at[0, 3, 3, 0].set(100.0)
  out = np.asarray(affine_warp(x, jnp.array([[1.0, -2.0]]), jnp.zeros(1), jnp.ones(1)))[0, ..., 0]
  expected = np.zeros((7, 7))
  expected[4, 1] = 100.0
  np.testing.assert_allclose(out, expected, atol=1e-4)


def test_quarter_turn_equals_rot90():
  x = jax.random.uniform(jax.random.key(2), (1, 6, 6, 2)) * 255
  out = affine_warp(x, jnp.zeros((1, 2)), jnp.array([np.pi / 2]), jnp.ones(1))
  # Positive angles turn the content clockwise in (row, col) image coordinates.
  np.testing.assert_allclose(out[0], np.rot90(np.asarray(x[0]), k=-1, axes=(0, 1)), atol=1e-3)


def test_zoom_in_magnifies_about_the_centre():
  x = jnp.zeros((1, 9, 9, 1)).at[0, 4, 6, 0].set(100.0)  # 2 px right of centre
  out = np.asarray(affine_warp(x, jnp.zeros((1, 2)), jnp.zeros(1), jnp.array([2.0])))[0, ..., 0]
  assert out[4, 8] == pytest.approx(100.0, abs=1e-3)  # now 4 px right of centre


def test_same_key_same_batch_other_key_differs(batch):
  cfg = _cfg(hflip=True, max_shift=1.0, max_rotation=5.0, max_zoom=0.05)
  a = augment(batch, jax.random.key(5), cfg)
  b = augment(batch, jax.random.key(5), cfg)
  c = augment(batch, jax.random.key(6), cfg)
  assert a.dtype == jnp.uint8 and a.shape == batch.shape
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_warp_in_chunks_matches_each_image_warped_alone():
  # 12×10 images warp 68 at a time: a batch of 75 is one full chunk and a remainder of 7.
  b = 75
  x = jax.random.uniform(jax.random.key(7), (b, 12, 10, 2)) * 255
  k_shift, k_angle, k_zoom = jax.random.split(jax.random.key(8), 3)
  shift = jax.random.uniform(k_shift, (b, 2), minval=-2, maxval=2)
  angle = jax.random.uniform(k_angle, (b,), minval=-0.5, maxval=0.5)
  zoom = jax.random.uniform(k_zoom, (b,), minval=0.8, maxval=1.2)
  together = np.asarray(affine_warp(x, shift, angle, zoom))
  for i in (0, 67, 68, 74):
    alone = affine_warp(x[i : i + 1], shift[i : i + 1], angle[i : i + 1], zoom[i : i + 1])
    np.testing.assert_allclose(together[i], alone[0], atol=1e-3)
  assert not np.allclose(together[0], together[1])
