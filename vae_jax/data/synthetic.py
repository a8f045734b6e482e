"""Procedural stand-ins for the reference data sets: cartoon faces and galaxies.

Every config must run on a fresh machine with no download, so these two
generators play the parts of the anime-face and Galaxy Zoo data. Both are
random-access sources with the protocol of ``tfds.data_source`` and grain
sources (``len``, ``source[i]`` -> uint8 H×W×3), so the input pipeline cannot
tell them from real data.

Image ``i`` is a pure function of ``(seed, i)``: a generator seeded with
``[seed, i]`` first draws the generative factors (each normalised to [0, 1]),
then, for galaxies, the nuisance (stars, clumps, sky noise), and the image is
rendered from those. Reading order, sharding and worker count therefore never
change the data, and ``factors(i)`` hands out the ground truth that produced
image ``i``, for checking whether a VAE's latents disentangle it.
"""

from __future__ import annotations

import colorsys
import functools
import math
import operator
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw

from vae_jax.errors import DataError

FACE_FACTORS = (
  "hair_hue",
  "hair_lightness",
  "hair_length",
  "eye_hue",
  "yaw",
  "background_hue",
  "background_lightness",
  "skin_tone",
  "smile",
  "face_size",
)
GALAXY_FACTORS = (
  "bulge_fraction",
  "arm_strength",
  "n_arms",
  "pitch",
  "handedness",
  "inclination",
  "position_angle",
  "size",
  "colour",
)
# Factors that are discrete choices: drawn as 0 or 1 rather than uniform.
_BINARY_GALAXY_FACTORS = (GALAXY_FACTORS.index("n_arms"), GALAXY_FACTORS.index("handedness"))


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
  r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
  return round(255 * r), round(255 * g), round(255 * b)


