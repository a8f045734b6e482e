"""From ``config.data`` to batches: check, cache, split, shuffle, preprocess, batch, resume.

``build_dataset`` turns the configured source into usable images: sources
that need decoding (folders, TFDS datasets, arrays that need resizing) are
decoded once into the cache (or, with ``config.data.cache=False``, checked
once), every unusable item is skipped and reported, and a run with nothing
usable stops there, before any model is built.

``train_iterator`` is a grain pipeline over that random-access data: batch
``k`` of an endless stream of seeded per-epoch permutations, read, then
preprocessed, in threads (and optionally worker processes). Its state is
one counter, saved in every checkpoint, so a resumed run sees exactly the
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grain
import ml_collections
import numpy as np
import tqdm

from vae_jax.data import cache
from vae_jax.data.preprocess import Preprocess
from vae_jax.data.report import DataReport
from vae_jax.data.sources import DEFAULT_MAX_PIXELS, ArraySource, make_source

log = logging.getLogger(__name__)

# Offsets that give each use of the run's seed its own stream.
_SPLIT_SEED, _SHUFFLE_SEED = 1, 2


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
    tfds_data_dir=data_cfg.get("tfds_data_dir") or None,
    tfds_split=data_cfg.get("tfds_split", "train"),
    tfds_image_key=data_cfg.get("tfds_image_key", "image"),
    max_image_pixels=data_cfg.get("max_image_pixels", 0) or DEFAULT_MAX_PIXELS,
  )


def preprocess_from_config(data_cfg: ml_collections.ConfigDict) -> Preprocess:
  return Preprocess(
    image_size=data_cfg.image_size,
    channels=data_cfg.channels,
    crop=data_cfg.crop,
    crop_size=data_cfg.crop_size,
    max_upscale=data_cfg.get("max_upscale", 0.0),
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
    raise ValueError(
      f"Only {n} images: nothing left to train on after holding out {n_val} for validation."
    )
  return np.sort(order[n_val:]), np.sort(order[:n_val])


def usable_images(
  source: Any, preprocess: Preprocess, data_cfg: ml_collections.ConfigDict
) -> tuple[Any, DataReport]:
  """The items of ``source`` that survive decoding and ``preprocess``, and the report of what did not.

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
      raise ValueError(
        f"the images of {spec} cannot be used with this config.data: {error}"
      ) from None
    return source, DataReport(spec, len(source), len(source), discovery)
  workers = data_cfg.get("decode_workers", 0)
  if data_cfg.get("cache", True):
    cache_dir = data_cfg.get("cache_dir") or cache.default_cache_dir()
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
  """The usable images of ``data_cfg.source`` (through the decode cache), their preprocessing and the report.

  Args:
    data_cfg: a config's ``data`` group.
    workdir: if given, ``data_report.json`` (every skipped item and why) is
      written there.

  Raises:
    ValueError: the source is missing or malformed, or none of its images
      is usable with the configured preprocessing.
  """
  preprocess = preprocess_from_config(data_cfg)
  images, report = usable_images(source_from_config(data_cfg), preprocess, data_cfg)
  report_path = report.write(workdir) if workdir is not None else None
  report.raise_if_unusable(preprocess.image_size, report_path)
  (log.warning if report.skipped else log.info)("%s", report.summary(report_path))
  return images, preprocess, report


def build_dataset(config: ml_collections.ConfigDict, workdir: str | Path | None = None) -> Dataset:
  """Usable images, preprocessing and split for a run's config (``load_source``, then the seeded split)."""
  images, preprocess, report = load_source(config.data, workdir)
  train_idx, val_idx = split_indices(len(images), config.data.val_fraction, config.seed)
  return Dataset(images, preprocess, train_idx, val_idx, report)


def read_items(source: Any, indices: np.ndarray) -> np.ndarray | list[np.ndarray]:
  """Items ``indices`` of ``source``: one array when the source reads batches, else a list."""
  take = getattr(source, "take", None)
  return take(indices) if take is not None else [source[int(i)] for i in indices]


def _transform(source: Any, preprocess: Preprocess | None) -> Preprocess | None:
  """``preprocess``, or None when ``source`` already holds images it produced."""
  done = getattr(source, "preprocessed_with", None)
  if done is None:
    return preprocess
  if preprocess is not None and done != preprocess:
    raise ValueError(
      f"these images were preprocessed with {done}; cannot also apply {preprocess} to them"
    )
  return None


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, _SHUFFLE_SEED, epoch]).permutation(n)


