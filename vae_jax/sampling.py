"""Pictures of what a trained VAE has learned: reconstructions, prior samples,
interpolations, latent traversals, 2-D manifolds and colourised samples.

Each kind has a function returning its tiles as a uint8 array R×C×H×W×Ch
(rows × columns of images), so a notebook can use the images themselves,
and an options class saying what it draws (``Recon``, ``Prior``, …);
``write_samples`` is the whole ``bin/sample.py`` command. Fixed seeds give
identical pictures: every random choice (which images, which prior draws)
comes from the ``seed`` argument.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
from pathlib import Path
from typing import Any, ClassVar

import jax
import numpy as np

from vae_jax import images, samplers
from vae_jax.config import workdir_path
from vae_jax.data.dataset import Subset, load_images, run_images
from vae_jax.errors import ConfigError, WriteError
from vae_jax.inference import Colorizer, Run, open_colorizer, open_run

log = logging.getLogger(__name__)

INTERIOR_POINTS = 7  # the reference: two encoded faces and 7 evenly spaced points between them
TRAVERSE_RADIUS = 3.0  # prior standard deviations either side of the base code
TRAVERSE_STEPS = 11  # codes along each traversal row
KL_IMAGES = 500  # images averaged for each dimension's KL (labels, default manifold dims)
MAX_PICTURE_PIXELS = 64_000_000  # ~190 MB of RGB: larger requests are refused, not allocated


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


def check_dims(dims: tuple[int, ...], latent_dim: int) -> tuple[int, int]:
  """``dims`` if it names two different dimensions of the latent space, else a ``ConfigError``."""
  if len(dims) != 2 or dims[0] == dims[1] or not all(0 <= d < latent_dim for d in dims):
    raise ConfigError(
      f"Manifold dims must be two different dimensions in 0..{latent_dim - 1}; got {dims}."
    )
  return int(dims[0]), int(dims[1])


def manifold_codes(latent_dim: int, dims: tuple[int, int], n: int) -> np.ndarray:
  """n×n×Z codes: dimension ``dims[0]`` varies down the rows, ``dims[1]`` along the columns.

  Values are Gaussian quantiles at probabilities 0.05…0.95 (evenly spaced in
  prior mass, as in Kingma & Welling's manifold figures); other dimensions
  stay at the prior mean, 0.
  """
  i, j = check_dims(dims, latent_dim)
  values = np.array(
    [statistics.NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)], np.float32
  )
  codes = np.zeros((n, n, latent_dim), np.float32)
  codes[:, :, i] = values[:, None]
  codes[:, :, j] = values[None, :]
  return codes


def decode_grid(run: Run, codes_RCZ: np.ndarray) -> np.ndarray:
  """Decoded R×C×Z codes as R×C×H×W×C tiles."""
  rows, cols, latent = codes_RCZ.shape
  return run.decode(codes_RCZ.reshape(rows * cols, latent)).reshape((rows, cols) + run.image_shape)


def recon_tiles(run: Run, x_uint8: np.ndarray, ncol: int = 8) -> np.ndarray:
  """Rows of inputs, each followed by a row of their posterior-mean reconstructions."""
  x_uint8 = np.asarray(x_uint8)
  return images.interleave_rows([x_uint8, run.reconstruct(x_uint8)], ncol)


def prepare_sampler(run: Run, sampler: str) -> None:
  """Make ``sampler`` usable on ``run``: fit its ``gmm`` where the run has none for its step.

  Runs trained before samplers existed, or opened at an older checkpoint than
  the stored mixture's, get one fitted from the run's training split (a few
  seconds), saved beside the checkpoints for next time.
  """
  if sampler not in samplers.SAMPLERS:
    raise ConfigError(f"Unknown sampler {sampler!r}; choose one of {samplers.SAMPLERS}.")
  if sampler == "prior" or run.mixture is not None:
    return
  subset, preprocess = run_images(run.config, None, "train")
  count = samplers.fit_images(run.image_shape)
  log.info(
    "%s has no gmm sampler for step %d: fitting one to the codes of %d training images.",
    run.workdir,
    run.step,
    min(count, len(subset)),
  )
  x = load_images(subset, preprocess, count, desc="training images for the sampler")
  run.mixture = samplers.fit(run.encode, x, run.config.seed, run.step)
  try:
    samplers.save(run.mixture, run.workdir)
  except WriteError as error:
    log.warning("The fitted sampler is used but not kept: %s", error)


def prior_tiles(
  run: Run, key: jax.Array, side: int, temperature: float = 1.0, sampler: str = "prior"
) -> np.ndarray:
  """side×side decoded draws of ``sampler`` (``prior``: z ~ N(0, temperature² I))."""
  return run.sample(key, side * side, temperature, sampler).reshape((side, side) + run.image_shape)


def interp_tiles(
  run: Run,
  x_a: np.ndarray,
  x_b: np.ndarray,
  spherical: bool = False,
  interior: int = INTERIOR_POINTS,
) -> np.ndarray:
  """One row per pair: input a, the decoded path from a's to b's posterior mean, input b.

  Columns 1 and -2 are the reconstructions of the two inputs (the path's
  ends); columns 0 and -1 the inputs themselves.
  """
  mean_a, mean_b = run.encode(x_a)[0], run.encode(x_b)[0]
  codes = np.stack([interpolate(a, b, interior + 2, spherical) for a, b in zip(mean_a, mean_b)])
  path = decode_grid(run, codes)
  return np.concatenate([np.asarray(x_a)[:, None], path, np.asarray(x_b)[:, None]], axis=1)


def traverse_tiles(
  run: Run, x_base: np.ndarray, steps: int, radius: float = TRAVERSE_RADIUS
) -> np.ndarray:
  """One row per latent dimension, sweeping it around the base image's posterior mean."""
  base = run.encode(np.asarray(x_base)[None])[0][0]
  return decode_grid(run, traverse_codes(base, steps, radius))


def manifold_tiles(run: Run, dims: tuple[int, int], side: int) -> np.ndarray:
  """The decoded side×side grid of ``manifold_codes``."""
  return decode_grid(run, manifold_codes(run.latent_dim, dims, side))


def colorize_prior(
  run: Run,
  colorizer: Colorizer,
  count: int,
  key: jax.Array,
  temperature: float = 1.0,
  sampler: str = "prior",
) -> tuple[np.ndarray, np.ndarray]:
  """``count`` grey decoded draws of ``sampler`` and their colourised versions (uint8)."""
  if run.image_shape[-1] != 1:
    raise ConfigError("The colouriser colours grey samples; this VAE models RGB images already.")
  grey = run.sample(key, count, temperature, sampler)
  return grey, colorizer.colorize(grey)


def largest_kl_dims(kl_Z: np.ndarray, count: int = 2) -> tuple[int, ...]:
  """Indices of the ``count`` dimensions carrying the most information, largest first."""
  return tuple(int(d) for d in np.argsort(-np.asarray(kl_Z), kind="stable")[:count])


class Images:
  """The images a picture draws from (the run's split or ``--data``), loaded when needed."""

  def __init__(self, run: Run, data: str | None = None, split: str = "val"):
    self._args = (run.config, data, split)
    self._subset = None

  def _loaded(self) -> tuple[Subset, Any]:
    if self._subset is None:
      self._subset = run_images(*self._args)
    return self._subset

  def chosen(self, count: int, seed: int) -> np.ndarray:
    """``count`` distinct images picked by ``seed`` (all of them, shuffled, if there are fewer)."""
    subset, preprocess = self._loaded()
    order = np.random.default_rng(seed).permutation(len(subset))[:count]
    return load_images(Subset(subset.source, subset.indices[order]), preprocess)

  def first(self, count: int) -> np.ndarray:
    subset, preprocess = self._loaded()
    return load_images(subset, preprocess, count, desc="images for KL")


@dataclasses.dataclass(frozen=True)
class Kind:
  """What every kind of picture shares: a size that ``--n`` sets, with its default and limit."""

  size_field: ClassVar[str]
  limit: ClassVar[int]

  def __post_init__(self):
    size = getattr(self, self.size_field)
    if not isinstance(size, int) or not 1 <= size <= self.limit:
      raise ConfigError(
        f"--n ({self.size_field} of a {self.name} picture) must be a whole number at least 1 and "
        f"at most {self.limit}; got {size}."
      )
    if getattr(self, "sampler", "prior") not in samplers.SAMPLERS:
      raise ConfigError(f"--sampler must be one of {samplers.SAMPLERS}; got {self.sampler!r}.")
    if getattr(self, "temperature", 0.0) < 0 or not math.isfinite(
      getattr(self, "temperature", 0.0)
    ):
      raise ConfigError(
        "The prior temperature is a standard deviation, a finite number at least 0; got "
        f"{self.temperature}."
      )

  @property
  def name(self) -> str:
    return type(self).__name__.lower()

  def tiles(self, run: Run) -> int:
    """How many tiles the picture holds (to refuse one too large before drawing it)."""
    raise NotImplementedError

  def draw(self, run: Run, data: Images, seed: int) -> np.ndarray:
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Recon(Kind):
  """Inputs above their posterior-mean reconstructions, 8 per row."""

  images: int = 24
  size_field: ClassVar[str] = "images"
  limit: ClassVar[int] = 4096

  def tiles(self, run: Run) -> int:
    return 2 * self.images

  def draw(self, run: Run, data: Images, seed: int) -> np.ndarray:
    tiles = recon_tiles(run, data.chosen(self.images, seed))
    return images.layout(
      tiles, caption="each row of inputs above its reconstructions (posterior mean)"
    )


def _samples_caption(sampler: str, temperature: float) -> str:
  source = "N(0, I) prior" if sampler == "prior" else "Gaussian mixture on the codes (gmm)"
  return f"samples of the {source}, temperature {temperature:g}"


@dataclasses.dataclass(frozen=True)
class Prior(Kind):
  """A side×side grid of decoded draws of a sampler (``gmm`` or ``prior``) at a temperature."""

  side: int = 8
  temperature: float = 1.0
  sampler: str = samplers.SAMPLERS[0]
  size_field: ClassVar[str] = "side"
  limit: ClassVar[int] = 128

  def tiles(self, run: Run) -> int:
    return self.side**2

  def draw(self, run: Run, data: Images, seed: int) -> np.ndarray:
    prepare_sampler(run, self.sampler)
    tiles = prior_tiles(run, jax.random.key(seed), self.side, self.temperature, self.sampler)
    return images.layout(tiles, caption=_samples_caption(self.sampler, self.temperature))


@dataclasses.dataclass(frozen=True)
class Interp(Kind):
  """Rows of 7 interpolation points between two encoded images."""

  pairs: int = 6
  spherical: bool = False
  size_field: ClassVar[str] = "pairs"
  limit: ClassVar[int] = 1024

  def tiles(self, run: Run) -> int:
    return self.pairs * (INTERIOR_POINTS + 4)

  def draw(self, run: Run, data: Images, seed: int) -> np.ndarray:
    x = data.chosen(2 * self.pairs, seed)
    pairs = len(x) // 2
    if not pairs:
      raise ConfigError("Interpolation needs at least two images.")
    tiles = interp_tiles(run, x[:pairs], x[pairs : 2 * pairs], self.spherical)
    way = "spherical" if self.spherical else "linear"
    return images.layout(
      tiles,
      caption=f"input, reconstruction, {INTERIOR_POINTS} points of {way} interpolation, "
      "reconstruction, input",
    )


@dataclasses.dataclass(frozen=True)
class Traverse(Kind):
  """One row per latent dimension, ``steps`` codes over ±3 around one encoded image, with its KL."""

  steps: int = TRAVERSE_STEPS
  size_field: ClassVar[str] = "steps"
  limit: ClassVar[int] = 256

  def tiles(self, run: Run) -> int:
    return run.latent_dim * self.steps

  def draw(self, run: Run, data: Images, seed: int) -> np.ndarray:
    kl = run.kl_per_dim(data.first(KL_IMAGES))
    tiles = traverse_tiles(run, data.chosen(1, seed)[0], self.steps)
    labels = [f"z{d}  KL {v:.2f}" for d, v in enumerate(kl)]
    return images.layout(
      tiles, labels, caption=f"each dimension over ±{TRAVERSE_RADIUS:g} around one encoded image"
    )


@dataclasses.dataclass(frozen=True)
class Manifold(Kind):
  """A side×side map of two latent dimensions (default: the two of largest KL), the others at 0."""

  side: int = 12
  dims: tuple[int, int] | None = None
  size_field: ClassVar[str] = "side"
  limit: ClassVar[int] = 128

  def tiles(self, run: Run) -> int:
    return self.side**2

  def draw(self, run: Run, data: Images, seed: int) -> np.ndarray:
    dims = self.dims
    if dims is None:
      dims = largest_kl_dims(run.kl_per_dim(data.first(KL_IMAGES)))
    tiles = manifold_tiles(run, check_dims(tuple(dims), run.latent_dim), self.side)
    return images.layout(
      tiles, caption=f"rows: z{dims[0]}, columns: z{dims[1]} (5%…95% prior quantiles), others 0"
    )


@dataclasses.dataclass(frozen=True)
class Colorize(Kind):
  """Grey prior samples above their colourised versions (with a colouriser's workdir)."""

  faces: int = 24
  temperature: float = 1.0
  sampler: str = samplers.SAMPLERS[0]
  colorizer: str = ""
  size_field: ClassVar[str] = "faces"
  limit: ClassVar[int] = 4096

  def tiles(self, run: Run) -> int:
    return 2 * self.faces

  def draw(self, run: Run, data: Images, seed: int) -> np.ndarray:
    if not self.colorizer:
      raise ConfigError(
        "--kind colorize needs --colorizer W2, a workdir trained with configs/colorizer.py."
      )
    colorizer = open_colorizer(self.colorizer)
    prepare_sampler(run, self.sampler)
    grey, rgb = colorize_prior(
      run, colorizer, self.faces, jax.random.key(seed), self.temperature, self.sampler
    )
    caption = f"grey {_samples_caption(self.sampler, self.temperature)}, above them in colour"
    return images.layout(images.comparison_tiles(grey, rgb), caption=caption)


KINDS: dict[str, type[Kind]] = {
  "recon": Recon,
  "prior": Prior,
  "interp": Interp,
  "traverse": Traverse,
  "manifold": Manifold,
  "colorize": Colorize,
}


def options(kind: str, n: int | None = None, **settings: Any) -> Kind:
  """The options of ``kind``: ``n`` sets its size (``--n``), ``settings`` whichever fields it has.

  Settings of other kinds (``--slerp`` for a prior grid, say) are ignored,
  so one set of command-line flags serves every kind.
  """
  if kind not in KINDS:
    raise ConfigError(f"Unknown sample kind {kind!r}; choose one of {sorted(KINDS)}.")
  cls = KINDS[kind]
  fields = {f.name for f in dataclasses.fields(cls)}
  values = {k: v for k, v in settings.items() if k in fields and v is not None}
  if n is not None:
    values[cls.size_field] = n
  return cls(**values)


def write_samples(
  workdir: str | Path,
  kind: Kind,
  out: str | Path | None = None,
  seed: int = 0,
  data: str | None = None,
  split: str = "val",
) -> Path:
  """Open ``workdir``'s newest intact checkpoint, draw one kind of picture, save it as PNG.

  Args:
    workdir: a training workdir.
    kind: what to draw (``options(...)``, or ``Recon(...)``, ``Prior(...)``, …).
    out: PNG path (default ``workdir/samples/<kind>.png``).
    seed: picks the images and the prior draws.
    data: a source string to take images from (all of it, with the run's
      preprocessing); default: the run's ``split``.
    split: ``val`` (held out) or ``train``.

  Returns:
    The path written.
  """
  run = open_run(workdir)
  h, w = run.image_shape[:2]
  side = max(h, w) * images.default_scale(max(h, w))
  pixels = kind.tiles(run) * side * side
  if pixels > MAX_PICTURE_PIXELS:
    raise ConfigError(
      f"That {kind.name} picture would have {pixels / 1e6:.0f} megapixels (at most "
      f"{MAX_PICTURE_PIXELS / 1e6:.0f}); ask for a smaller --n."
    )
  picture = kind.draw(run, Images(run, data, split), seed)
  return images.save_png(picture, out or workdir_path(workdir) / "samples" / f"{kind.name}.png")
