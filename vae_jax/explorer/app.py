"""What the explorer's HTTP API does, without HTTP: checked requests in, PNGs and JSON out.

Every request is validated here (``BadRequest`` names what is wrong), so the
server only moves bytes. Codes are in the prior's coordinates (prior
standard deviations), as ``vae_jax.inference`` decodes them.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import jax
import numpy as np

from vae_jax import images, sampling
from vae_jax.data.sources import ImageReadError, load_image
from vae_jax.errors import DataError
from vae_jax.inference import Colorizer, Run

MAX_CODES = 256  # codes per decode request
MAX_ABS_CODE = 50.0  # prior standard deviations; beyond this nothing the model saw
MAX_GALLERY = 512  # held-out images offered in the gallery
MAX_POINTS = 64  # codes on a strip or along a side of the plane
MAX_UPLOAD_BYTES = 20 << 20
STRIP_POINTS = 9  # interpolation: the two ends and the reference's 7 points between
PLANE_SIDE = 8
PLANE_RADIUS = 3.0  # the plane spans ±3 prior standard deviations on its two dimensions
KL_ACTIVE = 0.05  # nats: dimensions below this carry (almost) nothing and are greyed


class BadRequest(ValueError):
  """A request the explorer cannot serve; its message says what to change (a 400 response)."""


def png_data_url(picture: np.ndarray) -> str:
  return "data:image/png;base64," + base64.b64encode(images.encode_png(picture, fast=True)).decode()


def _number(value: Any, name: str, low: float, high: float) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise BadRequest(f"{name} must be a finite number; got {value!r}.")
  if not low <= value <= high:
    raise BadRequest(f"{name} must be in [{low:g}, {high:g}]; got {value!r}.")
  return float(value)


def _count(value: Any, name: str, low: int, high: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
    raise BadRequest(f"{name} must be a whole number in [{low}, {high}]; got {value!r}.")
  return value


class Explorer:
  """A trained run (and optionally a colouriser) with the gallery of images the page offers.

  Args:
    run: the VAE, opened with ``vae_jax.inference.open_run``.
    gallery: uint8 model inputs to offer (the run's held-out split, or ``--data``).
    source: where the gallery comes from, for the page.
    colorizer: a colouriser of the run's grey images, or None.
  """

  def __init__(self, run: Run, gallery: np.ndarray, source: str, colorizer: Colorizer | None):
    if colorizer is not None and colorizer.grey_shape != run.image_shape:
      raise DataError(
        f"The colouriser colours grey {colorizer.grey_shape} images; this VAE makes "
        f"{run.image_shape} ones. Use a colouriser trained at this size on grey images."
      )
    self.run, self.colorizer, self.source = run, colorizer, source
    self.gallery = np.asarray(gallery[:MAX_GALLERY])
    mean, logvar = run.encode(self.gallery)
    self.gallery_codes = mean
    self.kl = np.mean(0.5 * (np.exp(logvar) + np.square(mean) - 1.0 - logvar), axis=0)
    self.dims = sampling.largest_kl_dims(self.kl) if run.latent_dim > 1 else (0, 0)

  def meta(self) -> dict:
    """What the page (or a script) needs to know about the run."""
    config = self.run.config
    return {
      "workdir": str(self.run.workdir),
      "model": config.model.name,
      "likelihood": config.loss.likelihood,
      "step": self.run.step,
      "latent_dim": self.run.latent_dim,
      "image_shape": list(self.run.image_shape),
      "kl_per_dim": [round(float(v), 4) for v in self.kl],
      "kl_active": KL_ACTIVE,
      "plane_dims": list(self.dims),
      "plane_side": PLANE_SIDE,
      "plane_radius": PLANE_RADIUS,
      "strip_points": STRIP_POINTS,
      "gallery_size": len(self.gallery),
      "source": self.source,
      "samplers": list(self.run.samplers),
      "colorizer": self.colorizer is not None,
      "max_codes": MAX_CODES,
      "max_abs_code": MAX_ABS_CODE,
    }

  # --- requests -------------------------------------------------------------------------------

  def codes(self, value: Any, name: str = "codes", max_count: int = MAX_CODES) -> np.ndarray:
    """``value`` as an N×Z float32 array of finite, bounded codes, or a ``BadRequest``."""
    if not isinstance(value, list) or not value:
      raise BadRequest(f"{name} must be a non-empty list of codes (lists of numbers).")
    if len(value) > max_count:
      raise BadRequest(f"{name}: at most {max_count} codes per request; got {len(value)}.")
    rows = []
    for i, code in enumerate(value):
      rows.append(self.code(code, f"{name}[{i}]"))
    return np.stack(rows)

  def code(self, value: Any, name: str = "code") -> np.ndarray:
    """One code of this run's latent size, or a ``BadRequest``."""
    z = self.run.latent_dim
    if not isinstance(value, list) or len(value) != z:
      got = f"{len(value)} numbers" if isinstance(value, list) else repr(value)[:40]
      raise BadRequest(f"{name} must be a list of {z} numbers (this run's latent size); got {got}.")
    bound = MAX_ABS_CODE
    return np.array(
      [_number(v, f"{name}[{d}]", -bound, bound) for d, v in enumerate(value)], np.float32
    )

  def dim(self, value: Any, name: str = "dim") -> int:
    return _count(value, name, 0, self.run.latent_dim - 1)

  def decoded(self, codes: np.ndarray, colorize: bool = False) -> np.ndarray:
    """uint8 images N×H×W×C of the codes, colourised when asked (and possible)."""
    out = self.run.decode(codes)
    if colorize:
      if self.colorizer is None:
        raise BadRequest("colorize needs a colouriser: start the explorer with --colorizer W2.")
      out = self.colorizer.colorize(out)
    return out

  def decode_png(self, codes: np.ndarray, cols: int | None = None, colorize: bool = False) -> bytes:
    """The decoded codes as one PNG: one image, or a row (``cols`` a row) with one pixel between."""
    cols = len(codes) if cols is None else _count(cols, "cols", 1, MAX_CODES)
    decoded = self.decoded(codes, colorize)
    if len(decoded) == 1:  # the image itself
      return images.encode_png(decoded[0], fast=True)
    return images.encode_png(
      images.make_grid(decoded, min(cols, len(codes)), scale=1, pad=1), fast=True
    )

  def decode_npy(self, codes: np.ndarray, colorize: bool = False) -> bytes:
    """The decoded codes as a ``.npy`` file of uint8 N×H×W×C (for scripts and notebooks)."""
    out = io.BytesIO()
    np.save(out, self.decoded(codes, colorize))
    return out.getvalue()

  def encode_upload(self, data: bytes, colorize: bool = False) -> dict:
    """An uploaded picture through the run's preprocessing: its code, input and reconstruction."""
    if len(data) > MAX_UPLOAD_BYTES:
      raise BadRequest(f"The upload is {len(data) >> 20} MB; at most {MAX_UPLOAD_BYTES >> 20} MB.")
    try:
      picture = load_image(data, self.run.config.data.max_image_pixels or 0x7FFFFFFF)
      x = self.run.preprocess(picture)[None]
    except (ImageReadError, DataError) as error:
      raise BadRequest(
        f"That file cannot be used: {getattr(error, 'reason', None) or error}."
      ) from None
    mean, logvar = self.run.encode(x)
    return {
      "code": [round(float(v), 4) for v in mean[0]],
      "logvar": [round(float(v), 4) for v in logvar[0]],
      "input": png_data_url(x[0]),
      "reconstruction": png_data_url(self.decoded(mean, colorize)[0]),
    }

  def gallery_page(self, start: Any, count: Any) -> dict:
    start = _count(start, "start", 0, max(0, len(self.gallery) - 1))
    count = _count(count, "count", 1, MAX_GALLERY)
    items = [
      {"index": i, "png": png_data_url(self.gallery[i])}
      for i in range(start, min(start + count, len(self.gallery)))
    ]
    return {"total": len(self.gallery), "items": items}

  def gallery_item(self, index: Any) -> dict:
    if not len(self.gallery):
      raise BadRequest("The gallery is empty.")
    i = _count(index, "index", 0, len(self.gallery) - 1)
    code = self.gallery_codes[i]
    return {
      "index": i,
      "code": [round(float(v), 4) for v in code],
      "png": png_data_url(self.gallery[i]),
    }

  def sample(self, sampler: Any, temperature: Any, seed: Any) -> dict:
    if sampler not in self.run.samplers:
      raise BadRequest(f"sampler must be one of {list(self.run.samplers)}; got {sampler!r}.")
    t = _number(temperature, "temperature", 0.0, 10.0)
    seed = _count(seed, "seed", 0, 2**31 - 1)
    z = self.run.codes(jax.random.key(seed), 1, t, sampler)[0]
    return {"code": [round(float(v), 4) for v in z]}

  def path_codes(self, a: Any, b: Any, spherical: Any, points: Any) -> np.ndarray:
    """Codes from ``a`` to ``b`` inclusive (the interpolation strip)."""
    n = _count(points, "points", 2, MAX_POINTS)
    return sampling.interpolate(self.code(a, "a"), self.code(b, "b"), n, bool(spherical))

  def traverse_codes(self, code: Any, dim: Any, points: Any) -> np.ndarray:
    """``code`` with dimension ``dim`` swept over ±3 (a traversal strip)."""
    base, d = self.code(code), self.dim(dim)
    n = _count(points, "points", 2, MAX_POINTS)
    codes = np.repeat(base[None], n, axis=0)
    codes[:, d] = base[d] + np.linspace(-sampling.TRAVERSE_RADIUS, sampling.TRAVERSE_RADIUS, n)
    return codes

  def plane_codes(self, code: Any, dims: Any, side: Any) -> np.ndarray:
    """side×side codes: ``code`` with ``dims[0]`` down the rows and ``dims[1]`` along columns."""
    base = self.code(code)
    if not isinstance(dims, list) or len(dims) != 2:
      raise BadRequest(f"dims must be two latent dimensions; got {dims!r}.")
    i, j = self.dim(dims[0], "dims[0]"), self.dim(dims[1], "dims[1]")
    n = _count(side, "side", 2, 16)
    values = np.linspace(-PLANE_RADIUS, PLANE_RADIUS, n, dtype=np.float32)
    codes = np.broadcast_to(base, (n, n, len(base))).copy()
    codes[:, :, i] = values[:, None]
    codes[:, :, j] = values[None, :]
    return codes.reshape(n * n, len(base))

  def warm_up(self) -> None:
    """Compile every shape the page asks for, so that no slider movement waits for a compile."""
    z = np.zeros((1, self.run.latent_dim), np.float32)
    for n in (1, STRIP_POINTS, sampling.TRAVERSE_STEPS, PLANE_SIDE * PLANE_SIDE):
      self.decoded(np.repeat(z, n, axis=0), colorize=self.colorizer is not None)
    self.run.encode(np.zeros((1,) + self.run.image_shape, np.uint8))