class ShuffledBatches:
  """Random access to an endless stream of batches of ``indices``.

  The stream is the concatenation of one seeded permutation per epoch,
  cut into batches of ``batch_size`` (a batch may span two epochs, so no
  image is ever dropped). Batch ``k`` is a pure function of ``k``, which is
  what makes the grain iterator's position the whole of its state.
  Shuffling whole batches of indices, rather than one element at a time,
  keeps grain's per-element overhead out of the way of 30×30 images.
  """

  def __init__(self, indices: np.ndarray, batch_size: int, seed: int):
    self.indices = np.asarray(indices, dtype=np.int64)
    self.batch_size, self.seed = batch_size, seed

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, k: int) -> np.ndarray:
    n, start, parts, need = len(self.indices), int(k) * self.batch_size, [], self.batch_size
    while need:
      epoch, offset = divmod(start, n)
      part = _epoch_order(n, self.seed, epoch)[offset : offset + need]
      parts.append(part)
      need -= len(part)
      start += len(part)
    return self.indices[np.concatenate(parts)]


class _Read:
  """grain map: indices → images (one array when the source reads batches)."""

  def __init__(self, source: Any):
    self.source = source

  def __call__(self, indices: np.ndarray) -> np.ndarray | list[np.ndarray]:
    return read_items(self.source, indices)


class _Preprocess:
  """grain map: raw images of any sizes → one uint8 B×H×W×C batch."""

  def __init__(self, preprocess: Preprocess):
    self.preprocess = preprocess

  def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([self.preprocess(image) for image in images])


def train_iterator(
  dataset: Dataset,
  batch_size: int,
  seed: int,
  worker_count: int = 0,
  *,
  shard: tuple[int, int] | None = None,
  read_threads: int = 2,
  prefetch: int = 4,
) -> BatchStream:
  """Endless iterator of uint8 B×H×W×C training batches, reshuffled every epoch.

  Its ``get_state``/``set_state`` (saved in checkpoints) capture the position
  exactly; the order depends only on ``seed`` and the split, not on the
  number of worker processes, so a run may resume with another
  ``worker_count``.

  Args:
    dataset: from :func:`build_dataset`.
    batch_size: the global batch; each process yields its
      ``batch_size / process_count`` share.
    seed: the run's seed.
    worker_count: grain worker processes (0: threads of this process only).
    shard: ``(index, count)`` of this process; default
      ``(jax.process_index(), jax.process_count())``. Each process reads its
      own disjoint ``1/count`` of the training images.
    read_threads: threads reading and preprocessing batches (per process).
    prefetch: batches read ahead (per process).
  """
  if shard is None:
    import jax  # lazy: grain worker processes import this module and need no JAX

    shard = (jax.process_index(), jax.process_count())
  index, count = shard
  if batch_size % count:
    raise ValueError(
      f"config.train.batch_size={batch_size} must be divisible by the {count} processes."
    )
  local = dataset.train_indices[index::count][: len(dataset.train_indices) // count]
  local_batch = batch_size // count
  if local_batch > len(local):
    raise ValueError(
      f"config.train.batch_size={batch_size} is larger than the {len(dataset.train_indices)} training images; "
      f"pass a smaller one, e.g. --config.train.batch_size={max(count, len(local) // 2 * count)}."
    )
  batches = grain.MapDataset.source(ShuffledBatches(local, local_batch, seed)).map(
    _Read(dataset.source)
  )
  transform = _transform(dataset.source, dataset.preprocess)
  if transform is not None:
    batches = batches.map(_Preprocess(transform))
  return BatchStream(
    batches,
    grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch),
    worker_count,
  )


