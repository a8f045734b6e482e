"""Random-access image sources.

Every source follows the protocol of ``tfds.data_source`` and grain:
``len(src)`` and ``src[i]`` → uint8 ``np.ndarray`` of shape H×W×C with
C = 1 or 3. Sizes may differ between indices (folders of photos); making
them uniform is the job of :class:`vae_jax.data.preprocess.Preprocess`.

Sources whose items must be decoded (folders, TFDS datasets, array files
that need resizing) also describe themselves for the decode cache:
``identity()`` (which dataset, whatever its current contents),
``fingerprint()`` (lines that change whenever its contents change) and
``describe(i)`` (how to name item ``i`` in a report).
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from vae_jax.data.npyfile import NpyRows
from vae_jax.data.preprocess import pil_to_array
from vae_jax.data.tfds_builders import BUILDERS
from vae_jax.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
SPEC_FORMS = ("synthetic:faces", "synthetic:galaxies", "folder:PATH", "npz:PATH", "tfds:NAME")
# PIL's own warning threshold; above twice this PIL refuses outright.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS


class Source(Protocol):
  """What the data pipeline needs from a source."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> np.ndarray: ...


class ImageReadError(OSError):
  """An image file could not be decoded; ``path`` names it, ``reason`` says why.

  A dedicated type so a caller can catch exactly this (e.g. to skip and
  report corrupt files) without swallowing unrelated errors.
  """

  def __init__(self, message: str, path: Path | None = None, reason: str | None = None):
    # args == (message,) keeps the error picklable across worker processes
    super().__init__(message)
    self.path = path
    self.reason = reason or message


def display_path(path: str | Path) -> str:
  """``path`` as printable text: bytes that are not UTF-8 become ``\\xNN`` escapes.

  Folders crawled from the web contain names that are not valid UTF-8;
  Python carries them as lone surrogates, which cannot be written to a
  UTF-8 report or terminal.
  """
  return os.fsencode(path).decode("utf-8", "backslashreplace")


def _why_unreadable(error: BaseException) -> str:
  """A short, actionable reason for a file that failed to decode."""
  if isinstance(error, PermissionError):
    return "permission denied"
  if isinstance(error, OSError) and error.errno == errno.ELOOP:
    return "symbolic link loop"
  if isinstance(error, FileNotFoundError):
    return "file vanished or is a broken symbolic link"
  if isinstance(error, IsADirectoryError):
    return "is a directory"
  if isinstance(error, UnidentifiedImageError):
    return "not an image PIL can read (wrong extension or corrupt header)"
  if isinstance(error, Image.DecompressionBombError):
    return f"too many pixels (decompression-bomb guard): {error}"
  return f"{type(error).__name__}: {error}"


