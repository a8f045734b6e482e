"""Random-access image sources.

Every source follows the protocol of ``tfds.data_source`` and grain:
``len(src)`` and ``src[i]`` → uint8 ``np.ndarray`` of shape H×W×C with
C = 1 or 3. Sizes may differ between indices (folders of photos); making
them uniform is the job of :class:`vae_jax.data.preprocess.Preprocess`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from vae_jax.data.preprocess import pil_to_array

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
SPEC_FORMS = ("synthetic:faces", "synthetic:galaxies", "folder:PATH", "npz:PATH", "tfds:NAME")


class Source(Protocol):
    """What the data pipeline needs from a source."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


class ImageReadError(OSError):
    """An image file could not be decoded; ``path`` names it.

    A dedicated type so a caller can catch exactly this (e.g. to skip and
    report corrupt files) without swallowing unrelated errors.
    """

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)  # args == (message,) keeps the error picklable across worker processes
        self.path = path


def load_image(path: str | Path) -> np.ndarray:
    """Decode one image file to uint8 H×W×1 or H×W×3 (see :func:`pil_to_array`)."""
    try:
        with Image.open(path) as img:
            return pil_to_array(img)
    except Exception as error:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        raise ImageReadError(f"cannot read image {path}: {error}", Path(path)) from error


def find_images(root: Path) -> list[Path]:
    """All image files under ``root``, sorted by relative POSIX path.

    Sorting by relative path (not by the absolute path or by directory
    listing order, which depends on the file system) gives the same order,
    and so the same train/eval split, on every machine. Hidden files and
    folders (``.ipynb_checkpoints``, macOS ``._x.jpg`` resource forks) are
    skipped: they are not images even when their extension says so.
    Symlinked folders are followed, so a dataset can be assembled from links.
    """
    found = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found += [
            Path(folder, name)
            for name in files
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


class ImageFolderSource:
    """Every image below a folder (recursively), decoded on access."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        looked_for = f"files ending in {', '.join(sorted(IMAGE_EXTENSIONS))} (any case, in any subfolder)"
        if not self.root.is_dir():
            raise ValueError(
                f"image folder {self.root} does not exist or is not a directory; expected a folder with "
                f"{looked_for}. Check the path in the data config."
            )
        self.paths: list[Path] = find_images(self.root)
        if not self.paths:
            raise ValueError(
                f"image folder {self.root} contains no images; looked for {looked_for}. "
                "Put images there or point the data config at another folder."
            )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return load_image(self.paths[index])

    def __repr__(self) -> str:
        return f"ImageFolderSource({str(self.root)!r}, {len(self)} images)"


class ArraySource:
    """Images stored as one array in a ``.npy`` or ``.npz`` file.

    ``.npy`` is memory-mapped, so datasets larger than RAM work and start
    instantly; ``.npz`` (a zip) cannot be mapped and is loaded whole. Float
    arrays in [0, 1] are converted to uint8 once at load time, so every
    source hands out the same dtype.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if self.path.suffix == ".npy":
            array = np.load(self.path, mmap_mode="r")
        elif self.path.suffix == ".npz":
            array = _array_from_npz(self.path)
        else:
            raise ValueError(f"array file {self.path} must end in .npy or .npz")
        self.images: np.ndarray = _as_uint8_nhwc(array, self.path)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> np.ndarray:
        return np.array(self.images[index])  # copy: a plain array, detached from the memory map

    def __repr__(self) -> str:
        return f"ArraySource({str(self.path)!r}, shape={self.images.shape})"


def _array_from_npz(path: Path) -> np.ndarray:
    with np.load(path) as archive:
        keys = archive.files
        if "images" in keys:
            return archive["images"]
        if len(keys) == 1:
            return archive[keys[0]]
    raise ValueError(f"{path} holds arrays {keys} and none is named 'images'; store the images under the key 'images'")


def _as_uint8_nhwc(array: np.ndarray, path: Path) -> np.ndarray:
    expected = "expected uint8 (or float in [0, 1]) images of shape N×H×W or N×H×W×C with C in (1, 3)"
    got = f"got shape {array.shape} dtype {array.dtype} in {path}"
    if not (array.ndim == 3 or (array.ndim == 4 and array.shape[3] in (1, 3))) or array.shape[0] == 0:
        raise ValueError(f"{expected}; {got}")
    if np.issubdtype(array.dtype, np.floating):
        if not (array.min() >= 0 and array.max() <= 1):  # also rejects NaN
            raise ValueError(f"{expected}; {got} with values outside [0, 1]")
        array = np.round(array * 255).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"{expected}; {got}")
    return array[..., None] if array.ndim == 3 else array


def make_source(spec: str, **synthetic_kwargs) -> Source:
    """Build a source from a config string such as ``"folder:~/faces"``.

    ``synthetic_kwargs`` (``num_images``, ``image_size``, ``seed``) are
    passed to synthetic sources and ignored by the others, so a caller can
    always pass them from the config without branching on the source kind.
    """
    kind, _, argument = spec.partition(":")
    if not argument:
        raise ValueError(f"bad data source {spec!r}; valid forms: {', '.join(SPEC_FORMS)}")
    if kind == "synthetic":
        if argument not in ("faces", "galaxies"):
            raise ValueError(f"unknown synthetic source {argument!r}; valid: synthetic:faces, synthetic:galaxies")
        from vae_jax.data import synthetic  # lazy: only synthetic runs need it

        cls = synthetic.SyntheticFaces if argument == "faces" else synthetic.SyntheticGalaxies
        return cls(**synthetic_kwargs)
    if kind == "folder":
        return ImageFolderSource(argument)
    if kind == "npz":
        return ArraySource(argument)
    if kind == "tfds":
        raise NotImplementedError(
            f"tfds:{argument}: TFDS sources are coming in a later version; for now use folder:PATH or npz:PATH"
        )
    raise ValueError(f"unknown data source kind {kind!r} in {spec!r}; valid forms: {', '.join(SPEC_FORMS)}")
