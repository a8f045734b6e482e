"""``galaxy_zoo``: SDSS galaxy photographs of the Galaxy Zoo challenge (424×424 RGB JPEG).

Put ``images_training_rev1/*.jpg`` (or any folders of ``<GalaxyID>.jpg``)
in ``manual_dir``. Build and read back::

    python bin/build_dataset.py --dataset=galaxy_zoo --manual_dir=~/Downloads/galaxy_zoo
    python bin/train.py --config configs/galaxy.py --config.data.source=tfds:galaxy_zoo
"""

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from vae_jax.data.tfds_builders.folder import FolderImages


class GalaxyZoo(FolderImages):
  """Galaxy photographs with their Galaxy Zoo ``galaxy_id`` (-1 when the file name is not one)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the Galaxy Zoo challenge images (images_training_rev1.zip) and
  pass the unzipped folder as manual_dir; files are named <GalaxyID>.jpg.
  """

  def extra_features(self) -> dict[str, Any]:
    return {"galaxy_id": tfds.features.Scalar(dtype=np.int64)}

  def extra_values(self, relative: Path) -> dict[str, Any]:
    return {"galaxy_id": int(relative.stem) if relative.stem.isdigit() else -1}


Builder = GalaxyZoo
