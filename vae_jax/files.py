"""Files written whole or not at all: a temporary name in the same folder, then an atomic rename.

A run killed, or a disk that fills, in the middle of a write leaves the
previous version of the file (or none), never a truncated one that a later
command would trip over.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from vae_jax.errors import WriteError


def write_bytes(path: str | Path, data: bytes) -> Path:
  """Write ``data`` to ``path`` atomically, creating parent folders.

  Raises:
    WriteError: the folder or file could not be written (full disk, read-only,
      permissions); ``path`` keeps its previous contents.
  """
  path = Path(path).expanduser()
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as error:
    with contextlib.suppress(OSError):
      tmp.unlink()
    kept = "its previous version is intact" if path.exists() else "nothing was written"
    raise WriteError(cannot_write(path, error), f"{kept}. {FIX}") from None
  return path


FIX = "Free space (or fix the folder's permissions), then re-run the same command."


def cannot_write(path: str | Path, error: BaseException) -> str:
  """``"<path> could not be written (<reason>)"`` for an error (an ``OSError``) while writing."""
  reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
  return f"{path} could not be written ({reason})"


def write_text(path: str | Path, text: str) -> Path:
  """``write_bytes`` of UTF-8 text."""
  return write_bytes(path, text.encode("utf-8"))
