"""TFDS dataset builders for image folders, written as array_record: no TensorFlow needed.

``tfds build`` (the CLI) imports TensorFlow, so datasets are built with
``vae_jax.data.tfds_builders.build.build`` (``bin/build_dataset.py``)
instead; reading them back is ``tfds.data_source``, which needs no
TensorFlow either (``tfds:NAME`` sources in the data config).
"""

# dataset name → module defining its builder (imported only when building).
BUILDERS = {
  "anime_faces": "vae_jax.data.tfds_builders.anime_faces",
  "galaxy_zoo": "vae_jax.data.tfds_builders.galaxy_zoo",
  "image_folder": "vae_jax.data.tfds_builders.image_folder",
}
BUILD_REPORT = "build_report.json"