def load_image(path: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """Decode one image file (or the bytes of one) to uint8 H×W×1 or H×W×3 (see :func:`pil_to_array`).

  Images with more than ``max_pixels`` pixels are refused from their
  header, before any pixel is decoded: a crawled "photo" of 30000×30000
  pixels would take gigabytes to open.

  Raises:
    ImageReadError: the file is missing, unreadable, empty, not an image,
      truncated, or too large; ``reason`` says which.
  """
  name = "the uploaded image" if isinstance(path, bytes) else path
  try:
    size = len(path) if isinstance(path, bytes) else os.stat(path).st_size
    if size == 0:
      raise ImageReadError(f"cannot read {name}: empty file", None, "empty file (0 bytes)")
    with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as img:
      width, height = img.size
      if width * height > max_pixels:
        reason = f"too many pixels: {width}×{height} > {max_pixels} (config.data.max_image_pixels)"
        raise ImageReadError(f"cannot read {name}: {reason}", None, reason)
      return pil_to_array(img)
  except ImageReadError as error:
    error.path = None if isinstance(path, bytes) else Path(path)
    raise
  except Exception as error:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError…
    where = None if isinstance(path, bytes) else Path(path)
    raise ImageReadError(f"cannot read {name}: {error}", where, _why_unreadable(error)) from error


def find_images(root: Path, problems: list[tuple[str, str]] | None = None) -> list[Path]:
  """All image files under ``root``, sorted by relative POSIX path.

  Sorting by relative path (not by the absolute path or by directory
  listing order, which depends on the file system) gives the same order,
  and so the same train/eval split, on every machine. Hidden files and
  folders (``.ipynb_checkpoints``, macOS ``._x.jpg`` resource forks) are
  skipped: they are not images even when their extension says so.
  Symlinked folders outside ``root`` are followed, so a dataset can be
  assembled from links; a link back into ``root`` (a loop, or a second way
  to reach one of its folders) is not, and neither is any folder reached a
  second time, so no image is read twice and no walk is endless.

  Args:
    root: the folder to search.
    problems: if given, receives ``(path, reason)`` for every folder that
      could not be listed or was not entered.
  """
  problems = [] if problems is None else problems
  real_root = os.path.realpath(root)
  found, seen = [], set()

  def unreadable(error: OSError) -> None:
    problems.append(
      (display_path(error.filename), f"folder not readable: {_why_unreadable(error)}")
    )

  def enter(folder: str, name: str) -> bool:
    path = os.path.join(folder, name)
    if name.startswith("."):
      return False
    if os.path.islink(path):
      target = os.path.realpath(path)
      if os.path.commonpath([target, real_root]) == real_root:
        inside = os.path.commonpath([target, os.path.realpath(folder)]) == target
        reason = (
          "symbolic link loop" if inside else "symbolic link to a folder already in the dataset"
        )
        problems.append((display_path(path), f"{reason}: not followed"))
        return False
    return True

  for folder, subfolders, files in os.walk(root, followlinks=True, onerror=unreadable):
    try:
      info = os.stat(folder)
    except OSError as error:
      unreadable(error)
      subfolders[:] = []
      continue
    if (info.st_dev, info.st_ino) in seen:
      problems.append(
        (display_path(folder), "folder already visited (symbolic link loop or a second link to it)")
      )
      subfolders[:] = []
      continue
    seen.add((info.st_dev, info.st_ino))
    subfolders[:] = [name for name in subfolders if enter(folder, name)]
    found += [
      Path(folder, name)
      for name in files
      if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS
    ]
  return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def _file_line(path: Path, label: str) -> str:
  """One fingerprint line: the file's name, size and modification time (or why it has none)."""
  try:
    info = os.stat(path)
    return f"{label}\t{info.st_size}\t{info.st_mtime_ns}"
  except OSError as error:
    return f"{label}\t{type(error).__name__}"


class ImageFolderSource:
  """Every image below a folder (recursively), decoded on access.

  ``skipped`` lists ``(path, reason)`` for folders that could not be
  searched; files that fail to decode are found later, by the caller.
  """

  def __init__(self, root: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS):
    self.root = Path(root).expanduser()
    self.max_pixels = max_pixels
    looked_for = (
      f"files ending in {', '.join(sorted(IMAGE_EXTENSIONS))} (any case, in any subfolder)"
    )
    if not self.root.is_dir():
      raise DataError(
        f"image folder {self.root} does not exist or is not a directory; expected a folder with "
        f"{looked_for}. Check the path in the data config."
      )
    self.skipped: list[tuple[str, str]] = []
    self.paths: list[Path] = find_images(self.root, self.skipped)
    if not self.paths:
      raise DataError(
        f"image folder {self.root} contains no images; looked for {looked_for}. "
        "Put images there or point the data config at another folder."
      )

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> np.ndarray:
    return load_image(self.paths[index], self.max_pixels)

  def describe(self, index: int) -> str:
    return display_path(self.paths[index])

  def identity(self) -> str:
    return f"folder:{display_path(self.root.resolve())}"

  def fingerprint(self) -> Iterator[str]:
    yield f"max_pixels={self.max_pixels}"
    for path in self.paths:
      yield _file_line(path, display_path(path.relative_to(self.root)))

  def __repr__(self) -> str:
    return f"ImageFolderSource({display_path(self.root)!r}, {len(self)} images)"


class ArraySource:
  """Images stored as one array in a ``.npy`` or ``.npz`` file.

  ``.npy`` files are read row by row when needed (see
  :class:`~vae_jax.data.npyfile.NpyRows`), so arrays larger than RAM work
  and start instantly; ``.npz`` (a zip) cannot be read that way and is
  loaded whole. Float images in [0, 1] become uint8 on access, so every
  source hands out the same dtype; their value range is checked once, up
  front, in one streaming pass.
  """

  def __init__(self, path: str | Path):
    self.path = Path(path).expanduser()
    if self.path.suffix not in (".npy", ".npz"):
      raise DataError(f"array file {self.path} must end in .npy or .npz")
    if not self.path.is_file():
      raise DataError(f"array file {self.path} does not exist; check the path in the data config.")
    if self.path.suffix == ".npy":
      self.images: NpyRows | np.ndarray = NpyRows(self.path)
    else:
      self.images = _array_from_npz(self.path)
    _check_images(self.images, self.path)

  @property
  def shape(self) -> tuple[int, int, int, int]:
    """N×H×W×C of the images this source hands out."""
    shape = tuple(self.images.shape)
    return shape if len(shape) == 4 else shape + (1,)

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> np.ndarray:
    return self.take([index])[0]

  def take(self, indices) -> np.ndarray:
    """Images ``indices`` as one uint8 N×H×W×C array."""
    rows = (
      self.images.take(indices)
      if isinstance(self.images, NpyRows)
      else self.images[np.asarray(indices)]
    )
    return _to_uint8(rows).reshape((len(rows),) + self.shape[1:])

  def describe(self, index: int) -> str:
    return f"{display_path(self.path)}[{index}]"

  def identity(self) -> str:
    return f"npz:{display_path(self.path.resolve())}"

  def fingerprint(self) -> Iterator[str]:
    yield _file_line(self.path, display_path(self.path.resolve()))

  def __repr__(self) -> str:
    return f"ArraySource({display_path(self.path)!r}, shape={self.shape})"


def _array_from_npz(path: Path) -> np.ndarray:
  with np.load(path) as archive:
    keys = archive.files
    if "images" in keys:
      return archive["images"]
    if len(keys) == 1:
      return archive[keys[0]]
  raise DataError(
    f"{path} holds arrays {keys} and none is named 'images'; store the images under the key "
    "'images'"
  )


def _check_images(images: NpyRows | np.ndarray, path: Path) -> None:
  """Refuse arrays that are not N×H×W(×C) uint8, or float with values outside [0, 1]."""
  expected = "expected uint8 (or float in [0, 1]) images of shape N×H×W or N×H×W×C with C in (1, 3)"
  got = f"got shape {tuple(images.shape)} dtype {images.dtype} in {path}"
  shape = images.shape
  if not (len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3))) or shape[0] == 0:
    raise DataError(f"{expected}; {got}")
  if np.issubdtype(images.dtype, np.floating):
    blocks = (
      images.chunks(max(1, 2**26 // images.row_bytes)) if isinstance(images, NpyRows) else [images]
    )
    for block in blocks:
      if not (block.min() >= 0 and block.max() <= 1):  # also rejects NaN
        raise DataError(f"{expected}; {got} with values outside [0, 1]")
  elif images.dtype != np.uint8:
    raise DataError(f"{expected}; {got}")


def _to_uint8(images: np.ndarray) -> np.ndarray:
  if np.issubdtype(images.dtype, np.floating):
    return np.round(images * 255).astype(np.uint8)
  return images


class TfdsSource:
  """One split of a TFDS dataset prepared in array_record format, read without TensorFlow.

  Records are read with ``tfds.data_source``; an ``Image`` feature's
  encoded bytes are decoded here with PIL (as image files are), so CMYK,
  16-bit and palette images in other people's datasets come out as they
  do from a folder.
  """

  def __init__(
    self, name: str, data_dir: str | None = None, split: str = "train", image_key: str = "image"
  ):
    import tensorflow_datasets as tfds  # lazy: a second of imports that only tfds: sources need

    self.name, self.split, self.image_key = name, split, image_key
    data_dir = os.path.expanduser(data_dir) if data_dir else None
    dataset, _, config_name = name.partition(":")[0].partition("/")
    where = f"--data_dir={data_dir or '~/tensorflow_datasets'}"
    if dataset in BUILDERS:
      named = f" --name={config_name or 'NAME'}" if dataset == "image_folder" else ""
      build_hint = (
        f"Build it first: python bin/build_dataset.py --dataset={dataset}{named} "
        f"--manual_dir=PATH {where}"
      )
    else:
      build_hint = (
        f"Prepare it there in array_record format (tfds build {dataset} "
        f"--file_format=array_record {where}, "
        "on a machine with TensorFlow), or turn a folder of images into a dataset: python "
        "bin/build_dataset.py "
        f"--dataset=image_folder --name={dataset} --manual_dir=PATH {where}"
      )
    build_hint += (
      " (see README, 'Data sources'), and set config.data.tfds_data_dir to that data_dir."
    )
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError, bad version or config names, ...
      first_line = (
        str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
      )
      raise DataError(
        f"TFDS dataset {name!r} not found in {data_dir or 'the default data_dir'} ({first_line}). "
        f"{build_hint}"
      ) from None
    if not (Path(builder.data_dir) / "dataset_info.json").exists():
      raise DataError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir}. {build_hint}")
    file_format = str(getattr(builder.info, "file_format", "")).lower()
    if "array_record" not in file_format:
      raise DataError(
        f"TFDS dataset {name!r} in {builder.data_dir} is stored as {file_format or 'tfrecord'}, "
        "which needs "
        "TensorFlow to read; rebuild it with file_format='array_record'."
      )
    features = builder.info.features
    self.feature_kind = _image_feature_kind(features, image_key, name)
    decoders = {image_key: tfds.decode.SkipDecoding()} if self.feature_kind == "encoded" else None
    try:
      self.records = builder.as_data_source(split=split, decoders=decoders)
    except Exception as error:
      raise DataError(
        f"TFDS dataset {name!r} has no split {split!r} (splits: {sorted(builder.info.splits)}): "
        f"{error}. "
        "Set config.data.tfds_split."
      ) from None
    self.directory = Path(builder.data_dir)
    if len(self.records) == 0:
      raise DataError(f"split {split!r} of TFDS dataset {name!r} in {self.directory} is empty.")

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> np.ndarray:
    value = self.records[index][self.image_key]
    if self.feature_kind == "encoded":
      try:
        with Image.open(io.BytesIO(value)) as img:
          return pil_to_array(img)
      except Exception as error:
        reason = _why_unreadable(error)
        raise ImageReadError(
          f"cannot decode {self.describe(index)}: {reason}", None, reason
        ) from error
    image = np.asarray(value)
    return image[..., None] if image.ndim == 2 else image

  def describe(self, index: int) -> str:
    return f"tfds:{self.name} {self.split}[{index}]"

  def identity(self) -> str:
    return f"tfds:{display_path(self.directory.resolve())}:{self.split}:{self.image_key}"

  def fingerprint(self) -> Iterator[str]:
    for path in sorted(self.directory.iterdir()):
      yield _file_line(path, path.name)

  def __repr__(self) -> str:
    where = display_path(self.directory)
    return f"TfdsSource({self.name!r}, split={self.split!r}, {len(self)} records in {where})"


def _image_feature_kind(features, key: str, name: str) -> str:
  """``"encoded"`` for a tfds ``Image`` feature, ``"array"`` for a uint8 image tensor."""
  import tensorflow_datasets as tfds

  available = (
    {k: type(v).__name__ for k, v in features.items()} if hasattr(features, "items") else {}
  )
  if key not in available:
    raise DataError(
      f"TFDS dataset {name!r} has no feature {key!r}; it has {available}. "
      "Set config.data.tfds_image_key to the image feature."
    )
  feature = features[key]
  if isinstance(feature, tfds.features.Image):
    return "encoded"
  shape, dtype = (
    tuple(getattr(feature, "shape", ())),
    np.dtype(getattr(feature, "np_dtype", np.float32)),
  )
  if (
    isinstance(feature, tfds.features.Tensor)
    and dtype == np.uint8
    and (len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3)))
  ):
    return "array"
  raise DataError(
    f"feature {key!r} of TFDS dataset {name!r} is {feature!r}, not an image "
    f"(features: {available}). Set config.data.tfds_image_key to an Image feature."
  )


