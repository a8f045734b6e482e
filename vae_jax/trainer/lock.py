"""One training run per workdir: a lock file that names its holder, safe on local disks and NFS.

The lock is ``<workdir>/train.lock``, made with a hard link from a private
temporary file (atomic on NFS as on local disks) and holding the host, the
process id and when it started. While training, the holder touches it every
``HEARTBEAT_S`` seconds. A lock is stale, and taken over with a line saying
so, when its process is gone (same host) or its heartbeat has stopped
(another host, whose processes cannot be asked). Reading a workdir
(sampling, evaluation, the explorer) takes no lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from vae_jax.errors import WorkdirError

log = logging.getLogger(__name__)

LOCK_FILENAME = "train.lock"
HEARTBEAT_S = 20.0
STALE_AFTER_S = 6 * HEARTBEAT_S  # a heartbeat this old means its holder is gone


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)  # signal 0 only asks whether the process exists
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """Held from ``acquire()`` to ``release()`` (or the ``with`` block) by one training process."""

  def __init__(self, workdir: Path):
    self.path = Path(workdir) / LOCK_FILENAME
    self.holder = {
      "host": socket.gethostname(),
      "pid": os.getpid(),
      "started": time.strftime("%Y-%m-%d %H:%M:%S"),
      "token": uuid.uuid4().hex,
    }
    self._stop = threading.Event()
    self._heartbeat: threading.Thread | None = None

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def acquire(self) -> None:
    """Take the lock, or raise ``WorkdirError`` naming the run that holds it.

    Raises:
      WorkdirError: another live training process holds the workdir.
    """
    for _ in range(3):  # a stale lock taken over by someone else in between: look again
      if self._create():
        self._heartbeat = threading.Thread(target=self._beat, name="workdir-lock", daemon=True)
        self._heartbeat.start()
        return
      held = self._read()
      if held is None:  # vanished or half-written: its holder is between two states
        time.sleep(0.1)
        continue
      stale = self._why_stale(held)
      if not stale:
        raise WorkdirError(
          f"{self.path.parent} is in use by another training run (pid {held.get('pid')} on "
          f"{held.get('host')}, since {held.get('started')}). Wait for it to finish or stop it, "
          "or choose another --workdir."
        )
      self._take_over(held, stale)
    raise WorkdirError(f"Could not take the lock {self.path}: other processes keep taking it.")

  def release(self) -> None:
    self._stop.set()
    if self._heartbeat is not None:
      self._heartbeat.join()
      self._heartbeat = None
    held = self._read()
    if held is not None and held.get("token") == self.holder["token"]:
      with contextlib.suppress(FileNotFoundError):
        self.path.unlink()

  def _create(self) -> bool:
    """Link a complete lock file into place; False if one is there already."""
    tmp = self.path.with_name(f".{LOCK_FILENAME}.{self.holder['token']}")
    tmp.write_text(json.dumps(self.holder))
    try:
      os.link(tmp, self.path)
      return True
    except FileExistsError:
      return False
    finally:
      tmp.unlink()

  def _read(self) -> dict | None:
    try:
      return json.loads(self.path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
      return None

  def _why_stale(self, held: dict) -> str | None:
    if held.get("host") == self.holder["host"]:
      return None if _alive(int(held.get("pid", -1))) else "its process is gone"
    try:
      age = time.time() - self.path.stat().st_mtime
    except FileNotFoundError:
      return "it is gone"
    return f"no heartbeat for {age:.0f} s" if age > STALE_AFTER_S else None

  def _take_over(self, held: dict, why: str) -> None:
    """Move the stale lock aside (atomic: one of several contenders wins) and say so."""
    aside = self.path.with_name(f".{LOCK_FILENAME}.stale.{self.holder['token']}")
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return
    if json.loads(aside.read_text()).get("token") != held.get("token"):
      os.rename(aside, self.path)  # a fresh lock, not the stale one: leave it be
      return
    aside.unlink()
    log.warning(
      "Took over the lock of %s left by pid %s on %s (%s).",
      self.path.parent,
      held.get("pid"),
      held.get("host"),
      why,
    )

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_S):
      with contextlib.suppress(OSError):
        os.utime(self.path)