class BatchStream(grain.DatasetIterator):
  """Iterates ``batches`` (a grain MapDataset) from ``next_batch`` on; that number is its whole state.

  The grain iterator underneath (threads, optional worker processes) is
  opened on first use and reopened at the restored position by
  ``set_state``, so a checkpoint holds ``{"next_batch": k}`` whatever the
  worker count, rather than the internals of one worker layout.
  """

  def __init__(
    self, batches: grain.MapDataset, read_options: grain.ReadOptions, worker_count: int = 0
  ):
    super().__init__()
    self._batches, self._read_options, self._worker_count = batches, read_options, worker_count
    self._next = 0
    self._iterator: grain.DatasetIterator | None = None

  def _open(self) -> grain.DatasetIterator:
    ds = self._batches[self._next :].to_iter_dataset(self._read_options)
    if self._worker_count > 0:
      from absl import flags

      if (
        not flags.FLAGS.is_parsed()
      ):  # grain's workers read absl flags; outside an absl app, use their defaults
        flags.FLAGS.mark_as_parsed()
      ds = ds.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=self._worker_count, per_worker_buffer_size=2),
        worker_init_fn=_init_worker,
      )
    return iter(ds)

  def start_prefetch(self) -> None:
    if self._iterator is None:
      self._iterator = self._open()
    self._iterator.start_prefetch()

  def __next__(self) -> np.ndarray:
    if self._iterator is None:
      self._iterator = self._open()
    batch = next(self._iterator)
    self._next += 1
    return batch

  def get_state(self) -> dict[str, int]:
    return {"next_batch": self._next}

  def set_state(self, state: dict[str, int]) -> None:
    self._close_iterator()
    self._next = int(state["next_batch"])

  def _close_iterator(self) -> None:
    if self._iterator is not None:
      self._iterator.close()
      self._iterator = None

  def close(self) -> None:
    self._close_iterator()
    super().close()


def _init_worker(worker_index: int, worker_count: int) -> None:
  """In a grain worker: leave Ctrl-C to the trainer, and exit as soon as the trainer is gone.

  A terminal's Ctrl-C reaches every process of the group; the trainer
  finishes its step and saves before it stops (``vae_jax.train.fit``), so a
  worker interrupted meanwhile would only print a traceback. A trainer
  killed with SIGKILL cannot stop its workers, and grain's workers, blocked
  on a full queue, would otherwise live on as orphans.
  """
  del worker_index, worker_count
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  parent = os.getppid()

  def watch() -> None:
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(0)

  threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class StackedBatches(grain.DatasetIterator):
  """``k`` consecutive batches stacked into one k×B×… array, for k train steps per dispatch.

  A group is taken whole, so the state between groups is the parent's.
  """

  def __init__(self, parent: grain.DatasetIterator, k: int):
    super().__init__(parent)
    self._iterator, self._k = parent, k

  def __next__(self) -> np.ndarray:
    return np.stack([next(self._iterator) for _ in range(self._k)])

  def get_state(self) -> dict:
    return self._iterator.get_state()

  def set_state(self, state: dict) -> None:
    self._iterator.set_state(state)


class DevicePrefetch(grain.DatasetIterator):
  """Keeps the next ``size`` batches already on the accelerator.

  Host→device copies then overlap the train step instead of preceding it.
  The saved state is that of the underlying iterator *before* the oldest
  batch still waiting here, so batches fetched but not yet consumed are
  fetched again after a restore: resume stays exact.
  """

  def __init__(self, parent: grain.DatasetIterator, size: int = 2, sharding: Any = None):
    super().__init__(parent)
    self._iterator, self._size, self._sharding = parent, size, sharding
    self._buffer: deque = deque()

  def _put(self, batch: np.ndarray) -> Any:
    import jax

    if self._sharding is None:
      return jax.device_put(batch)
    return jax.make_array_from_process_local_data(self._sharding, batch)

  def __next__(self) -> Any:
    while len(self._buffer) <= self._size:
      state = self._iterator.get_state()
      self._buffer.append((state, self._put(next(self._iterator))))
    return self._buffer.popleft()[1]

  def get_state(self) -> dict:
    return self._buffer[0][0] if self._buffer else self._iterator.get_state()

  def set_state(self, state: dict) -> None:
    self._buffer.clear()
    self._iterator.set_state(state)


def load_images(
  subset: Subset, preprocess: Preprocess | None, limit: int | None = None, desc: str | None = None
) -> np.ndarray:
  """Preprocess the first ``limit`` images of ``subset`` into one uint8 N×H×W×C array.

  Images the subset's source already preprocessed (the decode cache) are
  read as they are.
  """
  n = len(subset) if limit is None else min(limit, len(subset))
  transform = _transform(subset, preprocess)
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
