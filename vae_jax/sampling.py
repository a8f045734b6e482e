"""Pictures of what a trained VAE has learned: reconstructions, prior samples,
interpolations, latent traversals and 2-D manifolds.

Each kind has a function returning its tiles as a uint8 array
R×C×H×W×Ch (rows × columns of images), so a notebook can use the images
themselves; ``picture`` lays tiles out as one PNG-ready grid (nearest-neighbour
upscaling, thin separators, optional row labels and caption), and
``write_samples`` is the whole ``bin/sample.py`` command. Fixed seeds give
identical pictures: every random choice (which images, which prior draws)
comes from the ``seed`` argument.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vae_jax import images, losses
from vae_jax.config import workdir_path
from vae_jax.data.pipeline import Subset, load_images
from vae_jax.data.preprocess import Preprocess
from vae_jax.restore import Run, image_shape, image_subset, load_run

INTERIOR_POINTS = 7  # the reference: two encoded faces and 7 evenly spaced points between them
TRAVERSE_RADIUS = 3.0  # prior standard deviations either side of the base code
KL_IMAGES = 500  # images averaged for each dimension's KL (labels, default manifold dims)


@functools.partial(jax.jit, static_argnames=("model",))
def _encode(model: nn.Module, params, x_uint8: jax.Array) -> tuple[jax.Array, jax.Array]:
  return model.apply({"params": params}, x_uint8, method=model.encode)


@functools.partial(jax.jit, static_argnames=("model", "likelihood"))
def _decode(model: nn.Module, params, z_BZ: jax.Array, likelihood: str) -> jax.Array:
  return losses.mean_image(likelihood, model.apply({"params": params}, z_BZ, method=model.decode))


def encode(run: Run, x_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Posterior ``(mean_NZ, logvar_NZ)`` of uint8 images."""
  mean, logvar = _encode(run.model, run.params, jnp.asarray(x_uint8))
  return np.asarray(mean), np.asarray(logvar)


def decode(run: Run, z_NZ: np.ndarray) -> np.ndarray:
  """Decoder means of latent codes as uint8 images N×H×W×C."""
  out = _decode(run.model, run.params, jnp.asarray(z_NZ, jnp.float32), run.config.loss.likelihood)
  return images.to_uint8(np.asarray(out))


def kl_per_dim(run: Run, x_uint8: np.ndarray) -> np.ndarray:
  """Average KL(q(z|x) ‖ p(z)) of each latent dimension over ``x_uint8``, in nats."""
  mean, logvar = encode(run, x_uint8)
  return np.asarray(losses.gaussian_kl(mean, logvar)).mean(axis=0)


def interpolate(
  z_a: np.ndarray, z_b: np.ndarray, num_points: int, spherical: bool = False
) -> np.ndarray:
  """``num_points`` codes from ``z_a`` to ``z_b`` inclusive, evenly spaced in t.

  Spherical interpolation (slerp) follows the great circle, scaling the
  norm linearly between the ends; it keeps intermediate codes at the norms a
  Gaussian prior puts its mass on, where a straight line dips towards the
  origin (Shoemake, 1985; White, 2016). Nearly parallel codes fall back to
  the straight line.
  """
  t = np.linspace(0.0, 1.0, num_points)[:, None]
  z_a, z_b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
  norm_a, norm_b = np.linalg.norm(z_a), np.linalg.norm(z_b)
  cos = np.dot(z_a, z_b) / max(norm_a * norm_b, 1e-12)
  omega = math.acos(min(1.0, max(-1.0, cos)))
  if not spherical or math.sin(omega) < 1e-6:
    return ((1.0 - t) * z_a + t * z_b).astype(np.float32)
  u_a, u_b = z_a / norm_a, z_b / norm_b
  direction = (np.sin((1.0 - t) * omega) * u_a + np.sin(t * omega) * u_b) / math.sin(omega)
  return (direction * ((1.0 - t) * norm_a + t * norm_b)).astype(np.float32)


def traverse_codes(base_z: np.ndarray, steps: int, radius: float = TRAVERSE_RADIUS) -> np.ndarray:
  """Z×steps×Z codes: row ``d`` moves dimension ``d`` over ``base ± radius``, the others fixed."""
  base_z = np.asarray(base_z, np.float32)
  codes = np.repeat(np.repeat(base_z[None, None], len(base_z), 0), steps, 1)
  dims = np.arange(len(base_z))
  codes[dims, :, dims] = base_z[:, None] + np.linspace(-radius, radius, steps, dtype=np.float32)
  return codes


