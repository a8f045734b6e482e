"""Image folder, array file and source-spec tests; every input is generated in tmp_path."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vae_jax.data.npyfile import NpyRows
from vae_jax.data.preprocess import Preprocess, pil_to_array
from vae_jax.data.sources import (
  ArraySource,
  ImageFolderSource,
  ImageReadError,
  load_image,
  make_source,
)
from vae_jax.errors import DataError

SHARED_FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "anime_faces_30"


def save(image: Image.Image, path: Path, **kwargs) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path, **kwargs)
  return path


# --- decoding of the PIL modes ---------------------------------------------


def test_grey_png_is_one_channel(tmp_path):
  grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
  out = load_image(save(Image.fromarray(grey), tmp_path / "g.png"))
  assert out.shape == (3, 4, 1) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[..., 0], grey)


def test_rgb_png_roundtrips(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
  np.testing.assert_array_equal(load_image(save(Image.fromarray(rgb), tmp_path / "c.png")), rgb)


def test_rgba_is_composited_onto_black(tmp_path):
  rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 128], [200, 100, 50, 0]]], dtype=np.uint8)
  out = load_image(save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png")).astype(int)
  assert out.shape == (1, 3, 3)
  np.testing.assert_array_equal(out[0, 0], [200, 100, 50])
  np.testing.assert_allclose(out[0, 1], [100, 50, 25], atol=1)
  np.testing.assert_array_equal(out[0, 2], [0, 0, 0])


def test_la_is_composited_onto_black_and_stays_grey(tmp_path):
  la = np.array([[[200, 255], [200, 128], [200, 0]]], dtype=np.uint8)
  out = load_image(save(Image.fromarray(la, "LA"), tmp_path / "la.png")).astype(int)
  assert out.shape == (1, 3, 1)
  np.testing.assert_allclose(out[0, :, 0], [200, 100, 0], atol=1)


def test_palette_with_transparency_becomes_rgb(tmp_path):
  image = Image.fromarray(np.array([[0, 1], [1, 2]], dtype=np.uint8), "P")
  image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
  out = load_image(save(image, tmp_path / "p.png", transparency=2))
  assert out.shape == (2, 2, 3)
  np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
  np.testing.assert_array_equal(out[0, 1], [0, 255, 0])
  np.testing.assert_array_equal(out[1, 1], [0, 0, 0])  # transparent index → black


def test_16bit_grey_png_is_scaled_by_257(tmp_path):
  wide = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
  out = load_image(save(Image.fromarray(wide), tmp_path / "w.png"))
  assert out.shape == (1, 4, 1) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])


def test_32bit_int_mode_is_scaled_like_16bit():
  image = Image.fromarray(np.array([[0, 32896, 65535, 70000]], dtype=np.int32))
  assert image.mode == "I"
  np.testing.assert_array_equal(pil_to_array(image)[0, :, 0], [0, 128, 255, 255])


def test_cmyk_jpeg_becomes_rgb(tmp_path):
  path = save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "k.jpg", quality=95)
  out = load_image(path)
  assert out.shape == (16, 16, 3)
  np.testing.assert_allclose(out[8, 8], [255, 0, 0], atol=8)


def test_exif_orientation_is_applied(tmp_path):
  rgb = np.zeros((20, 40, 3), dtype=np.uint8)
  rgb[:, :20] = [255, 0, 0]  # left half red
  rgb[:, 20:] = [0, 0, 255]
  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90° clockwise to display"
  out = load_image(save(Image.fromarray(rgb), tmp_path / "r.jpg", exif=exif.tobytes(), quality=95))
  assert out.shape == (40, 20, 3)
  assert out[5, 10, 0] > 200 and out[5, 10, 2] < 50  # the left half is now on top
  assert out[35, 10, 2] > 200 and out[35, 10, 0] < 50


def test_animated_gif_gives_first_frame(tmp_path):
  red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
  path = save(red, tmp_path / "anim.gif", save_all=True, append_images=[blue], duration=50)
  assert Image.open(path).n_frames == 2
  out = load_image(path)
  assert out.shape == (8, 8, 3)
  np.testing.assert_array_equal(out[4, 4], [255, 0, 0])


def test_corrupt_file_error_names_the_file(tmp_path):
  bad = tmp_path / "broken.png"
  bad.write_bytes(b"not a png")
  with pytest.raises(ImageReadError, match=r"broken.png") as info:
    ImageFolderSource(tmp_path)[0]
  assert info.value.path == bad


# --- folder discovery ---------------------------------------------------------


def test_folder_is_recursive_sorted_and_ignores_non_images(tmp_path):
  tiny = Image.new("RGB", (4, 4))
  for relative in ["b.png", "a/z.JPG", "a/b/c.webp", "A.bmp", "d.tif"]:
    save(tiny, tmp_path / relative)
  (tmp_path / "notes.txt").write_text("hello")
  (tmp_path / "a" / "labels.csv").write_text("x")
  save(tiny, tmp_path / ".hidden" / "x.png")
  (tmp_path / "._b.png").write_bytes(b"macOS resource fork")
  source = ImageFolderSource(tmp_path)
  relative = [path.relative_to(tmp_path).as_posix() for path in source.paths]
  assert relative == ["A.bmp", "a/b/c.webp", "a/z.JPG", "b.png", "d.tif"]
  assert len(source) == 5 and all(source[i].shape == (4, 4, 3) for i in range(5))


def test_folder_images_may_differ_in_size(tmp_path):
  save(Image.new("L", (5, 3)), tmp_path / "1.png")
  save(Image.new("RGB", (2, 9)), tmp_path / "2.png")
  source = ImageFolderSource(tmp_path)
  assert [source[i].shape for i in range(2)] == [(3, 5, 1), (9, 2, 3)]


def test_empty_or_missing_folder_raises(tmp_path):
  (tmp_path / "readme.txt").write_text("no images here")
  with pytest.raises(ValueError, match=r"contains no images.*\.png"):
    ImageFolderSource(tmp_path)
  with pytest.raises(ValueError, match="does not exist"):
    ImageFolderSource(tmp_path / "nope")


# --- array files ----------------------------------------------------------------


def test_npy_nhw_becomes_nhw1_and_is_read_lazily(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (4, 5, 6), dtype=np.uint8)
  np.save(tmp_path / "x.npy", images)
  source = ArraySource(tmp_path / "x.npy")
  assert isinstance(source.images, NpyRows)  # rows are read on access, never the whole file
  assert len(source) == 4 and source[2].shape == (5, 6, 1)
  assert type(source[2]) is np.ndarray
  np.testing.assert_array_equal(source[-1][..., 0], images[-1])


def test_float_in_unit_range_is_rounded_to_uint8(tmp_path):
  np.save(
    tmp_path / "f.npy", np.array([0.0, 0.5, 1.0, 0.002], dtype=np.float32).reshape(1, 2, 2, 1)
  )
  out = ArraySource(tmp_path / "f.npy")[0]
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out.ravel(), [0, 128, 255, 1])


@pytest.mark.parametrize(
  "array, message",
  [
    (np.zeros((2, 4, 4, 3), np.int16), "dtype int16"),
    (np.full((2, 4, 4), 1.5), "outside"),
    (np.full((2, 4, 4), np.nan), "outside"),
    (np.zeros((2, 4, 4, 4), np.uint8), r"\(2, 4, 4, 4\)"),
    (np.zeros((4, 4), np.uint8), r"\(4, 4\)"),
    (np.zeros((0, 4, 4), np.uint8), r"\(0, 4, 4\)"),
  ],
)
def test_bad_arrays_are_rejected(tmp_path, array, message):
  np.save(tmp_path / "bad.npy", array)
  with pytest.raises(ValueError, match=message):
    ArraySource(tmp_path / "bad.npy")


@pytest.mark.parametrize("name", ["missing.npy", "missing.npz"])
def test_a_missing_array_file_is_named(tmp_path, name):
  with pytest.raises(DataError, match=f"array file .*{name} does not exist"):
    ArraySource(tmp_path / name)


def test_npz_key_selection(tmp_path):
  images = np.ones((3, 4, 4, 3), np.uint8)
  np.savez(tmp_path / "named.npz", labels=np.arange(3), images=images)
  np.savez(tmp_path / "single.npz", faces=images)
  np.savez(tmp_path / "ambiguous.npz", faces=images, labels=np.arange(3))
  assert ArraySource(tmp_path / "named.npz")[0].shape == (4, 4, 3)
  assert len(ArraySource(tmp_path / "single.npz")) == 3
  with pytest.raises(ValueError, match=r"\['faces', 'labels'\].*'images'"):
    ArraySource(tmp_path / "ambiguous.npz")
  with pytest.raises(ValueError, match=r"\.npy or \.npz"):
    ArraySource(tmp_path / "images.h5")


# --- make_source ----------------------------------------------------------------


def test_make_source_folder_npz_and_home_expansion(tmp_path, monkeypatch):
  save(Image.new("RGB", (4, 4)), tmp_path / "pics" / "a.png")
  np.save(tmp_path / "x.npy", np.zeros((2, 4, 4), np.uint8))
  np.savez(tmp_path / "x.npz", images=np.zeros((3, 4, 4), np.uint8))
  monkeypatch.setenv("HOME", str(tmp_path))
  assert isinstance(make_source("folder:~/pics", num_images=9), ImageFolderSource)
  assert len(make_source("npz:~/x.npy")) == 2
  assert len(make_source(f"npz:{tmp_path / 'x.npz'}")) == 3


@pytest.mark.parametrize("spec", ["csv:data.csv", "folder", "folder:", "", "synthetic:cats"])
def test_make_source_rejects_bad_specs(spec):
  with pytest.raises(ValueError, match="synthetic:faces"):
    make_source(spec)


def test_make_source_tfds_not_built_says_how_to_build(tmp_path):
  with pytest.raises(
    ValueError, match=r"not (found|prepared).*bin/build_dataset.py --dataset=galaxy_zoo "
  ):
    make_source("tfds:galaxy_zoo", tfds_data_dir=str(tmp_path))


def test_make_source_synthetic():
  synthetic = pytest.importorskip("vae_jax.data.synthetic")
  source = make_source("synthetic:faces", num_images=3, image_size=16, seed=0)
  assert isinstance(source, synthetic.SyntheticFaces) and len(source) == 3
  galaxies = make_source("synthetic:galaxies", num_images=2, image_size=16, seed=0)
  assert isinstance(galaxies, synthetic.SyntheticGalaxies)
  assert source[0].dtype == np.uint8 and source[0].ndim == 3


# --- shared reference data --------------------------------------------------------


def test_anime_faces_folder_matches_reference_grey():
  small = SHARED_FACES / "small"
  if not small.is_dir():
    pytest.skip(f"{small} not present")
  source = ImageFolderSource(small)
  assert len(source) == 1044
  assert all(
    source[i].shape == (30, 30, 3) and source[i].dtype == np.uint8 for i in range(len(source))
  )
  assert source.paths[0].name == "face1.png"
  with open(SHARED_FACES / "gray.txt") as rows:
    reference = np.array(rows.readline().strip().strip(",").split(","), dtype=int).reshape(30, 30)
  grey = Preprocess(image_size=30, channels=1)(source[0])[..., 0].astype(int)
  assert np.abs(grey - reference).max() <= 2
