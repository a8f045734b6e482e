"""From ``config.data`` to usable, split images: check, decode once, split, load.

``build_dataset`` turns the configured source into usable images: sources
that need decoding (folders, TFDS datasets, arrays that need resizing) are
decoded once into the cache (or, with ``config.data.cache=False``, checked
once), every unusable item is skipped and reported, and a run with nothing
usable stops there, before any model is built. ``run_images`` is what
everything that looks inside a trained run reads: its own held-out split, or
any other source through the run's preprocessing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import tqdm

from vae_jax.data import cache
from vae_jax.data.preprocess import Preprocess, preprocess_from_config
from vae_jax.data.report import DataReport
from vae_jax.data.sources import DEFAULT_MAX_PIXELS, ArraySource, make_source
from vae_jax.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
# Offset that gives the split its own stream of the run's seed (the shuffle has another:
# pipeline.py).
_SPLIT_SEED = 1


class Subset:
  """Random-access view of ``source`` restricted to ``indices``."""

  def __init__(self, source: Any, indices: Sequence[int]):
    self.source = source
    self.indices = np.asarray(indices, dtype=np.int64)
    self.preprocessed_with = getattr(source, "preprocessed_with", None)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> np.ndarray:
    return self.source[int(self.indices[i])]

  def take(self, indices: Sequence[int]) -> np.ndarray | list[np.ndarray]:
    return read_items(self.source, self.indices[np.asarray(indices, dtype=np.int64)])


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A source with its preprocessing and its seeded train/validation split.

  ``source`` may already hold preprocessed images (the decode cache); its
  ``preprocessed_with`` attribute says so, and :func:`load_images` and
  :func:`train_iterator` then do not preprocess twice.
  """

  source: Any
  preprocess: Preprocess
  train_indices: np.ndarray
  val_indices: np.ndarray
  report: DataReport | None = None

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.preprocess.output_shape

  @property
  def train(self) -> Subset:
    return Subset(self.source, self.train_indices)

  @property
  def val(self) -> Subset:
    return Subset(self.source, self.val_indices)


def source_from_config(data_cfg: ml_collections.ConfigDict, source: str | None = None) -> Any:
  """The raw source named by ``source`` (default: ``data_cfg.source``)."""
  synthetic = data_cfg.synthetic
  return make_source(
    source or data_cfg.source,
    num_images=synthetic.num_images,
    image_size=synthetic.image_size,
    seed=synthetic.seed,
    tfds_data_dir=data_cfg.tfds_data_dir or None,
    tfds_split=data_cfg.tfds_split,
    tfds_image_key=data_cfg.tfds_image_key,
    max_image_pixels=data_cfg.max_image_pixels or DEFAULT_MAX_PIXELS,
  )


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Seeded permutation of range(n) cut into (train, val); val is sorted for stable reports."""
  if not 0.0 <= val_fraction < 1.0:
    raise ConfigError(f"config.data.val_fraction must be in [0, 1); got {val_fraction}.")
  order = np.random.default_rng([seed, _SPLIT_SEED]).permutation(n)
  n_val = round(n * val_fraction)
  if val_fraction > 0:
    n_val = max(n_val, 1)
  if n - n_val < 1:
    raise DataError(
      f"Only {n} images: nothing left to train on after holding out {n_val} for validation."
    )
  return np.sort(order[n_val:]), np.sort(order[:n_val])


def usable_images(
  source: Any, preprocess: Preprocess, data_cfg: ml_collections.ConfigDict
) -> tuple[Any, DataReport]:
  """The items of ``source`` that survive decoding and ``preprocess``, and what did not.

  Decoded sources go through the cache (``config.data.cache``), or are
  checked item by item without it; other sources (procedural, arrays
  already of the output shape) are checked on their first item, since all
  their items share one shape.
  """
  spec = data_cfg.source
  discovery = list(getattr(source, "skipped", []))
  needs_decoding = hasattr(source, "fingerprint") and not (
    isinstance(source, ArraySource) and preprocess.is_identity_for(source.shape[1:])
  )
  if not needs_decoding:
    try:
      preprocess(source[0])
    except ValueError as error:
      raise DataError(
        f"the images of {spec} cannot be used with this config.data: {error}"
      ) from None
    return source, DataReport(spec, len(source), len(source), discovery)
  workers = data_cfg.decode_workers
  if data_cfg.cache:
    cache_dir = data_cfg.cache_dir or cache.default_cache_dir()
    images = cache.cached_images(source, preprocess, cache_dir, workers)
    skipped = discovery + [(s.item, s.reason) for s in images.skipped]
    return images, DataReport(
      spec, len(source) + len(discovery), len(images), skipped, str(images.directory)
    )
  failed = cache.check_all(source, preprocess, workers)
  kept = np.setdiff1d(np.arange(len(source)), [s.index for s in failed])
  skipped = discovery + [(s.item, s.reason) for s in failed]
  return Subset(source, kept), DataReport(spec, len(source) + len(discovery), len(kept), skipped)


def load_source(
  data_cfg: ml_collections.ConfigDict, workdir: str | Path | None = None
) -> tuple[Any, Preprocess, DataReport]:
  """The usable images of ``data_cfg.source``, their preprocessing and a report.

  Args:
    data_cfg: a config's ``data`` group.
    workdir: if given, ``data_report.json`` (every skipped item and why) is
      written there.

  Raises:
    DataError: the source is missing or malformed, or none of its images
      is usable with the configured preprocessing.
  """
  preprocess = preprocess_from_config(data_cfg)
  images, report = usable_images(source_from_config(data_cfg), preprocess, data_cfg)
  report_path = report.write(workdir) if workdir is not None else None
  report.raise_if_unusable(preprocess.image_size, report_path)
  (log.warning if report.skipped else log.info)("%s", report.summary(report_path))
  return images, preprocess, report


def build_dataset(config: ml_collections.ConfigDict, workdir: str | Path | None = None) -> Dataset:
  """Usable images, preprocessing and split of a run's config (``load_source``, then the split)."""
  images, preprocess, report = load_source(config.data, workdir)
  train_idx, val_idx = split_indices(len(images), config.data.val_fraction, config.seed)
  return Dataset(images, preprocess, train_idx, val_idx, report)