def manifold_codes(latent_dim: int, dims: tuple[int, int], n: int) -> np.ndarray:
  """n×n×Z codes: dimension ``dims[0]`` varies down the rows, ``dims[1]`` along the columns.

  Values are Gaussian quantiles at probabilities 0.05…0.95 (evenly spaced in
  prior mass, as in Kingma & Welling's manifold figures); other dimensions
  stay at the prior mean, 0.
  """
  if len(dims) != 2 or dims[0] == dims[1] or not all(0 <= d < latent_dim for d in dims):
    raise ValueError(
      f"Manifold dims must be two different dimensions in 0..{latent_dim - 1}; got {dims}."
    )
  i, j = dims
  values = np.array(
    [statistics.NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)], np.float32
  )
  codes = np.zeros((n, n, latent_dim), np.float32)
  codes[:, :, i] = values[:, None]
  codes[:, :, j] = values[None, :]
  return codes


def _decode_grid(run: Run, codes_RCZ: np.ndarray) -> np.ndarray:
  rows, cols, latent = codes_RCZ.shape
  return decode(run, codes_RCZ.reshape(rows * cols, latent)).reshape(
    (rows, cols) + image_shape(run.config.data)
  )


def recon_tiles(run: Run, x_uint8: np.ndarray, ncol: int = 8) -> np.ndarray:
  """Rows of inputs, each followed by a row of their posterior-mean reconstructions."""
  x_uint8 = np.asarray(x_uint8)
  return images.interleave_rows([x_uint8, decode(run, encode(run, x_uint8)[0])], ncol)


def prior_tiles(run: Run, key: jax.Array, n: int, temperature: float = 1.0) -> np.ndarray:
  """n×n decoded draws z ~ N(0, temperature² I)."""
  latent = run.config.model.latent_dim
  z = temperature * jax.random.normal(key, (n, n, latent))
  return _decode_grid(run, np.asarray(z))


def interp_tiles(
  run: Run,
  x_a: np.ndarray,
  x_b: np.ndarray,
  spherical: bool = False,
  interior: int = INTERIOR_POINTS,
) -> np.ndarray:
  """One row per pair: input a, decoded path from a's to b's posterior mean (``interior`` points between), input b.

  Columns 1 and -2 are the reconstructions of the two inputs (the path's
  ends); columns 0 and -1 the inputs themselves.
  """
  mean_a, mean_b = encode(run, x_a)[0], encode(run, x_b)[0]
  codes = np.stack([interpolate(a, b, interior + 2, spherical) for a, b in zip(mean_a, mean_b)])
  path = _decode_grid(run, codes)
  return np.concatenate([np.asarray(x_a)[:, None], path, np.asarray(x_b)[:, None]], axis=1)


def traverse_tiles(
  run: Run, x_base: np.ndarray, steps: int, radius: float = TRAVERSE_RADIUS
) -> np.ndarray:
  """One row per latent dimension, sweeping it around the base image's posterior mean."""
  base = encode(run, np.asarray(x_base)[None])[0][0]
  return _decode_grid(run, traverse_codes(base, steps, radius))


def manifold_tiles(run: Run, dims: tuple[int, int], n: int) -> np.ndarray:
  """The decoded n×n grid of ``manifold_codes``."""
  return _decode_grid(run, manifold_codes(run.config.model.latent_dim, dims, n))


def largest_kl_dims(kl_Z: np.ndarray, count: int = 2) -> tuple[int, ...]:
  """Indices of the ``count`` dimensions carrying the most information, largest first."""
  return tuple(int(d) for d in np.argsort(-np.asarray(kl_Z), kind="stable")[:count])


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
  left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
  return right - left, bottom - top


def picture(
  tiles: np.ndarray,
  row_labels: Sequence[str] | None = None,
  caption: str | None = None,
  pad: int = 2,
) -> np.ndarray:
  """Lay out R×C tiles as one uint8 H×W×3 picture, with labels left of the rows and a caption on top."""
  rows, cols, h, w = tiles.shape[:4]
  scale = images.default_scale(max(h, w))
  grid = images.make_grid(
    tiles.reshape((rows * cols,) + tiles.shape[2:]), cols, scale=scale, pad=pad
  )
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


@dataclasses.dataclass(frozen=True)
class SampleOptions:
  """What ``bin/sample.py`` asks for; ``n=None`` means the kind's default size.

  Attributes:
    n: recon: images (8 per row); prior, manifold: grid side; interp: pairs;
      traverse: steps per row.
    seed: picks the images and the prior draws.
    temperature: prior standard deviation for ``prior``.
    spherical: slerp instead of straight lines for ``interp``.
    dims: the two latent dimensions of ``manifold`` (default: largest KL).
    colorizer: the colouriser workdir ``colorize`` uses (configs/colorizer.py).
  """

  n: int | None = None
  seed: int = 0
  temperature: float = 1.0
  spherical: bool = False
  dims: tuple[int, int] | None = None
  colorizer: str | None = None

  def __post_init__(self):
    if self.n is not None and self.n < 1:
      raise ValueError(f"The picture's size n must be at least 1; got {self.n}.")
    if self.temperature < 0:
      raise ValueError(
        f"The prior temperature is a standard deviation, at least 0; got {self.temperature}."
      )


