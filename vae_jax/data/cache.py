"""Decode once: every image of a source, preprocessed, in one ``.npy`` on disk.

Decoding and resizing JPEGs costs milliseconds per image; reading a
preprocessed row back costs microseconds. The first run decodes the whole
source (in parallel threads, with a progress bar), checks every
item on the way, and writes the result under the cache directory; every
later run with the same files and the same preprocessing finds it and
starts in seconds.

The cache key covers everything the pixels depend on: each file's path,
size and modification time (or, for TFDS, each shard's), the preprocessing
settings, and a format version. Anything changed gives a new key, a new
build; when the files changed, the outdated cache of that source and those
settings is deleted. Items
that cannot be used are not stored; the cache remembers which and why, so a
warm start can report them again without touching them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tqdm

from vae_jax.data.npyfile import NpyRows, create_npy, write_rows
from vae_jax.data.preprocess import Preprocess
from vae_jax.data.sources import ImageReadError

log = logging.getLogger(__name__)

CACHE_VERSION = 1
CACHE_DIR_ENV = "VAE_JAX_CACHE_DIR"
_CHUNK = (
  64  # images per worker task: large enough to amortise the round trip, small enough to balance
)
_META, _IMAGES = "meta.json", "images.npy"


def default_cache_dir() -> Path:
  """``$VAE_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/vae_jax``, else ``~/.cache/vae_jax``."""
  if os.environ.get(CACHE_DIR_ENV):
    return Path(os.environ[CACHE_DIR_ENV]).expanduser()
  return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vae_jax"


@dataclasses.dataclass(frozen=True)
class Skipped:
  """An item of a source that was left out, and why."""

  index: int
  item: str
  reason: str


class CachedImages:
  """Random-access source of the preprocessed images in one cache directory.

  Items are uint8 arrays of ``preprocessed_with.output_shape``; that
  attribute tells the pipeline they need no further preprocessing. Pickles
  without its pixels: worker processes reopen the file instead of copying it.
  """

  def __init__(self, directory: str | Path):
    self.directory = Path(directory)
    meta = json.loads((self.directory / _META).read_text())
    self.preprocessed_with = Preprocess(**meta["preprocess"])
    self.source_items: int = meta["items"]
    self.skipped = [Skipped(**s) for s in meta["skipped"]]
    self.rows = NpyRows(self.directory / _IMAGES)
    self.kept = np.setdiff1d(np.arange(self.source_items), [s.index for s in self.skipped]).astype(
      np.int64
    )

  def __len__(self) -> int:
    return len(self.kept)

  def __getitem__(self, index: int) -> np.ndarray:
    return self.rows[int(self.kept[index])]

  def take(self, indices) -> np.ndarray:
    return self.rows.take(self.kept[np.asarray(indices, dtype=np.int64)])

  def __repr__(self) -> str:
    shape = self.preprocessed_with.output_shape
    return f"CachedImages({str(self.directory)!r}, {len(self)} images of {shape})"


def cache_directory(source: Any, preprocess: Preprocess, cache_dir: str | Path) -> Path:
  """Where the cache of ``source`` under ``preprocess`` lives (name, settings and content hashes).

  Stats every file of the source (a second or two for 100 000 files), which
  is what lets a changed folder be noticed.
  """
  identity = source.identity()
  preprocessing = json.dumps(dataclasses.asdict(preprocess), sort_keys=True)
  settings = f"vae_jax decode cache v{CACHE_VERSION}\n{identity}\n{preprocessing}\n"
  content = hashlib.sha256(settings.encode("utf-8", "surrogateescape"))
  for line in source.fingerprint():
    content.update(line.encode("utf-8", "surrogateescape") + b"\n")
  name = re.sub(r"[^A-Za-z0-9_.]+", "_", identity.partition(":")[2])[-48:].strip("_.") or "data"
  same_settings = hashlib.sha256(settings.encode("utf-8", "surrogateescape")).hexdigest()[:10]
  return Path(cache_dir).expanduser() / f"{name}-{same_settings}-{content.hexdigest()[:16]}"


def cached_images(
  source: Any,
  preprocess: Preprocess,
  cache_dir: str | Path,
  workers: int = 0,
  show_progress: bool = True,
) -> CachedImages:
  """The cache of ``source`` under ``preprocess``: found, or built now.

  Args:
    source: a decodable source (``identity``, ``fingerprint``, ``describe``).
    preprocess: applied to every item before it is stored.
    cache_dir: the folder that holds all caches.
    workers: decoding threads (0: one per CPU core).
    show_progress: draw a progress bar while building.
  """
  directory = cache_directory(source, preprocess, cache_dir)
  if (directory / _META).exists():
    return CachedImages(directory)
  directory.parent.mkdir(parents=True, exist_ok=True)
  _remove_abandoned_partials(directory)
  partial = directory.with_name(f"{directory.name}.partial-{os.getpid()}")
  shutil.rmtree(partial, ignore_errors=True)
  partial.mkdir()
  try:
    _build(source, preprocess, partial, workers, show_progress)
    try:
      os.rename(partial, directory)
    except OSError:  # another process finished the same cache first: use theirs
      shutil.rmtree(partial)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  _remove_outdated(directory)
  return CachedImages(directory)


def check_all(
  source: Any, preprocess: Preprocess, workers: int = 0, show_progress: bool = True
) -> list[Skipped]:
  """Decode and preprocess every item without storing it; the items that fail.

  For runs without a cache: every file is still opened once before
  training, so a bad one cannot stop a run halfway.
  """
  skipped: list[Skipped] = []
  for _, _, failures in _decode_chunks(source, preprocess, workers, show_progress, "checking"):
    skipped += failures
  return skipped


def _build(
  source: Any, preprocess: Preprocess, directory: Path, workers: int, show_progress: bool
) -> None:
  start = time.perf_counter()
  n = len(source)
  offset = create_npy(directory / _IMAGES, (n,) + preprocess.output_shape, np.uint8)
  skipped: list[Skipped] = []
  fd = os.open(directory / _IMAGES, os.O_WRONLY)
  try:
    for first, images, failures in _decode_chunks(
      source, preprocess, workers, show_progress, "decoding"
    ):
      write_rows(fd, offset, first, images)
      skipped += failures
    os.fsync(fd)
  finally:
    os.close(fd)
  meta = {
    "version": CACHE_VERSION,
    "source": source.identity(),
    "preprocess": dataclasses.asdict(preprocess),
    "items": n,
    "skipped": [dataclasses.asdict(s) for s in skipped],
    "build_seconds": round(time.perf_counter() - start, 3),
  }
  (directory / _META).write_text(json.dumps(meta, indent=1))


def _decode_chunks(
  source: Any, preprocess: Preprocess, workers: int, show_progress: bool, verb: str
) -> Iterator[tuple[int, np.ndarray, list[Skipped]]]:
  """``(first index, images, failures)`` for consecutive chunks, in order.

  Chunks are decoded in threads: PIL releases the GIL while it decodes and
  resizes, so threads use every core on photographs, and unlike processes
  they need no start-up, no copying of results, and no ``__main__`` guard
  in the user's script (processes were slower, BENCHMARKS.md).
  """
  n = len(source)
  workers = workers or os.cpu_count() or 1
  starts = iter(range(0, n, _CHUNK))
  bar = tqdm.tqdm(
    total=n, desc=f"{verb} {source.identity()}", unit="img", disable=not show_progress, leave=False
  )
  with bar, concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
    pending = collections.deque()
    for first in itertools.islice(starts, 2 * workers):
      pending.append(pool.submit(_decode_range, source, preprocess, first, min(first + _CHUNK, n)))
    while pending:
      chunk = pending.popleft().result()
      for first in itertools.islice(starts, 1):
        pending.append(
          pool.submit(_decode_range, source, preprocess, first, min(first + _CHUNK, n))
        )
      bar.update(len(chunk[1]))
      yield chunk


def _decode_range(
  source: Any, preprocess: Preprocess, first: int, stop: int
) -> tuple[int, np.ndarray, list[Skipped]]:
  images = np.zeros((stop - first,) + preprocess.output_shape, np.uint8)
  failures = []
  for i in range(first, stop):
    try:
      images[i - first] = preprocess(source[i])
    except (
      ImageReadError,
      ValueError,
    ) as error:  # unreadable file, or unusable size: skip it, say why
      failures.append(Skipped(i, source.describe(i), getattr(error, "reason", None) or str(error)))
  return first, images, failures


def _remove_abandoned_partials(directory: Path) -> None:
  """Delete half-built copies of this cache left by processes that no longer run."""
  for partial in directory.parent.glob(f"{directory.name}.partial-*"):
    pid = partial.name.rsplit("-", 1)[-1]
    if pid.isdigit() and not _is_running(int(pid)):
      shutil.rmtree(partial, ignore_errors=True)


def _remove_outdated(directory: Path) -> None:
  """Delete older caches of the same source and settings (its files changed since)."""
  prefix = directory.name.rsplit("-", 1)[0] + "-"
  for other in directory.parent.glob(f"{prefix}*"):
    if other != directory and ".partial-" not in other.name and (other / _META).exists():
      log.info("Removing outdated cache %s.", other)
      shutil.rmtree(other, ignore_errors=True)


def _is_running(pid: int) -> bool:
  try:
    os.kill(pid, 0)  # signal 0: only asks whether the process exists
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True
