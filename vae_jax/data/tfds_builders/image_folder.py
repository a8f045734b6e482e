"""``image_folder/NAME``: any folder of images, under a name of your choosing.

The first-level subfolder of each image is kept as ``label`` ("" for images
directly in the folder), for folders sorted by class. Build and read back::

    python bin/build_dataset.py --dataset=image_folder --name=my_pictures --manual_dir=~/pictures
    python bin/train.py --config configs/faces_conv.py
    --config.data.source=tfds:image_folder/my_pictures
"""

from pathlib import Path
from typing import Any, ClassVar

import tensorflow_datasets as tfds

from vae_jax.data.tfds_builders.folder import FolderImages


class ImageFolder(FolderImages):
  """Every image of a folder; each build names its own config (``--name``)."""

  BUILDER_CONFIGS: ClassVar[list] = [
    tfds.core.BuilderConfig(name="default", description="images of manual_dir")
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Pass the folder of images as manual_dir; images are found in any subfolder."
  )

  def extra_features(self) -> dict[str, Any]:
    return {"label": tfds.features.Text()}

  def extra_values(self, relative: Path) -> dict[str, Any]:
    return {"label": relative.parts[0] if len(relative.parts) > 1 else ""}


Builder = ImageFolder
