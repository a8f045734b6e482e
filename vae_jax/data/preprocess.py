"""Image decoding and geometric preprocessing, in pure numpy/PIL.

Everything here works on uint8 arrays of shape H×W×C (C = 1 or 3), the
element type of every data source. Conversion to float and value-range
scaling happen on the model side, so that batches cross the host→device
boundary as compact uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_collections
import numpy as np
from PIL import Image, ImageOps

from vae_jax.errors import DataError

# Modes in which PIL decodes high-bit-depth greyscale (16-bit PNG/TIFF decode
# as "I;16*" or, depending on the Pillow version, as 32-bit "I").
_WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_CROP_MODES = ("center", "none")


def pil_to_array(img: Image.Image) -> np.ndarray:
  """Decode a PIL image to a uint8 array of shape H×W×1 (grey) or H×W×3.

  Grey stays grey (one channel) so that the `channels` setting, not the
  file format, decides what the model sees.

  - EXIF orientation is applied, so photos look as they would in a viewer.
  - Animated images (GIF, WebP, ...) contribute their first frame.
  - Alpha (RGBA, LA, palette with transparency) is composited onto black:
    for faces and galaxies the subject sits on a dark/empty background, and
    the model has no alpha channel, so transparent pixels must become
    background instead of whatever colour happens to be stored under them.
  - 16-bit grey is scaled with x/257 (65535 → 255), not clipped: clipping
    would turn almost every pixel white.
  - Palette, CMYK, YCbCr and other colour modes become RGB.
  """
  if getattr(img, "is_animated", False):
    img.seek(0)
  img = ImageOps.exif_transpose(img)
  if img.mode in _WIDE_GREY_MODES:
    wide = np.asarray(img).astype(np.float32)
    return np.round(np.clip(wide, 0, 65535) / 257).astype(np.uint8)[..., None]
  if img.mode == "F":
    raise DataError(
      "32-bit float images have no defined value range; convert them to 8 or 16 bit first"
    )
  if img.mode in ("P", "PA"):
    img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
  if "A" in img.getbands():
    base = "L" if img.mode == "LA" else "RGB"
    background = Image.new(base, img.size, 0)
    background.paste(img.convert(base), mask=img.getchannel("A"))
    img = background
  if img.mode in ("1", "L"):
    return np.asarray(img.convert("L"), dtype=np.uint8)[..., None]
  return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Centred window of the given size (odd margins: one more pixel below/right)."""
  top = (image.shape[0] - height) // 2
  left = (image.shape[1] - width) // 2
  return image[top : top + height, left : left + width]


@dataclass(frozen=True)
class Preprocess:
  """Crop, resize and set the channel count of one uint8 H×W×C image.

  Frozen (hashable, picklable) so it can be handed to data-loader workers.

  Steps, in order:
  1. ``crop_size > 0``: take the centred ``crop_size``×``crop_size`` window
     at native resolution first. Galaxy Zoo images are 424×424 with the
     galaxy in the middle; cropping the central 256 before resizing keeps
     resolution on the object instead of on empty sky.
  2. ``crop="center"``: take the largest centred square, so resizing keeps
     the aspect ratio; ``crop="none"``: keep the whole image and squash it
     to a square.
  3. Resize to ``image_size`` with PIL (LANCZOS when shrinking, BICUBIC when
     enlarging); skipped when the size already matches.
  4. Channels: 3→1 with PIL ``convert("L")`` (ITU-R 601 luma,
     0.299R + 0.587G + 0.114B, as the reference grey faces were made);
     1→3 by repeating the grey channel.

  ``max_upscale > 0`` refuses images whose shorter side (after step 1)
  would have to grow by more than that factor: a 30×30 thumbnail blown up
  to 256×256 is a smear the model would learn to reproduce.
  """

  image_size: int
  channels: int
  crop: str = "center"
  crop_size: int = 0
  max_upscale: float = 0.0

  def __post_init__(self) -> None:
    if self.image_size <= 0:
      raise DataError(f"image_size must be positive, got {self.image_size}")
    if self.channels not in (1, 3):
      raise DataError(f"channels must be 1 or 3, got {self.channels}")
    if self.crop not in _CROP_MODES:
      raise DataError(f"crop must be one of {_CROP_MODES}, got {self.crop!r}")
    if self.crop_size < 0:
      raise DataError(f"crop_size must be >= 0 (0 = no fixed crop), got {self.crop_size}")
    if self.max_upscale < 0:
      raise DataError(f"max_upscale must be >= 0 (0 = no limit), got {self.max_upscale}")

  @property
  def output_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, self.channels)

  def is_identity_for(self, shape: tuple[int, ...]) -> bool:
    """Whether every image of ``shape`` (H, W, C) comes out unchanged."""
    return tuple(shape) == self.output_shape and self.crop_size in (0, self.image_size)

  def __call__(self, image: np.ndarray) -> np.ndarray:
    """Return a C-contiguous uint8 array of shape (image_size, image_size, channels)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
      raise DataError(
        f"expected a uint8 H×W×C image with C in (1, 3), got shape {image.shape} dtype "
        f"{image.dtype}"
      )
    height, width = image.shape[:2]
    if self.crop_size:
      if min(height, width) < self.crop_size:
        raise DataError(
          f"image of {height}×{width} pixels is smaller than crop_size={self.crop_size}"
        )
      image = _center_crop(image, self.crop_size, self.crop_size)
    side = min(image.shape[:2])
    if self.max_upscale and side * self.max_upscale < self.image_size:
      raise DataError(
        f"image of {height}×{width} pixels is too small for image_size={self.image_size}: it "
        "would be "
        f"enlarged {self.image_size / side:.1f}× (max_upscale={self.max_upscale:g})"
      )
    if self.crop == "center":
      side = min(image.shape[:2])
      image = _center_crop(image, side, side)
    image = self._resize(image)
    if image.shape[2] == 3 and self.channels == 1:
      image = np.asarray(Image.fromarray(image).convert("L"))[..., None]
    elif image.shape[2] == 1 and self.channels == 3:
      image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image, dtype=np.uint8)

  def _resize(self, image: np.ndarray) -> np.ndarray:
    height, width, channels = image.shape
    size = self.image_size
    if height == size and width == size:
      return image
    resample = (
      Image.Resampling.LANCZOS if height * width > size * size else Image.Resampling.BICUBIC
    )
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    resized = np.asarray(pil.resize((size, size), resample=resample))
    return resized[..., None] if channels == 1 else resized


def preprocess_from_config(data_cfg: ml_collections.ConfigDict) -> Preprocess:
  """The ``Preprocess`` a config's ``data`` group describes: what every model input goes through."""
  return Preprocess(
    image_size=data_cfg.image_size,
    channels=data_cfg.channels,
    crop=data_cfg.crop,
    crop_size=data_cfg.crop_size,
    max_upscale=data_cfg.max_upscale,
  )
