"""TFDS dataset builders for image folders, written as array_record: no TensorFlow needed.

``tfds build`` (the CLI) imports TensorFlow, so datasets are built with
:func:`build` (``bin/build_dataset.py``) instead; reading them back is
``tfds.data_source``, which needs no TensorFlow either (``tfds:NAME``
sources in the data config).
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path

from vae_jax.data.sources import DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)

# dataset name → module defining its builder (imported only when building).
BUILDERS = {
  "anime_faces": "vae_jax.data.tfds_builders.anime_faces",
  "galaxy_zoo": "vae_jax.data.tfds_builders.galaxy_zoo",
  "image_folder": "vae_jax.data.tfds_builders.image_folder",
}
BUILD_REPORT = "build_report.json"


def build(
  dataset: str,
  manual_dir: str | Path,
  data_dir: str | Path = "~/tensorflow_datasets",
  name: str | None = None,
  max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Path:
  """Build ``dataset`` from the images in ``manual_dir`` into ``data_dir``; returns the dataset's folder.

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
  import tensorflow_datasets as tfds

  if dataset not in BUILDERS:
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(BUILDERS)}")
  manual_dir = Path(manual_dir).expanduser()
  if not manual_dir.is_dir():
    raise ValueError(f"manual_dir {manual_dir} is not a folder; point it at the downloaded images.")
  module = importlib.import_module(BUILDERS[dataset])
  kwargs = {}
  if dataset == "image_folder":
    if not name:
      raise ValueError(
        "image_folder needs a name for the new dataset (--name=my_pictures); read it as tfds:image_folder/NAME."
      )
    kwargs["config"] = tfds.core.BuilderConfig(name=name, description=f"images of {manual_dir}")
  elif name:
    raise ValueError(f"{dataset} takes no name; it is read as tfds:{dataset}.")
  if not any(
    manual_dir.iterdir()
  ):  # TFDS's own check would stop with an AssertionError and a traceback
    raise ValueError(f"manual_dir {manual_dir} is empty; point it at the downloaded images.")
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
  (out / BUILD_REPORT).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
  log.info(
    "%s: %d images stored in %s; %d skipped (listed in %s).",
    builder.name,
    report["stored"],
    out,
    len(builder.skipped),
    out / BUILD_REPORT,
  )
  return out