def read_items(source: Any, indices: np.ndarray) -> np.ndarray | list[np.ndarray]:
  """Items ``indices`` of ``source``: one array when the source reads batches, else a list."""
  take = getattr(source, "take", None)
  return take(indices) if take is not None else [source[int(i)] for i in indices]


def preprocessing_to_apply(source: Any, preprocess: Preprocess | None) -> Preprocess | None:
  """``preprocess``, or None when ``source`` already holds images it produced."""
  done = getattr(source, "preprocessed_with", None)
  if done is None:
    return preprocess
  if preprocess is not None and done != preprocess:
    raise ValueError(
      f"these images were preprocessed with {done}; cannot also apply {preprocess} to them"
    )
  return None


def load_images(
  subset: Subset, preprocess: Preprocess | None, limit: int | None = None, desc: str | None = None
) -> np.ndarray:
  """Preprocess the first ``limit`` images of ``subset`` into one uint8 N×H×W×C array.

  Images the subset's source already preprocessed (the decode cache) are
  read as they are.
  """
  n = len(subset) if limit is None else min(limit, len(subset))
  transform = preprocessing_to_apply(subset, preprocess)
  shape = (
    preprocess.output_shape if preprocess is not None else subset.preprocessed_with.output_shape
  )
  out = np.empty((n,) + shape, np.uint8)
  step = 256
  with tqdm.tqdm(total=n, desc=desc, disable=desc is None or n < 500, leave=False) as bar:
    for start in range(0, n, step):
      images = read_items(subset, np.arange(start, min(start + step, n)))
      out[start : start + len(images)] = (
        images if transform is None else [transform(x) for x in images]
      )
      bar.update(len(images))
  return out


def run_images(
  config: ml_collections.ConfigDict, data: str | None = None, split: str = "val"
) -> tuple[Subset, Preprocess]:
  """The images to look at inside a trained run, with the run's own preprocessing.

  Args:
    config: the run's config.
    data: any source string (``folder:PATH``, ``npz:PATH``, ``synthetic:…``);
      all of its images are used, read as training reads a source (through
      the decode cache, unusable files skipped). ``None``: the run's own source.
    split: with ``data=None``, which split of the run's seeded train/val cut.

  Returns:
    A random-access subset (its ``source`` keeps ``factors`` for synthetic
    data) and the preprocessing that turns its images into model inputs.
  """
  if data is None:
    if split not in SPLITS:
      raise ConfigError(f"Unknown split {split!r}; choose one of {SPLITS}.")
    dataset = build_dataset(config)
    subset = getattr(dataset, split)
    if not len(subset):
      raise DataError(
        f"The run's {split} split is empty (config.data.val_fraction=0?); use another split or "
        "--data."
      )
    return subset, dataset.preprocess
  data_cfg = config.data.copy_and_resolve_references()
  data_cfg.source = data
  images, preprocess, _ = load_source(data_cfg)
  return Subset(images, np.arange(len(images))), preprocess
