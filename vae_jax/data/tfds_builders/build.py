"""Build a TFDS dataset from a folder of images (``bin/build_dataset.py``)."""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path

import tensorflow_datasets as tfds

from vae_jax import files
from vae_jax.data.sources import DEFAULT_MAX_PIXELS
from vae_jax.data.tfds_builders import BUILD_REPORT, BUILDERS
from vae_jax.errors import DataError

log = logging.getLogger(__name__)


def build(
  dataset: str,
  manual_dir: str | Path,
  data_dir: str | Path = "~/tensorflow_datasets",
  name: str | None = None,
  max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Path:
  """Build ``dataset`` from the images in ``manual_dir`` into ``data_dir``; return its folder.

  Every image is decoded once; files that cannot be used are left out and
  listed, with the reason, in ``build_report.json`` in the dataset's folder.

  Args:
    dataset: one of :data:`BUILDERS`.
    manual_dir: the folder the user downloaded (searched recursively).
    data_dir: the TFDS data directory (``config.data.tfds_data_dir``).
    name: for ``image_folder``, the name to read it back by
      (``tfds:image_folder/NAME``); the other builders take none.
    max_pixels: larger images are refused (decompression-bomb guard).
  """
  if dataset not in BUILDERS:
    raise DataError(f"unknown dataset {dataset!r}; choose one of {sorted(BUILDERS)}")
  manual_dir = Path(manual_dir).expanduser()
  if not manual_dir.is_dir():
    raise DataError(f"manual_dir {manual_dir} is not a folder; point it at the downloaded images.")
  module = importlib.import_module(BUILDERS[dataset])
  kwargs = {}
  if dataset == "image_folder":
    if not name:
      raise DataError(
        "image_folder needs a name for the new dataset (--name=my_pictures); read it as "
        "tfds:image_folder/NAME."
      )
    kwargs["config"] = tfds.core.BuilderConfig(name=name, description=f"images of {manual_dir}")
  elif name:
    raise DataError(f"{dataset} takes no name; it is read as tfds:{dataset}.")
  if not any(
    manual_dir.iterdir()
  ):  # TFDS's own check would stop with an AssertionError and a traceback
    raise DataError(f"manual_dir {manual_dir} is empty; point it at the downloaded images.")
  builder = module.Builder(
    data_dir=str(Path(data_dir).expanduser()),
    file_format="array_record",
    max_pixels=max_pixels,
    **kwargs,
  )
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  out = Path(builder.data_dir)
  report = {
    "manual_dir": str(manual_dir),
    "stored": builder.info.splits["train"].num_examples,
    "skipped": [{"item": item, "reason": reason} for item, reason in builder.skipped],
  }
  files.write_text(out / BUILD_REPORT, json.dumps(report, indent=1, ensure_ascii=False) + "\n")
  log.info(
    "%s: %d images stored in %s; %d skipped (listed in %s).",
    builder.name,
    report["stored"],
    out,
    len(builder.skipped),
    out / BUILD_REPORT,
  )
  return out
