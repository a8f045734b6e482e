"""``anime_faces``: the crawled anime-face set the reference VAE trained on.

Any layout of image files in ``manual_dir`` (``faces/0.jpg`` …, or the
1044 ``face1.png`` … of the 30×30 reference subset). Build and read back::

    python bin/build_dataset.py --dataset=anime_faces --manual_dir=~/Downloads/faces
    python bin/train.py --config configs/faces_mlp.py --config.data.source=tfds:anime_faces
"""

from vae_jax.data.tfds_builders.folder import FolderImages


class AnimeFaces(FolderImages):
  """Anime-style face crops, one face per image, any size (96×96 in the common crawl)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the anime-face images (e.g. the 96×96 crawl of 51 223 faces, or
  the 30×30 reference subset) and pass their folder as manual_dir; images
  are found in any subfolder.
  """


Builder = AnimeFaces
