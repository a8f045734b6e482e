"""On-device augmentation of training batches: flips and small random affine warps.

Small image sets (the reference's 940 training faces) are memorised by a
1 M-parameter MLP within a few hundred epochs; label-preserving jitter of the
kind the data already shows (mirror images, a pixel of translation, a few
degrees of tilt, a few percent of zoom) is the regulariser that keeps held-out
reconstructions improving. It runs inside the jitted train step from the
step's key, so it is deterministic and resumes exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

# Images per iteration of the warp's loop: about this many pixels (see ``affine_warp``).
_WARP_PIXELS_PER_ITERATION = 8192


def affine_warp(
  x_BHWC: jax.Array, shift_B2: jax.Array, angle_B: jax.Array, zoom_B: jax.Array
) -> jax.Array:
  """Shift (pixels, (row, col)), rotate (radians, about the centre) and zoom each image.

  Bilinear sampling with edge values repeated outside the frame; returns floats.
  The images are warped in a loop over chunks of ~8 k pixels (``lax.map``)
  rather than all at once: XLA's CPU backend compiles the bilinear gathers
  of a whole batch as separate slow loop fusions, and a loop body much
  faster (BENCHMARKS.md).
  """
  _, h, w, _ = x_BHWC.shape
  rows, cols = jnp.meshgrid(
    jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
  )
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0

  def warp(args):
    img_HWC, shift_2, angle, zoom = args
    # Output pixel (r, c) reads the input at the inverse transform of (r, c).
    cos, sin = jnp.cos(angle) / zoom, jnp.sin(angle) / zoom
    dy, dx = rows - cy - shift_2[0], cols - cx - shift_2[1]
    src_r = cy + cos * dy - sin * dx
    src_c = cx + sin * dy + cos * dx
    channel = lambda ch: jax.scipy.ndimage.map_coordinates(
      ch, [src_r, src_c], order=1, mode="nearest"
    )
    return jnp.stack([channel(img_HWC[..., i]) for i in range(img_HWC.shape[-1])], axis=-1)

  chunk = max(1, _WARP_PIXELS_PER_ITERATION // (h * w))
  return jax.lax.map(
    warp, (x_BHWC.astype(jnp.float32), shift_B2, angle_B, zoom_B), batch_size=chunk
  )


def random_affine(
  x_BHWC: jax.Array, key: jax.Array, max_shift: float, max_rotation_deg: float, max_zoom: float
) -> jax.Array:
  """``affine_warp`` with each image's shift, rotation and zoom drawn uniformly in the limits."""
  b = x_BHWC.shape[0]
  k_shift, k_rot, k_zoom = jax.random.split(key, 3)
  shift = jax.random.uniform(k_shift, (b, 2), minval=-max_shift, maxval=max_shift)
  angle = jnp.deg2rad(
    jax.random.uniform(k_rot, (b,), minval=-max_rotation_deg, maxval=max_rotation_deg)
  )
  zoom = jax.random.uniform(k_zoom, (b,), minval=1.0 - max_zoom, maxval=1.0 + max_zoom)
  return affine_warp(x_BHWC, shift, angle, zoom)


def augment(x_uint8: jax.Array, key: jax.Array, data_cfg: ml_collections.ConfigDict) -> jax.Array:
  """The augmentation ``config.data`` asks for (flips, shifts, rotations, zooms).

  Returns uint8 (rounded) so the likelihood sees values on the data's own grid.
  """
  flip_key, affine_key = jax.random.split(key)
  if data_cfg.hflip:
    flip = jax.random.bernoulli(flip_key, 0.5, (x_uint8.shape[0], 1, 1, 1))
    x_uint8 = jnp.where(flip, x_uint8[:, :, ::-1], x_uint8)
  if data_cfg.max_shift > 0 or data_cfg.max_rotation > 0 or data_cfg.max_zoom > 0:
    warped = random_affine(
      x_uint8, affine_key, data_cfg.max_shift, data_cfg.max_rotation, data_cfg.max_zoom
    )
    x_uint8 = jnp.clip(jnp.round(warped), 0, 255).astype(jnp.uint8)
  return x_uint8
