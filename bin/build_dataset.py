#!/usr/bin/env python
"""Build a TFDS dataset (array_record, no TensorFlow) from a folder of images.

  python bin/build_dataset.py --dataset=galaxy_zoo --manual_dir=~/Downloads/galaxy_zoo
  python bin/build_dataset.py --dataset=image_folder --name=my_pictures --manual_dir=~/pictures

Then train on it with --config.data.source=tfds:galaxy_zoo (or
tfds:image_folder/my_pictures) and --config.data.tfds_data_dir=DATA_DIR if
--data_dir was not the default. Unusable files are left out and listed in
build_report.json in the dataset's folder.
"""

from absl import app, flags

from vae_jax.cli import parse_flags_or_explain, run_or_explain, setup_logging
from vae_jax.data.sources import DEFAULT_MAX_PIXELS
from vae_jax.data.tfds_builders import BUILDERS
from vae_jax.data.tfds_builders.build import build

_DATASET = flags.DEFINE_enum("dataset", None, sorted(BUILDERS), "Which builder.")
_MANUAL_DIR = flags.DEFINE_string(
  "manual_dir", None, "Folder of downloaded images (searched recursively)."
)
_DATA_DIR = flags.DEFINE_string(
  "data_dir", "~/tensorflow_datasets", "TFDS data directory to write to."
)
_NAME = flags.DEFINE_string(
  "name", None, "image_folder only: the new dataset's name (tfds:image_folder/NAME)."
)
_MAX_PIXELS = flags.DEFINE_integer(
  "max_image_pixels", DEFAULT_MAX_PIXELS, "Skip images with more pixels."
)


def main(argv):
  del argv
  setup_logging()
  out = run_or_explain(
    lambda: build(
      _DATASET.value, _MANUAL_DIR.value, _DATA_DIR.value, _NAME.value, _MAX_PIXELS.value
    )
  )
  print(f"Built {out}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["dataset", "manual_dir"])
  app.run(main, flags_parser=parse_flags_or_explain)