def make_source(
  spec: str,
  *,
  num_images: int = 4000,
  image_size: int = 64,
  seed: int = 0,
  tfds_data_dir: str | None = None,
  tfds_split: str = "train",
  tfds_image_key: str = "image",
  max_image_pixels: int = DEFAULT_MAX_PIXELS,
) -> Source:
  """Build a source from a config string such as ``"folder:~/faces"``.

  Each kind takes the keyword arguments that concern it and ignores the
  rest (``num_images``, ``image_size`` and ``seed`` go to synthetic
  sources, ``tfds_*`` to TFDS ones), so a caller can always pass them all
  from the config without branching on the source kind.
  """
  kind, _, argument = spec.partition(":")
  if not argument:
    raise DataError(f"bad data source {spec!r}; valid forms: {', '.join(SPEC_FORMS)}")
  if kind == "synthetic":
    if argument not in ("faces", "galaxies"):
      raise DataError(
        f"unknown synthetic source {argument!r}; valid: synthetic:faces, synthetic:galaxies"
      )
    from vae_jax.data import synthetic  # lazy: only synthetic runs need it

    cls = synthetic.SyntheticFaces if argument == "faces" else synthetic.SyntheticGalaxies
    return cls(num_images=num_images, image_size=image_size, seed=seed)
  if kind == "folder":
    return ImageFolderSource(argument, max_pixels=max_image_pixels)
  if kind == "npz":
    return ArraySource(argument)
  if kind == "tfds":
    return TfdsSource(argument, tfds_data_dir, tfds_split, tfds_image_key)
  raise DataError(
    f"unknown data source kind {kind!r} in {spec!r}; valid forms: {', '.join(SPEC_FORMS)}"
  )
