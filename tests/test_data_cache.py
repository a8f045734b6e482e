"""Decode once: the cache is found again, rebuilt on any change, and matches direct decoding."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vae_jax.data import cache
from vae_jax.data.cache import CachedImages, cached_images, check_all, default_cache_dir
from vae_jax.data.npyfile import NpyRows, create_npy, write_rows
from vae_jax.data.preprocess import Preprocess
from vae_jax.data.sources import ImageFolderSource

PRE = Preprocess(image_size=8, channels=3)


def _folder(root: Path, n: int, size: int = 12, broken: int = 0) -> Path:
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(n)
  for i in range(n):
    Image.fromarray(rng.integers(0, 256, (size, size + i % 3, 3), dtype=np.uint8)).save(
      root / f"{i:04d}.png"
    )
  for i in range(broken):
    (root / f"broken{i}.jpg").write_bytes(b"\xff\xd8 not really")
  return root


def _direct(source: ImageFolderSource, preprocess: Preprocess) -> np.ndarray:
  return np.stack(
    [preprocess(source[i]) for i in range(len(source)) if "broken" not in source.paths[i].name]
  )


def test_cache_holds_exactly_the_preprocessed_images_and_skips_broken_ones(tmp_path):
  source = ImageFolderSource(_folder(tmp_path / "pics", 10, broken=2))
  images = cached_images(source, PRE, tmp_path / "cache", workers=1, show_progress=False)
  assert len(images) == 10 and images.source_items == 12
  assert [Path(s.item).name for s in images.skipped] == ["broken0.jpg", "broken1.jpg"]
  np.testing.assert_array_equal(images.take(np.arange(10)), _direct(source, PRE))
  assert images.preprocessed_with == PRE
  assert Path(images.directory).parent == tmp_path / "cache"


def test_second_start_reads_the_cache_without_decoding(tmp_path, monkeypatch):
  source = ImageFolderSource(_folder(tmp_path / "pics", 6))
  first = cached_images(source, PRE, tmp_path / "cache", workers=1, show_progress=False)

  def no_decoding(self, index):
    raise AssertionError("decoded again")

  monkeypatch.setattr(ImageFolderSource, "__getitem__", no_decoding)
  again = cached_images(
    ImageFolderSource(tmp_path / "pics"), PRE, tmp_path / "cache", workers=1, show_progress=False
  )
  assert again.directory == first.directory
  np.testing.assert_array_equal(again.take(range(6)), first.take(range(6)))


@pytest.mark.parametrize("change", ["rewrite", "touch", "add", "remove", "rename"])
def test_a_changed_folder_is_rebuilt_and_the_outdated_cache_removed(tmp_path, change):
  folder = _folder(tmp_path / "pics", 6)
  first = cached_images(
    ImageFolderSource(folder), PRE, tmp_path / "cache", workers=1, show_progress=False
  )
  target = folder / "0002.png"
  if change == "rewrite":  # same name and mtime, other content and size
    stat = target.stat()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  elif change == "touch":
    os.utime(target, ns=(time.time_ns(), target.stat().st_mtime_ns + 10**9))
  elif change == "add":
    Image.new("RGB", (9, 9)).save(folder / "new.png")
  elif change == "remove":
    target.unlink()
  else:
    target.rename(folder / "renamed.png")
  source = ImageFolderSource(folder)
  second = cached_images(source, PRE, tmp_path / "cache", workers=1, show_progress=False)
  assert second.directory != first.directory
  assert not first.directory.exists()
  np.testing.assert_array_equal(second.take(range(len(second))), _direct(source, PRE))


def test_other_settings_get_their_own_cache_and_keep_the_first(tmp_path):
  source = ImageFolderSource(_folder(tmp_path / "pics", 4))
  grey = cached_images(source, Preprocess(8, 1), tmp_path / "cache", workers=1, show_progress=False)
  small = cached_images(
    source, Preprocess(6, 3), tmp_path / "cache", workers=1, show_progress=False
  )
  assert grey.directory != small.directory and grey.directory.exists()
  assert grey[0].shape == (8, 8, 1) and small[0].shape == (6, 6, 3)


def test_parallel_decoding_gives_the_same_cache_as_serial(tmp_path):
  source = ImageFolderSource(_folder(tmp_path / "pics", 300, broken=3))
  serial = cached_images(source, PRE, tmp_path / "serial", workers=1, show_progress=False)
  parallel = cached_images(source, PRE, tmp_path / "parallel", workers=2, show_progress=False)
  assert serial.skipped == parallel.skipped and len(parallel) == 300
  np.testing.assert_array_equal(serial.take(range(300)), parallel.take(range(300)))


def test_check_all_without_cache_lists_the_same_failures(tmp_path):
  source = ImageFolderSource(_folder(tmp_path / "pics", 5, broken=2))
  assert [s.index for s in check_all(source, PRE, workers=1, show_progress=False)] == [5, 6]


def test_half_built_cache_of_a_dead_process_is_removed(tmp_path):
  source = ImageFolderSource(_folder(tmp_path / "pics", 3))
  directory = cache.cache_directory(source, PRE, tmp_path / "cache")
  directory.parent.mkdir(parents=True)
  dead = directory.with_name(directory.name + ".partial-999999999")
  dead.mkdir()
  (dead / "images.npy").write_bytes(b"half")
  cached_images(source, PRE, tmp_path / "cache", workers=1, show_progress=False)
  assert not dead.exists() and directory.exists()


def test_cache_location_defaults_outside_the_repo_and_follows_the_environment(
  monkeypatch, tmp_path
):
  monkeypatch.delenv(cache.CACHE_DIR_ENV, raising=False)
  monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
  assert default_cache_dir() == Path.home() / ".cache" / "vae_jax"
  monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / "elsewhere"))
  assert default_cache_dir() == tmp_path / "elsewhere"


def test_cached_images_pickle_by_path(tmp_path):
  images = cached_images(
    ImageFolderSource(_folder(tmp_path / "pics", 3)), PRE, tmp_path / "c", 1, False
  )
  blob = pickle.dumps(images)
  assert len(blob) < 5000  # the path, not the pixels
  np.testing.assert_array_equal(pickle.loads(blob)[2], images[2])


def test_npy_rows_read_rows_in_any_order_and_writer_round_trips(tmp_path):
  data = np.random.default_rng(0).integers(0, 256, (20, 3, 4, 2), dtype=np.uint8)
  offset = create_npy(tmp_path / "x.npy", data.shape, np.uint8)
  fd = os.open(tmp_path / "x.npy", os.O_WRONLY)
  write_rows(fd, offset, 12, data[12:])
  write_rows(fd, offset, 0, data[:12])
  os.close(fd)
  np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), data)  # a standard .npy
  rows = NpyRows(tmp_path / "x.npy")
  np.testing.assert_array_equal(rows.take([5, 0, 5, -1]), data[[5, 0, 5, -1]])
  with pytest.raises(IndexError):
    rows.take([20])


def test_npy_rows_refuse_truncated_files(tmp_path):
  np.save(tmp_path / "x.npy", np.zeros((10, 4), np.uint8))
  with open(tmp_path / "x.npy", "r+b") as f:
    f.truncate(os.path.getsize(tmp_path / "x.npy") - 5)
  with pytest.raises(ValueError, match="truncated"):
    NpyRows(tmp_path / "x.npy")


def test_cached_images_reopen_from_directory(tmp_path):
  images = cached_images(
    ImageFolderSource(_folder(tmp_path / "pics", 3, broken=1)), PRE, tmp_path / "c", 1, False
  )
  reopened = CachedImages(images.directory)
  assert len(reopened) == 3 and reopened.skipped == images.skipped
