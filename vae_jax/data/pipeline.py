"""From ``config.data`` to batches: split, shuffle, preprocess, batch, resume.

The training stream is a grain ``MapDataset`` pipeline (source → per-epoch
seeded shuffle → preprocess → batch) turned into an iterator whose state is
saved in every checkpoint, so a resumed run sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import grain
import ml_collections
import numpy as np
import tqdm

from vae_jax.data.preprocess import Preprocess
from vae_jax.data.sources import make_source

# Offsets that give each use of the run's seed its own stream.
_SPLIT_SEED, _SHUFFLE_SEED = 1, 2


class Subset:
  """Random-access view of ``source`` restricted to ``indices``."""

  def __init__(self, source: Any, indices: Sequence[int]):
    self.source = source
    self.indices = np.asarray(indices, dtype=np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> np.ndarray:
    return self.source[int(self.indices[i])]


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A source with its preprocessing and its seeded train/validation split."""

  source: Any
  preprocess: Preprocess
  train_indices: np.ndarray
  val_indices: np.ndarray

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.preprocess.image_size, self.preprocess.image_size, self.preprocess.channels)

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
  )


def preprocess_from_config(data_cfg: ml_collections.ConfigDict) -> Preprocess:
  return Preprocess(
      image_size=data_cfg.image_size,
      channels=data_cfg.channels,
      crop=data_cfg.crop,
      crop_size=data_cfg.crop_size,
  )


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Seeded permutation of range(n) cut into (train, val); val is sorted for stable reports."""
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f"config.data.val_fraction must be in [0, 1); got {val_fraction}.")
  order = np.random.default_rng([seed, _SPLIT_SEED]).permutation(n)
  n_val = int(round(n * val_fraction))
  if val_fraction > 0:
    n_val = max(n_val, 1)
  if n - n_val < 1:
    raise ValueError(f"Only {n} images: nothing left to train on after holding out {n_val} for validation.")
  return np.sort(order[n_val:]), np.sort(order[:n_val])


def build_dataset(config: ml_collections.ConfigDict) -> Dataset:
  """Source, preprocessing and split for a run's config."""
  source = source_from_config(config.data)
  train_idx, val_idx = split_indices(len(source), config.data.val_fraction, config.seed)
  return Dataset(source, preprocess_from_config(config.data), train_idx, val_idx)


def train_iterator(
    dataset: Dataset, batch_size: int, seed: int, worker_count: int = 0
) -> grain.DatasetIterator:
  """Endless iterator of uint8 B×H×W×C training batches, reshuffled every epoch.

  Its ``get_state``/``set_state`` (saved in checkpoints) capture the position
  exactly; the order depends only on ``seed`` and the split.
  """
  if batch_size > len(dataset.train_indices):
    raise ValueError(
        f"config.train.batch_size={batch_size} is larger than the {len(dataset.train_indices)} training images."
    )
  ds = (
      grain.MapDataset.source(dataset.train)
      .shuffle(seed=seed + _SHUFFLE_SEED)
      .repeat(None)
      .map(dataset.preprocess)
      .batch(batch_size, drop_remainder=True)
      .to_iter_dataset()
  )
  if worker_count > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(ds)


def load_images(
    subset: Subset, preprocess: Preprocess, limit: int | None = None, desc: str | None = None
) -> np.ndarray:
  """Preprocess the first ``limit`` images of ``subset`` into one uint8 N×H×W×C array."""
  n = len(subset) if limit is None else min(limit, len(subset))
  out = np.empty((n, preprocess.image_size, preprocess.image_size, preprocess.channels), np.uint8)
  for i in tqdm.trange(n, desc=desc, disable=desc is None or n < 500, leave=False):
    out[i] = preprocess(subset[i])
  return out