def _mix(a: tuple[int, ...], b: tuple[int, ...], t: float) -> tuple[int, ...]:
  return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def render_face(factors: np.ndarray, image_size: int = 64) -> np.ndarray:
  """Draw the cartoon face described by ``factors`` (order: FACE_FACTORS).

  Drawn with PIL on a canvas at least 256 px wide, then LANCZOS-downsampled,
  so edges are antialiased at any ``image_size``. Layout is in units of the
  canvas so that the face occupies the frame as in the 30×30 reference crops
  (face filling the middle, hair reaching the edges, shoulders at the bottom).
  Yaw moves the head and, further, the features (a cheap parallax), narrows
  the far eye, and tilts the picture about the head centre by up to ±10°.
  Hue factors are circular: 0 and 1 give the same colour.
  """
  f = dict(zip(FACE_FACTORS, map(float, factors)))
  hair_len, smile = f["hair_length"], f["smile"]
  ss = max(2, -(-256 // image_size))
  n = image_size * ss
  yw = 2.0 * f["yaw"] - 1.0  # -1: turned to the left, +1: to the right

  bg = _hsv(f["background_hue"], 0.3, 0.35 + 0.63 * f["background_lightness"])
  hair = _hsv(f["hair_hue"], 0.55, 0.18 + 0.77 * f["hair_lightness"])
  hair_dark = _mix(hair, (0, 0, 0), 0.35)
  hair_shine = _mix(hair, (255, 255, 255), 0.4)
  skin = _mix((255, 236, 222), (214, 160, 122), f["skin_tone"])
  skin_shade = _mix(skin, (150, 80, 70), 0.18)
  iris = _hsv(f["eye_hue"], 0.8, 0.75)
  iris_dark = _mix(iris, (0, 0, 0), 0.55)
  line = (50, 30, 30)
  clothes = _hsv(f["background_hue"] + 0.5, 0.45, 0.45)

  img = Image.new("RGB", (n, n), bg)
  d = ImageDraw.Draw(img, "RGBA")

  def box(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    return [n * (cx - rx), n * (cy - ry), n * (cx + rx), n * (cy + ry)]

  def poly(points: list[tuple[float, float]], fill: tuple[int, ...]) -> None:
    d.polygon([(n * x, n * y) for x, y in points], fill=fill)

  s = 0.88 + 0.22 * f["face_size"]
  fw, fh = 0.29 * s, 0.31 * s  # half-width, half-height of the cranium
  hx, hy = 0.5 + 0.04 * yw, 0.44  # head centre
  fx = hx + 0.3 * fw * yw  # centre line of the features
  cap_y = hy - 0.22 * fh  # bottom edge of the hair cap

  # Back hair: a cap plus a curtain whose length and width grow with hair_length.
  d.ellipse(box(hx, hy - 0.04, 1.2 * fw, 1.18 * fh), fill=hair_dark)
  bottom = hy + fh * (0.35 + 2.1 * hair_len)
  half = fw * (1.2 + 0.35 * hair_len)
  tips = [
    (hx + half * t, bottom + (0.05 if k % 2 else 0.0) * s)
    for k, t in enumerate(np.linspace(1.0, -1.0, 7))
  ]
  poly([(hx - 1.2 * fw, hy - 0.04), (hx + 1.2 * fw, hy - 0.04)] + tips, hair_dark)

  # Shoulders and neck.
  d.ellipse(box(0.5 + 0.02 * yw, 1.08, 0.42, 0.2), fill=clothes)
  d.rectangle(box(hx, hy + 1.2 * fh, 0.22 * fw, 0.45 * fh), fill=skin_shade)

  # Face: round cranium and a pointed chin that follows the features.
  d.ellipse(box(hx, hy, fw, fh), fill=skin)
  chin = fx + 0.1 * fw * yw
  poly(
    [
      (hx - fw, hy),
      (hx - 0.86 * fw, hy + 0.62 * fh),
      (chin, hy + 1.12 * fh),
      (hx + 0.86 * fw, hy + 0.62 * fh),
      (hx + fw, hy),
    ],
    skin,
  )

  # Eyes: sclera, iris (dark top, light bottom), pupil, highlights, lash line.
  ey = hy + 0.28 * fh
  for side in (-1.0, 1.0):
    squash = 1.0 - 0.35 * max(0.0, side * yw)  # far eye is narrower
    ex = fx + side * 0.44 * fw * (1.0 - 0.25 * max(0.0, side * yw))
    rx, ry = 0.3 * fw * squash, 0.36 * fw
    d.ellipse(box(ex, ey, rx, ry), fill=(255, 255, 255))
    ix = ex + 0.25 * rx * yw
    d.ellipse(box(ix, ey + 0.1 * ry, 0.8 * rx, 0.88 * ry), fill=iris_dark)
    d.ellipse(box(ix, ey + 0.3 * ry, 0.65 * rx, 0.62 * ry), fill=iris)
    d.ellipse(box(ix, ey + 0.15 * ry, 0.32 * rx, 0.4 * ry), fill=(20, 10, 20))
    d.ellipse(box(ix - 0.3 * rx, ey - 0.25 * ry, 0.25 * rx, 0.22 * ry), fill=(255, 255, 255))
    d.ellipse(box(ix + 0.3 * rx, ey + 0.45 * ry, 0.12 * rx, 0.1 * ry), fill=(255, 255, 255))
    d.arc(
      box(ex, ey, 1.05 * rx, 1.04 * ry), 190, 350, fill=line, width=max(1, round(0.07 * fw * n))
    )
    d.ellipse(box(ex, ey + 1.25 * ry, 0.7 * rx, 0.3 * ry), fill=(255, 120, 130, 70))  # blush

  # Nose and mouth: the mouth opens and widens with smile.
  nx, ny = fx + 0.12 * fw * yw, hy + 0.62 * fh
  d.line(
    [(n * nx, n * ny), (n * (nx + 0.03 * fw), n * (ny + 0.05 * fh))],
    fill=skin_shade,
    width=max(1, round(0.025 * fw * n)),
  )
  my = hy + 0.82 * fh
  mw, mh = fw * (0.1 + 0.14 * smile), fh * (0.02 + 0.14 * smile)
  d.pieslice(
    box(fx + 0.15 * fw * yw, my - mh * 0.2, mw, mh),
    0,
    180,
    fill=(160, 50, 60),
    outline=line,
    width=max(1, round(0.02 * fw * n)),
  )

  # Fringe: a cap over the forehead and pointed locks falling to just above the eyes.
  d.chord(box(hx, cap_y, 1.1 * fw, 1.02 * fh), 180, 360, fill=hair)
  xs = np.linspace(hx - 1.08 * fw, hx + 1.08 * fw, 7)
  for k in range(6):
    tip_y = hy + (0.1 if k % 2 else -0.08) * fh
    tip_x = 0.5 * (xs[k] + xs[k + 1]) + 0.12 * fw * yw + (0.04 if k < 3 else -0.04) * fw
    poly([(xs[k], cap_y - 0.01), (xs[k + 1], cap_y - 0.01), (tip_x, tip_y)], hair)
  # Side locks in front of the cheeks; longer hair gives longer locks.
  lock_end = hy + fh * (0.55 + 1.7 * hair_len)
  for side in (-1.0, 1.0):
    x0 = hx + side * 1.1 * fw
    poly(
      [
        (x0, cap_y - 0.02),
        (x0 - side * 0.28 * fw, cap_y),
        (x0 - side * 0.16 * fw, lock_end),
        (x0 + side * 0.05 * fw, lock_end - 0.05 * fh),
      ],
      hair,
    )
  d.arc(
    box(hx, cap_y - 0.25 * fh, 0.8 * fw, 0.6 * fh),
    215,
    325,
    fill=hair_shine,
    width=max(1, round(0.06 * fw * n)),
  )  # shine ring

  img = img.rotate(-10.0 * yw, resample=Image.BILINEAR, center=(n * hx, n * hy), fillcolor=bg)
  return np.array(img.resize((image_size, image_size), Image.LANCZOS))


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates in frame units (-0.5..0.5), as a row and a column."""
  c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
  c.flags.writeable = False
  return c[None, :], c[:, None]


def render_galaxy(
  factors: np.ndarray, image_size: int = 256, rng: np.random.Generator | None = None
) -> np.ndarray:
  """Render the galaxy described by ``factors`` (order: GALAXY_FACTORS).

  Light model: a de Vaucouleurs (Sérsic n=4) bulge plus an exponential disc
  whose surface brightness is modulated by an m-armed logarithmic spiral,
  both projected with axis ratio ``q`` and rotated by the position angle.
  Arms fade out in the inner scale length, where real bulges dominate.
  Fluxes are mixed in linear units, coloured (redder bulge, bluer disc), then
  given SDSS's asinh stretch, which keeps faint arms and the bright core
  visible at once. ``rng`` supplies the nuisance a telescope adds (field
  stars, star-forming clumps on the arms, sky noise); without it the image is
  the clean galaxy, which is what tests of single factors want.
  """
  bf, arm, arms, pitch, hand, incl, pa, size, colour = (float(f) for f in factors)
  n = image_size
  x, y = _grid(n)
  h = 0.045 + 0.06 * size  # disc scale length, frame units
  q = 1.0 - 0.78 * incl  # disc axis ratio; the bulge is rounder
  ca, sa = math.cos(math.pi * pa), math.sin(math.pi * pa)
  u, v = x * ca + y * sa, y * ca - x * sa

  r = np.sqrt(u * u + (v * v) / (q * q)) / h  # radius in the disc plane, in scale lengths
  disc = np.exp(-r)
  amp = max(0.0, arm - 0.2) / 0.8  # the lowest fifth have no arms: ellipticals/S0
  if amp > 0.0:
    m = 2 + round(arms)
    theta = np.arctan2(v / q, u) * (1.0 if hand >= 0.5 else -1.0)
    tan_pitch = math.tan(math.radians(10.0 + 25.0 * pitch))
    wave = 0.5 + 0.5 * np.cos(m * (theta - np.log(r + 1e-3) / tan_pitch))
    wave = wave * wave * wave  # sharpen into narrow arms (mean ~0.31)
    if rng is not None:  # clumpy star formation along the arms
      knots = rng.random((24, 24), dtype=np.float32) ** 2
      wave *= 0.4 + 1.8 * np.asarray(Image.fromarray(knots, "F").resize((n, n), Image.BICUBIC))
    disc *= 1.0 + amp * (1.0 - np.exp(-r * r)) * (3.2 * wave - 1.0)
  qb = 1.0 - 0.4 * incl
  rb = np.sqrt(u * u + (v * v) / (qb * qb)) / (0.4 * h)
  bulge = np.exp(-7.67 * (np.sqrt(np.sqrt(rb)) - 1.0))

  frac = 0.05 + 0.85 * bf
  flux = 1.5 * (h * n) ** 2  # surface brightness independent of size
  bulge *= flux * frac / bulge.sum()
  disc *= flux * (1.0 - frac) / disc.sum()
  bulge_col = np.array(_mix((255, 225, 160), (255, 160, 110), colour), np.float32) / 255
  disc_col = np.array(_mix((150, 185, 255), (235, 215, 200), colour), np.float32) / 255
  # Channel-first planes: every operation below runs on contiguous n×n arrays.
  rgb = bulge_col[:, None, None] * bulge + disc_col[:, None, None] * disc

  if rng is not None:  # field stars: small Gaussian PSF patches
    sigma = max(0.6, 1.1 * n / 256)
    rad = math.ceil(3 * sigma)
    off = np.arange(-rad, rad + 1, dtype=np.float32)
    psf = np.exp(-(off[:, None] ** 2 + off[None, :] ** 2) / (2 * sigma * sigma))
    for _ in range(rng.poisson(4)):
      cy, cx = rng.integers(rad, n - rad, size=2)
      star_col = np.array(_mix((255, 200, 150), (170, 200, 255), rng.random()), np.float32) / 255
      rgb[:, cy - rad : cy + rad + 1, cx - rad : cx + rad + 1] += (
        star_col[:, None, None] * (0.3 * math.exp(rng.uniform(-1.5, 3.0))) * psf
      )

  lum = (rgb[0] + rgb[1] + rgb[2]) * (1.0 / 3.0) + 1e-6
  rgb *= np.arcsinh(10.0 * lum) / (lum * math.asinh(10.0))
  if rng is not None:
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * 0.015 + 0.02
  np.clip(rgb * 255.0 + 0.5, 0.0, 255.0, out=rgb)
  return rgb.transpose(1, 2, 0).astype(np.uint8)


class _Source:
  """Random-access source: ``len``, ``[i]`` -> image and ``factors(i)``.

  It also describes itself for the decode cache (``identity``,
  ``fingerprint``, ``describe``, as the file sources do): rendering costs a
  few milliseconds an image, far more than a small model's train step, so
  training reads rendered, preprocessed images from the cache.
  """

  factor_names: tuple[str, ...] = ()
  kind: str = ""
  # Bump when a renderer changes, so caches of the old pictures are not reused.
  RENDER_VERSION = 1

  def __init__(self, num_images: int, image_size: int, seed: int) -> None:
    if num_images < 0 or image_size < 8:
      raise DataError(f"need num_images >= 0 and image_size >= 8, got {num_images}, {image_size}")
    self.num_images, self.image_size, self.seed = num_images, image_size, seed

  def __len__(self) -> int:
    return self.num_images

  def __repr__(self) -> str:
    return (
      f"{type(self).__name__}(num_images={self.num_images}, "
      f"image_size={self.image_size}, seed={self.seed})"
    )

  def identity(self) -> str:
    return f"synthetic:{self.kind}"

  def fingerprint(self) -> Iterator[str]:
    yield f"{self!r} render v{self.RENDER_VERSION}"

  def describe(self, index: int) -> str:
    return f"synthetic:{self.kind}[{index}]"

  def _draw(self, index: int) -> tuple[np.ndarray, np.random.Generator]:
    """Factors of image ``index`` and the generator, positioned after them."""
    i = operator.index(index)  # accepts numpy integers, rejects floats
    if not 0 <= i < self.num_images:
      raise IndexError(f"index {index} out of range for {len(self)} images")
    rng = np.random.default_rng([self.seed, i])
    return rng.random(len(self.factor_names), dtype=np.float32), rng

  def factors(self, index: int) -> np.ndarray:
    """Ground-truth generative factors of image ``index``, float32 in [0, 1]."""
    return self._draw(index)[0]


class SyntheticFaces(_Source):
  """Cartoon anime-style faces; stands in for the 30×30 anime-face data."""

  factor_names = FACE_FACTORS
  kind = "faces"

  def __init__(self, num_images: int = 4000, image_size: int = 64, seed: int = 0) -> None:
    super().__init__(num_images, image_size, seed)

  def __getitem__(self, index: int) -> np.ndarray:
    return render_face(self.factors(index), self.image_size)


class SyntheticGalaxies(_Source):
  """SDSS-like galaxy photos; stands in for Galaxy Zoo."""

  factor_names = GALAXY_FACTORS
  kind = "galaxies"

  def __init__(self, num_images: int = 4000, image_size: int = 256, seed: int = 0) -> None:
    super().__init__(num_images, image_size, seed)

  def _draw(self, index: int) -> tuple[np.ndarray, np.random.Generator]:
    f, rng = super()._draw(index)
    f[list(_BINARY_GALAXY_FACTORS)] = np.round(f[list(_BINARY_GALAXY_FACTORS)])
    return f, rng

  def __getitem__(self, index: int) -> np.ndarray:
    f, rng = self._draw(index)
    return render_galaxy(f, self.image_size, rng)
