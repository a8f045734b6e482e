"""TFDS without TensorFlow: builders write array_record datasets that ``tfds:`` sources read.

Every dataset is built from images generated in the test. TensorFlow is not
installed here, so "not imported" is checked against a stand-in
``tensorflow`` package that records any attempt to import it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, load_config
from PIL import Image

from vae_jax.data.dataset import build_dataset
from vae_jax.data.sources import TfdsSource, load_image, make_source
from vae_jax.data.tfds_builders import BUILD_REPORT
from vae_jax.data.tfds_builders.build import build
from vae_jax.tasks.vae import train_and_evaluate


def _pictures(root: Path, n: int = 14) -> Path:
  rng = np.random.default_rng(0)
  for i in range(n):
    folder = root / ("spirals" if i % 2 else "ellipticals")
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(
      folder / f"{1000 + i}.png"
    )
  Image.new("L", (36, 36), 77).save(root / "grey.jpg", quality=95)  # stored as RGB
  Image.new("CMYK", (36, 36), (0, 255, 255, 0)).save(
    root / "cmyk.jpg", quality=95
  )  # re-encoded as RGB PNG
  (root / "broken.png").write_bytes(b"not a png")
  (root / "empty.jpg").write_bytes(b"")
  return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """The same folder built as image_folder/pics and as galaxy_zoo."""
  pictures = _pictures(tmp_path_factory.mktemp("pictures"))
  data_dir = tmp_path_factory.mktemp("tfds")
  folder_dir = build("image_folder", pictures, data_dir, name="pics")
  galaxy_dir = build("galaxy_zoo", pictures, data_dir)
  return pictures, data_dir, folder_dir, galaxy_dir


def test_builders_store_every_readable_image_with_its_pixels_and_report_the_rest(built):
  pictures, data_dir, folder_dir, _ = built
  report = json.loads((folder_dir / BUILD_REPORT).read_text())
  assert report["stored"] == 16
  reasons = {Path(s["item"]).name: s["reason"] for s in report["skipped"]}
  assert reasons.keys() == {"broken.png", "empty.jpg"}
  assert (
    reasons["broken.png"].startswith("not an image")
    and reasons["empty.jpg"] == "empty file (0 bytes)"
  )
  source = make_source("tfds:image_folder/pics", tfds_data_dir=str(data_dir))
  assert isinstance(source, TfdsSource) and len(source) == 16
  by_name = {source.records[i]["filename"].decode(): source[i] for i in range(len(source))}
  for name, pixels in by_name.items():
    expected = load_image(pictures / name)
    np.testing.assert_array_equal(
      pixels, np.repeat(expected, 3, 2) if expected.shape[2] == 1 else expected
    )
  labels = {source.records[i]["label"].decode() for i in range(len(source))}
  assert labels == {"spirals", "ellipticals", ""}


def test_galaxy_zoo_keeps_the_galaxy_id(built):
  _, data_dir, _, galaxy_dir = built
  assert galaxy_dir.parts[-2:] == ("galaxy_zoo", "1.0.0")
  source = make_source("tfds:galaxy_zoo", tfds_data_dir=str(data_dir))
  ids = sorted(int(source.records[i]["galaxy_id"]) for i in range(len(source)))
  assert ids == [-1, -1] + list(range(1000, 1014))


def test_anime_faces_builder_and_training_on_a_tfds_source(tmp_path):
  faces = tmp_path / "faces"
  faces.mkdir()
  rng = np.random.default_rng(1)
  for i in range(20):
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(faces / f"{i}.jpg")
  build("anime_faces", faces, tmp_path / "tfds")
  config = load_config("faces_mlp")
  config.data.source = "tfds:anime_faces"
  config.data.tfds_data_dir = str(tmp_path / "tfds")
  config.data.cache_dir = str(tmp_path / "cache")
  state = train_and_evaluate(config, tmp_path / "run")
  assert int(state.step) == config.train.steps
  report = json.loads((tmp_path / "run" / "data_report.json").read_text())
  assert report["used"] == 20 and report["skipped"] == [] and "cache" in report["cache"]


def test_a_missing_feature_split_or_dataset_is_a_clear_error(built):
  _, data_dir, _, _ = built
  config = load_config("faces_mlp")
  config.data.tfds_data_dir = str(data_dir)
  config.data.source = "tfds:image_folder/pics"
  config.data.tfds_image_key = "photo"
  with pytest.raises(ValueError, match=r"no feature 'photo'.*'image': 'Image'.*tfds_image_key"):
    build_dataset(config)
  config.data.tfds_image_key = "label"
  with pytest.raises(ValueError, match="not an image"):
    build_dataset(config)
  config.data.tfds_image_key, config.data.tfds_split = "image", "test"
  with pytest.raises(ValueError, match=r"no split 'test'.*\['train'\].*tfds_split"):
    build_dataset(config)
  config.data.source = "tfds:image_folder/holidays"
  with pytest.raises(
    ValueError,
    match=r"not (found|prepared).*build_dataset.py --dataset=image_folder --name=holidays",
  ):
    build_dataset(config)


def test_building_with_bad_arguments_says_what_to_do(tmp_path):
  with pytest.raises(ValueError, match="needs a name"):
    build("image_folder", tmp_path, tmp_path / "tfds")
  with pytest.raises(ValueError, match="not a folder"):
    build("anime_faces", tmp_path / "nowhere", tmp_path / "tfds")
  with pytest.raises(ValueError, match="unknown dataset"):
    build("cifar10", tmp_path, tmp_path / "tfds")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match="is empty"):
    build("image_folder", empty, tmp_path / "tfds", name="nothing")
  (empty / "notes.txt").write_text("no pictures here")
  (empty / "broken.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match=r"No usable images.*broken.png"):
    build("image_folder", empty, tmp_path / "tfds", name="nothing")


def test_tensorflow_is_never_imported(tmp_path):
  """Build with the script, read and cache a tfds: source; a TensorFlow stand-in records imports."""
  stand_in = tmp_path / "site" / "tensorflow"
  stand_in.mkdir(parents=True)
  log = tmp_path / "tensorflow_imports.log"
  (stand_in / "__init__.py").write_text(
    textwrap.dedent(f"""
      import traceback
      with open({str(log)!r}, "a") as f:
        f.write("".join(traceback.format_stack()))
      raise ImportError("tensorflow is not available in this test")
  """)
  )
  _pictures(tmp_path / "pictures", n=4)
  env = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]),
  }
  built = subprocess.run(
    [
      sys.executable,
      str(ROOT / "bin" / "build_dataset.py"),
      "--dataset=image_folder",
      "--name=pics",
      f"--manual_dir={tmp_path / 'pictures'}",
      f"--data_dir={tmp_path / 'tfds'}",
    ],
    capture_output=True,
    text=True,
    env=env,
  )
  assert built.returncode == 0, built.stderr[-2000:]
  read = subprocess.run(
    [
      sys.executable,
      "-c",
      textwrap.dedent(f"""
      import sys
      from vae_jax.config import base_config
      from vae_jax.data.dataset import build_dataset
      from vae_jax.data.pipeline import train_iterator
      config = base_config()
      config.data.source = "tfds:image_folder/pics"
      config.data.tfds_data_dir = {str(tmp_path / "tfds")!r}
      config.data.cache_dir = {str(tmp_path / "cache")!r}
      config.data.image_size, config.data.channels = 16, 3
      dataset = build_dataset(config)
      assert next(train_iterator(dataset, 2, seed=0, shard=(0, 1))).shape == (2, 16, 16, 3)
      print(len(dataset.source), "tensorflow" in sys.modules)
  """),
    ],
    capture_output=True,
    text=True,
    env=env,
  )
  assert read.returncode == 0, read.stderr[-2000:]
  assert read.stdout.split() == ["6", "False"]
  assert not log.exists(), log.read_text()


def test_a_uint8_tensor_feature_is_read_as_images(tmp_path, monkeypatch):
  # TFDS builders must live in a package module: write one.
  package = tmp_path / "tensor_builders"
  package.mkdir()
  (package / "__init__.py").write_text("")
  (package / "tensor_faces.py").write_text(
    textwrap.dedent("""
      import numpy as np
      import tensorflow_datasets as tfds

      class TensorFaces(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
          return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(
              {"pixels": tfds.features.Tensor(shape=(12, 12), dtype=np.uint8)}))

        def _split_generators(self, dl_manager):
          return {"train": self._generate_examples()}

        def _generate_examples(self):
          for i in range(5):
            yield i, {"pixels": np.full((12, 12), 40 * i, np.uint8)}
  """)
  )
  monkeypatch.syspath_prepend(str(tmp_path))
  from tensor_builders.tensor_faces import TensorFaces

  TensorFaces(data_dir=str(tmp_path / "tfds"), file_format="array_record").download_and_prepare()
  source = TfdsSource("tensor_faces", str(tmp_path / "tfds"), image_key="pixels")
  assert sorted(int(source[i][0, 0, 0]) for i in range(5)) == [0, 40, 80, 120, 160]
  assert source[0].shape == (12, 12, 1)
