"""The builder the three image-folder datasets share: check every file, store it as TFDS records.

Each file is decoded once with :func:`vae_jax.data.sources.load_image`, so
broken files are found at build time and left out (``skipped``). What is
stored is always 3-channel: the file's own bytes when PIL reads them back
as they are (an RGB JPEG or PNG without EXIF rotation), otherwise a PNG of
the corrected image (CMYK, 16-bit, palette, alpha, rotated, animated ...).
Readers therefore get the same pixels from ``tfds.data_source``, with or
without vae_jax.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from vae_jax.data.report import NoUsableImagesError
from vae_jax.data.sources import (
  DEFAULT_MAX_PIXELS,
  ImageReadError,
  display_path,
  find_images,
  load_image,
)

_EXIF_ORIENTATION = 0x0112


def encoded_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
  """What to store for an image file: the file if a plain RGB JPEG or PNG, else a PNG of its pixels.

  Raises:
    ImageReadError: the file cannot be used (see ``load_image``).
  """
  pixels = load_image(path, max_pixels)
  if pixels.shape[2] == 1:
    pixels = np.repeat(pixels, 3, axis=2)
  with Image.open(path) as img:
    as_is = (
      img.format in ("JPEG", "PNG")
      and img.mode == "RGB"
      and not getattr(img, "is_animated", False)
      and img.getexif().get(_EXIF_ORIENTATION, 1) == 1
    )
  if as_is:
    return path.read_bytes()
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()


class FolderImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Every image below ``manual_dir`` (recursively), one ``train`` split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}

  def __init__(self, *, max_pixels: int = DEFAULT_MAX_PIXELS, **kwargs):
    self.max_pixels = max_pixels
    self.skipped: list[tuple[str, str]] = []
    super().__init__(**kwargs)

  def extra_features(self) -> dict[str, Any]:
    """Features beside ``image`` and ``filename``; subclasses add their own."""
    return {}

  def extra_values(self, relative: Path) -> dict[str, Any]:
    return {}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3)),
          "filename": tfds.features.Text(),
          **self.extra_features(),
        }
      ),
      supervised_keys=None,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    return {"train": self._generate_examples(Path(dl_manager.manual_dir))}

  def _generate_examples(self, root: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    problems: list[tuple[str, str]] = []
    paths = find_images(root, problems)
    self.skipped[:] = problems
    stored = 0
    for path in paths:
      relative = path.relative_to(root)
      try:
        data = encoded_image(path, self.max_pixels)
      except ImageReadError as error:
        self.skipped.append((display_path(path), error.reason))
        continue
      name = display_path(relative)
      stored += 1
      yield name, {"image": data, "filename": name, **self.extra_values(relative)}
    if not stored:  # TFDS itself would stop with "No examples were yielded" and a traceback
      examples = (
        "; ".join(f"{item}: {reason}" for item, reason in self.skipped[:3])
        or "no image files found"
      )
      raise NoUsableImagesError(
        f"No usable images in {root} ({examples}); point manual_dir at a folder of images."
      )
