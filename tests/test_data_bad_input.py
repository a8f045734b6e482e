"""Bad input, nothing lost: a crawled folder with every kind of broken file trains to the end.

Every file is generated here. The folder holds readable images in awkward
formats and under awkward names (all must be used, with the right pixels)
and files that cannot be used (all must be skipped and listed in the
workdir's data_report.json, and nothing else).
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import load_config
from PIL import Image

from vae_jax.data.dataset import build_dataset
from vae_jax.data.preprocess import preprocess_from_config
from vae_jax.data.report import NoUsableImagesError
from vae_jax.data.sources import display_path, load_image
from vae_jax.tasks.vae import train_and_evaluate

NON_UTF8 = os.fsdecode(b"caf\xe9 latin-1.png")  # a name that is not valid UTF-8


def _png_bytes(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, "PNG")
  return buffer.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
  """A few hundred bytes whose header claims width×height pixels."""

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
  return (
    b"\x89PNG\r\n\x1a\n"
    + chunk(b"IHDR", header)
    + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    + chunk(b"IEND", b"")
  )


def _face(i: int, size: int = 40) -> Image.Image:
  rng = np.random.default_rng(i)
  return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def make_crawled_folder(root: Path) -> tuple[set[str], set[str]]:
  """Write the folder; returns (relative names that must be used, names that must be skipped)."""
  good, bad = set(), set()

  def put(name: str, data: bytes | Image.Image, usable: bool, **save_kwargs) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, Image.Image):
      data.save(path, **save_kwargs)
    else:
      path.write_bytes(data)
    (good if usable else bad).add(name)

  for i in range(12):
    put(f"plain/{i:02d}.png", _face(i), True)
  put("modes/cmyk.jpg", Image.new("CMYK", (40, 40), (0, 255, 255, 0)), True, quality=95)
  put(
    "modes/wide16.png",
    Image.fromarray((np.arange(1600, dtype=np.uint16) * 40).reshape(40, 40)),
    True,
  )
  rgba = np.zeros((40, 40, 4), np.uint8)
  rgba[..., 0], rgba[..., 3] = 200, 128
  put("modes/rgba.png", Image.fromarray(rgba, "RGBA"), True)
  put("modes/palette.gif", _face(20).convert("P"), True)
  red, blue = Image.new("RGB", (40, 40), (255, 0, 0)), Image.new("RGB", (40, 40), (0, 0, 255))
  put("modes/animated.gif", red, True, save_all=True, append_images=[blue], duration=50)
  exif = Image.Exif()
  exif[0x0112] = 6
  put(
    "modes/rotated.jpg", _face(21, 40).crop((0, 0, 40, 32)), True, exif=exif.tobytes(), quality=95
  )
  put("names/with space & ünïcode.png", _face(22), True)
  put("names/-leading-dash.PNG", _face(23), True)
  put("names/new\nline.png", _face(24), True)
  put(f"names/{NON_UTF8}", _face(25), True)

  jpeg = io.BytesIO()
  _face(30).save(jpeg, "JPEG")
  put("broken/truncated.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 2], False)
  put("broken/truncated.png", _png_bytes(_face(31))[:300], False)
  put("broken/empty.jpg", b"", False)
  put("broken/notes.png", b"these are my notes, not a picture\n", False)
  put("broken/page.jpg", b"<html><body>404 Not Found</body></html>", False)
  put("broken/bomb.png", _bomb_png(30000, 30000), False)
  put("broken/too_large.png", _face(32, 300), False)  # over the test's max_image_pixels
  put("broken/thumbnail.png", _face(33, 5), False)  # 5 px: far too small for 30 px
  os.symlink("loop_b.png", root / "broken" / "loop_a.png")
  os.symlink("loop_a.png", root / "broken" / "loop_b.png")
  os.symlink("does_not_exist.png", root / "broken" / "dangling.png")
  bad |= {"broken/loop_a.png", "broken/loop_b.png", "broken/dangling.png"}
  os.symlink("..", root / "plain" / "up")  # a folder loop: plain/up/plain/up/...
  bad.add("plain/up")
  os.symlink(
    "../plain", root / "names" / "plain_again"
  )  # the same folder reached twice: not read twice
  bad.add("names/plain_again")
  return good, bad


@pytest.fixture(scope="module")
def crawled(tmp_path_factory):
  root = tmp_path_factory.mktemp("crawled")
  good, bad = make_crawled_folder(root)
  config = load_config("faces_mlp")
  config.data.source = f"folder:{root}"
  config.data.cache_dir = str(tmp_path_factory.mktemp("cache"))
  config.data.max_image_pixels = 200 * 200
  return root, good, bad, config


def _names(root: Path, items: list[str]) -> set[str]:
  prefix = display_path(root) + "/"
  assert all(item.startswith(prefix) for item in items), items
  return {item[len(prefix) :] for item in items}


def test_crawled_folder_trains_to_the_end_and_reports_exactly_the_broken_files(
  crawled, tmp_path, caplog
):
  root, good, bad, config = crawled
  with caplog.at_level(logging.INFO, logger="vae_jax"):
    state = train_and_evaluate(config, tmp_path)
  assert int(state.step) == config.train.steps
  report = json.loads((tmp_path / "data_report.json").read_text(encoding="utf-8"))
  assert _names(root, [s["item"] for s in report["skipped"]]) == {
    display_path(name) for name in bad
  }
  assert report["used"] == len(good) and report["items"] == len(good) + len(bad)
  reasons = {Path(s["item"]).name: s["reason"] for s in report["skipped"]}
  assert reasons["empty.jpg"] == "empty file (0 bytes)"
  assert "truncated" in reasons["truncated.jpg"] and "truncated" in reasons["truncated.png"]
  assert "not an image" in reasons["notes.png"] and "not an image" in reasons["page.jpg"]
  assert "decompression" in reasons["bomb.png"] and "max_image_pixels" in reasons["too_large.png"]
  assert "too small" in reasons["thumbnail.png"]
  assert (
    reasons["loop_a.png"] == "symbolic link loop"
    and "broken symbolic link" in reasons["dangling.png"]
  )
  assert (
    reasons["up"].startswith("symbolic link loop")
    and "already in the dataset" in reasons["plain_again"]
  )
  summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data:")]
  assert len(summary) == 1
  assert (
    f"{len(good)} of {len(good) + len(bad)} images usable" in summary[0]
    and "data_report.json" in summary[0]
  )


def test_every_readable_image_is_used_with_its_correct_pixels(crawled):
  root, good, _, config = crawled
  dataset = build_dataset(config)
  preprocess = preprocess_from_config(config.data)
  assert len(dataset.source) == len(good)
  order = sorted(good, key=lambda name: Path(name).as_posix())
  for i, name in enumerate(order):
    np.testing.assert_array_equal(
      dataset.source[i], preprocess(load_image(root / name)), err_msg=display_path(name)
    )


def test_awkward_formats_decode_to_what_a_viewer_shows(crawled):
  root = crawled[0]
  assert load_image(root / "modes" / "cmyk.jpg")[20, 20].tolist() == pytest.approx(
    [255, 0, 0], abs=8
  )
  assert load_image(root / "modes" / "wide16.png").dtype == np.uint8
  np.testing.assert_array_equal(load_image(root / "modes" / "animated.gif")[5, 5], [255, 0, 0])
  assert load_image(root / "modes" / "rotated.jpg").shape == (40, 32, 3)  # EXIF rotation applied
  assert load_image(root / "modes" / "rgba.png")[0, 0].tolist() == pytest.approx([100, 0, 0], abs=1)


@pytest.mark.skipif(
  hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their mode"
)
def test_unreadable_file_and_folder_are_skipped_and_listed(tmp_path):
  for i in range(12):
    _face(i).save(tmp_path / f"{i}.png")
  (tmp_path / "secret.png").write_bytes(_png_bytes(_face(99)))
  (tmp_path / "secret.png").chmod(0)
  (tmp_path / "locked").mkdir()
  _face(98).save(tmp_path / "locked" / "x.png")
  (tmp_path / "locked").chmod(0)
  try:
    config = load_config("faces_mlp")
    config.data.source = f"folder:{tmp_path}"
    config.data.cache_dir = str(tmp_path / ".cache")
    dataset = build_dataset(config)
    reasons = dict(dataset.report.skipped)
    assert reasons[str(tmp_path / "secret.png")] == "permission denied"
    assert "not readable" in reasons[str(tmp_path / "locked")]
    assert len(dataset.source) == 12
  finally:
    (tmp_path / "locked").chmod(0o755)


def test_no_usable_image_stops_before_training_with_the_report(tmp_path):
  folder = tmp_path / "junk"
  folder.mkdir()
  (folder / "a.jpg").write_bytes(b"")
  (folder / "b.png").write_text("not an image")
  config = load_config("faces_mlp")
  config.data.source = f"folder:{folder}"
  config.data.cache_dir = str(tmp_path / "cache")
  workdir = tmp_path / "run"
  with pytest.raises(
    NoUsableImagesError, match=r"all 2 were skipped.*a\.jpg: empty file.*data_report\.json"
  ):
    train_and_evaluate(config, workdir)
  assert not (workdir / "checkpoints").exists()
  assert len(json.loads((workdir / "data_report.json").read_text())["skipped"]) == 2


def test_images_far_too_small_for_the_configured_size_is_a_clear_error(tmp_path):
  folder = tmp_path / "thumbs"
  folder.mkdir()
  for i in range(4):
    _face(i, 30).save(folder / f"{i}.png")
  config = load_config("galaxy", None)  # 256×256
  config.data.source = f"folder:{folder}"
  config.data.cache_dir = str(tmp_path / "cache")
  with pytest.raises(NoUsableImagesError, match=r"smaller than crop_size=256"):
    build_dataset(config)
  config.data.crop_size = 0
  with pytest.raises(
    NoUsableImagesError, match=r"30×30 pixels is too small for image_size=256.*max_upscale"
  ):
    build_dataset(config)


@pytest.mark.parametrize(
  "array, message",
  [
    (np.zeros((10, 30, 30, 4), np.uint8), r"shape \(10, 30, 30, 4\)"),
    (np.zeros((10, 30, 30), np.int32), "dtype int32"),
    (np.zeros((10, 900), np.uint8), r"shape \(10, 900\)"),
    (np.full((10, 30, 30), 2.0, np.float32), "outside"),
  ],
)
def test_npz_of_wrong_shape_or_dtype_stops_before_training(tmp_path, array, message):
  np.savez(tmp_path / "bad.npz", images=array)
  config = load_config("faces_mlp")
  config.data.source = f"npz:{tmp_path / 'bad.npz'}"
  with pytest.raises(ValueError, match=message):
    train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_without_cache_the_same_files_are_skipped_and_the_same_pixels_used(crawled):
  _root, good, _bad, config = crawled
  cached = build_dataset(config)
  config = config.copy_and_resolve_references()
  config.data.cache = False
  uncached = build_dataset(config)
  assert uncached.report.skipped == cached.report.skipped and uncached.report.cache is None
  assert len(uncached.source) == len(good)
  preprocess = uncached.preprocess
  for i in range(len(good)):
    np.testing.assert_array_equal(preprocess(uncached.source[i]), cached.source[i])
