"""Row access to ``.npy`` files with positional reads instead of memory maps.

A memory-mapped array is read lazily, but every page it touches stays in
the process's resident set until the kernel needs the memory back, so one
epoch over a 10 GB array shows up as 10 GB of RSS. Reading rows with
``os.preadv`` into fresh buffers goes through the page cache instead, which
the kernel owns: the process only holds the rows it asked for. Positional
reads need no seek, so many threads (and, after pickling, worker processes)
can read one file at the same time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vae_jax.errors import DataError

# A fixed header size lets a writer create the file before it knows every row.
_HEADER_BYTES = 128


class NpyRows:
  """Random access to the rows (first axis) of a C-ordered ``.npy`` file.

  Pickles by path: a worker process reopens the file on first use.
  """

  def __init__(self, path: str | Path):
    self.path = Path(path)
    with open(self.path, "rb") as f:
      version = np.lib.format.read_magic(f)
      if version not in ((1, 0), (2, 0)):
        raise DataError(
          f"{path} is a version {version} .npy file; save it with numpy's default format"
        )
      read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
      )
      shape, fortran_order, dtype = read_header(f)
      self.offset = f.tell()
    if fortran_order or dtype.hasobject or not shape:
      raise DataError(
        f"{self.path} holds a {'Fortran-ordered ' if fortran_order else ''}array of shape {shape} "
        f"dtype {dtype}; "
        "row access needs a C-ordered numeric array with at least one axis (re-save it with "
        "np.save(np.ascontiguousarray(x)))."
      )
    self.shape: tuple[int, ...] = tuple(shape)
    self.dtype = dtype
    self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    expected = self.offset + self.shape[0] * self.row_bytes
    if self.path.stat().st_size < expected:
      raise DataError(
        f"{self.path} is truncated: {self.path.stat().st_size} bytes, its header needs {expected}."
      )
    self._fd: int | None = None

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, index: int) -> np.ndarray:
    return self.take([index])[0]

  def take(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Rows ``indices`` (any order, repeats allowed) as one new array."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    n = len(self)
    if indices.size and (indices.min() < -n or indices.max() >= n):
      raise IndexError(f"row index out of range for {n} rows of {self.path}")
    indices = np.where(indices < 0, indices + n, indices)
    out = np.empty((len(indices),) + self.shape[1:], self.dtype)
    flat = out.reshape(len(indices), -1).view(np.uint8)
    fd = self._file()
    for row, index in enumerate(indices):
      done = os.preadv(fd, [flat[row]], self.offset + int(index) * self.row_bytes)
      if done != self.row_bytes:
        raise OSError(
          f"short read of row {index} from {self.path} ({done} of {self.row_bytes} bytes)"
        )
    return out

  def chunks(self, rows: int) -> Iterator[np.ndarray]:
    """Consecutive blocks of at most ``rows`` rows, for one streaming pass."""
    for start in range(0, len(self), rows):
      yield self.take(np.arange(start, min(start + rows, len(self))))

  def _file(self) -> int:
    if self._fd is None:
      self._fd = os.open(self.path, os.O_RDONLY)
    return self._fd

  def __getstate__(self) -> dict:
    return {**self.__dict__, "_fd": None}

  def __del__(self) -> None:
    if getattr(self, "_fd", None) is not None:
      os.close(self._fd)


def create_npy(path: str | Path, shape: tuple[int, ...], dtype: np.dtype) -> int:
  """Create ``path`` as a zero-filled ``.npy`` of ``shape``; returns the byte offset of row 0.

  The file is sparse until rows are written with :func:`write_rows`, so a
  cache can be filled in any order without holding it in memory.
  """
  dtype = np.dtype(dtype)
  header = repr(
    {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
  )
  prefix = np.lib.format.magic(1, 0)
  room = _HEADER_BYTES - len(prefix) - 2  # 2 bytes hold the header length
  if len(header) + 1 > room:
    raise ValueError(f"shape {shape} is too long for a {_HEADER_BYTES}-byte .npy header")
  header = header.ljust(room - 1) + "\n"
  with open(path, "wb") as f:
    f.write(prefix + room.to_bytes(2, "little") + header.encode("latin1"))
    f.truncate(_HEADER_BYTES + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
  return _HEADER_BYTES


def write_rows(fd: int, offset: int, start: int, rows: np.ndarray) -> None:
  """Write consecutive rows ``start, start+1, …`` of a file made by :func:`create_npy`."""
  rows = np.ascontiguousarray(rows)
  if not len(rows):
    return
  data, position = memoryview(rows).cast("B"), offset + start * rows[0].nbytes
  while data:
    written = os.pwrite(fd, data, position)
    data, position = data[written:], position + written
