"""Training batches: a resumable grain pipeline over a ``Dataset``'s training images.

``train_iterator`` reads batch ``k`` of an endless stream of seeded
per-epoch permutations, then preprocesses it, in threads (and optionally
worker processes). Its state is one counter, saved in every checkpoint, so a
resumed run sees exactly the batches an uninterrupted run would have seen.
``StackedBatches`` and ``DevicePrefetch`` wrap it for several steps per
dispatch and for host→device copies that overlap the step.

A training split small enough to hold in device memory goes there once
instead (``DeviceBatches``): each batch is then gathered on the device, the
same images in the same order, with the same state, so either path resumes
the other's checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import grain
import jax
import numpy as np

from vae_jax.data.dataset import Dataset, preprocessing_to_apply, read_items
from vae_jax.data.preprocess import Preprocess
from vae_jax.errors import ConfigError

# Offset that gives the shuffle its own stream of the run's seed (the split has another:
# dataset.py).
_SHUFFLE_SEED = 2


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
  shard: tuple[int, int] = (0, 1),
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
    shard: ``(index, count)`` of this process among those training together
      (``(jax.process_index(), jax.process_count())`` in a multi-process
      run). Each process reads its own disjoint ``1/count`` of the training
      images.
    read_threads: threads reading and preprocessing batches (per process).
    prefetch: batches read ahead (per process).
  """
  index, count = shard
  if batch_size % count:
    raise ConfigError(
      f"config.train.batch_size={batch_size} must be divisible by the {count} processes."
    )
  local = dataset.train_indices[index::count][: len(dataset.train_indices) // count]
  local_batch = batch_size // count
  check_batch_size(batch_size, len(dataset.train_indices), count)
  batches = grain.MapDataset.source(ShuffledBatches(local, local_batch, seed)).map(
    _Read(dataset.source)
  )
  transform = preprocessing_to_apply(dataset.source, dataset.preprocess)
  if transform is not None:
    batches = batches.map(_Preprocess(transform))
  return BatchStream(
    batches,
    grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch),
    worker_count,
  )


def check_batch_size(batch_size: int, train_images: int, processes: int = 1) -> None:
  """A ``ConfigError`` unless each process's share of the batch fits in its share of the images."""
  if batch_size // processes > train_images // processes:
    raise ConfigError(
      f"config.train.batch_size={batch_size} is larger than the {train_images} training images; "
      "pass a smaller one, e.g. "
      f"--config.train.batch_size={max(processes, train_images // processes // 2 * processes)}."
    )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Rows:
  """A batch as row numbers of images held on the device; the train step gathers it.

  Gathered inside the step's own program rather than by a program of its
  own: with several CPU devices in one process, XLA admits only so many
  pending executions per device, and a second program per step halved how
  far the host could run ahead before the step's all-reduce deadlocked.
  """

  images: jax.Array  # N×H×W×C, on every device
  rows: jax.Array  # B (or k×B for k steps per dispatch), split over the devices like a batch

  def gather(self) -> jax.Array:
    return self.images[self.rows]


class DeviceBatches(grain.DatasetIterator):
  """Batches of training images held on the device: batch k is ``ShuffledBatches``' k, as ``Rows``.

  ``images`` are the split's preprocessed images in the split's order (as
  ``load_images`` returns them), already on the device(s); each step only
  sends the batch's row numbers. ``stack`` consecutive batches come as one
  stack×B set of rows (several steps per dispatch). The state is
  ``BatchStream``'s, ``{"next_batch": k}``.
  """

  def __init__(self, images: Any, batch_size: int, seed: int, stack: int = 1, sharding: Any = None):
    super().__init__()
    check_batch_size(batch_size, len(images))
    self._images, self._stack, self._sharding = images, stack, sharding
    self._order = ShuffledBatches(np.arange(len(images)), batch_size, seed)
    self._next = 0

  def __next__(self) -> Rows:
    rows = np.stack([self._order[self._next + i] for i in range(self._stack)]).astype(np.int32)
    self._next += self._stack
    rows = rows[0] if self._stack == 1 else rows
    return Rows(self._images, jax.device_put(rows, self._sharding))

  def get_state(self) -> dict[str, int]:
    return {"next_batch": self._next}

  def set_state(self, state: dict[str, int]) -> None:
    self._next = int(state["next_batch"])


class BatchStream(grain.DatasetIterator):
  """Iterates ``batches`` (a grain MapDataset) from ``next_batch`` on, its whole state.

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