class _Images:
  """The images a picture draws from, loaded only as far as a kind needs them."""

  def __init__(self, subset: Subset, preprocess: Preprocess):
    self.subset, self.preprocess = subset, preprocess

  def chosen(self, count: int, seed: int) -> np.ndarray:
    """``count`` distinct images picked by ``seed`` (all of them, in that order, if there are fewer)."""
    order = np.random.default_rng(seed).permutation(len(self.subset))[:count]
    return load_images(Subset(self.subset.source, self.subset.indices[order]), self.preprocess)

  def first(self, count: int) -> np.ndarray:
    return load_images(self.subset, self.preprocess, count, desc="images for KL")


def _recon(run: Run, data: _Images, opts: SampleOptions) -> np.ndarray:
  tiles = recon_tiles(run, data.chosen(opts.n or 24, opts.seed))
  return picture(tiles, caption="each row of inputs above its reconstructions (posterior mean)")


def _prior(run: Run, data: _Images, opts: SampleOptions) -> np.ndarray:
  tiles = prior_tiles(run, jax.random.key(opts.seed), opts.n or 8, opts.temperature)
  return picture(tiles, caption=f"prior samples, temperature {opts.temperature:g}")


def _interp(run: Run, data: _Images, opts: SampleOptions) -> np.ndarray:
  x = data.chosen(2 * (opts.n or 6), opts.seed)
  pairs = len(x) // 2
  if not pairs:
    raise ValueError("Interpolation needs at least two images.")
  tiles = interp_tiles(run, x[:pairs], x[pairs : 2 * pairs], opts.spherical)
  return picture(
    tiles,
    caption=(
      f"input, reconstruction, {INTERIOR_POINTS} points of {'spherical' if opts.spherical else 'linear'} "
      "interpolation, reconstruction, input"
    ),
  )


def _traverse(run: Run, data: _Images, opts: SampleOptions) -> np.ndarray:
  kl = kl_per_dim(run, data.first(KL_IMAGES))
  tiles = traverse_tiles(run, data.chosen(1, opts.seed)[0], opts.n or 11)
  labels = [f"z{d}  KL {v:.2f}" for d, v in enumerate(kl)]
  return picture(
    tiles, labels, caption=f"each dimension over ±{TRAVERSE_RADIUS:g} around one encoded image"
  )


def _manifold(run: Run, data: _Images, opts: SampleOptions) -> np.ndarray:
  dims = opts.dims
  if dims is None:
    dims = largest_kl_dims(kl_per_dim(run, data.first(KL_IMAGES)))
  tiles = manifold_tiles(run, dims, opts.n or 12)
  return picture(
    tiles, caption=f"rows: z{dims[0]}, columns: z{dims[1]} (5%…95% prior quantiles), others 0"
  )


def _colorize(run: Run, data: _Images, opts: SampleOptions) -> np.ndarray:
  from vae_jax.colorize import (
    colorize_picture,
  )  # imported here: vae_jax.colorize builds on this module

  if not opts.colorizer:
    raise ValueError(
      "--kind colorize needs --colorizer W2, a workdir trained with configs/colorizer.py."
    )
  return colorize_picture(run, opts.colorizer, opts.n or 24, opts.seed, opts.temperature)


KINDS: dict[str, Callable[[Run, _Images, SampleOptions], np.ndarray]] = {
  "recon": _recon,
  "prior": _prior,
  "interp": _interp,
  "traverse": _traverse,
  "manifold": _manifold,
  "colorize": _colorize,
}


def write_samples(
  workdir: str | Path,
  kind: str,
  out: str | Path | None = None,
  options: SampleOptions = SampleOptions(),
  data: str | None = None,
  split: str = "val",
) -> Path:
  """Restore ``workdir``'s latest checkpoint, draw one kind of picture, save it as PNG.

  Args:
    workdir: a training workdir.
    kind: one of ``KINDS``.
    out: PNG path (default ``workdir/samples/<kind>.png``).
    options: sizes, seed and per-kind settings.
    data: a source string to take images from (all of it, with the run's
      preprocessing); default: the run's ``split``.
    split: ``val`` (held out) or ``train``.

  Returns:
    The path written.
  """
  if kind not in KINDS:
    raise ValueError(f"Unknown sample kind {kind!r}; choose one of {sorted(KINDS)}.")
  run = load_run(workdir)
  grid = KINDS[kind](run, _Images(*image_subset(run.config, data, split)), options)
  return images.save_png(grid, out or workdir_path(workdir) / "samples" / f"{kind}.png")
