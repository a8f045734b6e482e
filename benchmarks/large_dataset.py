#!/usr/bin/env python
"""A dataset larger than it should take memory: ≥ 4 GB of decoded pixels, one epoch, peak RSS.

Writes an N×64×64×3 uint8 ``.npy`` of procedural galaxies (``--gigabytes``,
default 4.3) without ever holding it in memory, then trains one full epoch
over it with the ordinary command line (``bin/train.py``, ``npz:`` source,
read row by row) in a child process, and reports that process's peak
resident set size. For comparison it also streams the same file once
through ``np.load(mmap_mode="r")``, whose touched pages count as resident.
Everything it writes is deleted at the end.

  python benchmarks/large_dataset.py [--gigabytes=4.3] [--dir=/tmp]
"""

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from vae_jax.data.npyfile import create_npy, write_rows
from vae_jax.data.synthetic import SyntheticGalaxies

ROOT = Path(__file__).resolve().parents[1]

_GIGABYTES = flags.DEFINE_float("gigabytes", 4.3, "Size of the decoded dataset (10^9 bytes).")
_DIR = flags.DEFINE_string(
  "dir", tempfile.gettempdir(), "Where to write it (needs that much free space)."
)
_SIZE, _BATCH = 64, 256

_MMAP_PASS = """
import sys, numpy as np
images = np.load(sys.argv[1], mmap_mode="r")
for start in range(0, len(images), 4096):
  np.asarray(images[start:start + 4096]).max()
"""


def peak_rss_gib(cmd: list[str]) -> float:
  """Run ``cmd``; its peak resident set size (``wait4``'s ``getrusage``, that child alone).

  A child's ``ru_maxrss`` starts from its parent's size at fork, so this
  process keeps itself small (the data is written in small chunks).
  """
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  stderr = proc.stderr.read()
  _, status, usage = os.wait4(proc.pid, 0)
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode:
    raise SystemExit(f"{cmd[:3]} failed:\n{stderr.decode()[-3000:]}")
  return usage.ru_maxrss / 2**20  # KiB → GiB


def write_dataset(path: Path, count: int) -> None:
  """``count`` galaxies: 512 rendered ones, each reused with its own brightness and flips."""
  base = np.stack([SyntheticGalaxies(512, _SIZE, seed=1)[i] for i in range(512)]).astype(np.float32)
  offset = create_npy(path, (count, _SIZE, _SIZE, 3), np.uint8)
  rng = np.random.default_rng(0)
  with open(path, "r+b") as f:
    for start in range(0, count, 1024):
      n = min(1024, count - start)
      chunk = base[rng.integers(0, len(base), n)] * rng.uniform(0.6, 1.2, (n, 1, 1, 1)).astype(
        np.float32
      )
      chunk = np.where(rng.random((n, 1, 1, 1)) < 0.5, chunk, chunk[:, :, ::-1])
      write_rows(f.fileno(), offset, start, np.clip(chunk, 0, 255).astype(np.uint8))


def main(argv):
  del argv
  count = int(_GIGABYTES.value * 1e9 / (_SIZE * _SIZE * 3)) + 1
  nbytes = count * _SIZE * _SIZE * 3
  free = shutil.disk_usage(_DIR.value).free
  if free < nbytes * 1.2 + 2e9:
    raise SystemExit(
      f"{_DIR.value} has {free / 1e9:.1f} GB free; this needs {nbytes * 1.2 / 1e9 + 2:.1f} GB."
    )
  work = Path(tempfile.mkdtemp(prefix="vae_jax_large_", dir=_DIR.value))
  try:
    start = time.perf_counter()
    write_dataset(work / "galaxies.npy", count)
    print(
      f"wrote {count} images of {_SIZE}×{_SIZE}×3 = {nbytes / 1e9:.2f} GB in "
      f"{time.perf_counter() - start:.0f} s "
      f"({work / 'galaxies.npy'})",
      flush=True,
    )

    steps = int(count * 0.99) // _BATCH  # one epoch of the training split
    cmd = [
      sys.executable,
      str(ROOT / "bin" / "train.py"),
      f"--config={ROOT / 'configs' / 'faces_mlp.py'}",
      f"--workdir={work / 'run'}",
      f"--config.data.source=npz:{work / 'galaxies.npy'}",
      f"--config.data.image_size={_SIZE}",
      "--config.data.channels=3",
      "--config.data.val_fraction=0.01",
      "--config.model.encoder_hidden=(128, 32)",
      "--config.model.decoder_hidden=(32, 128)",
      f"--config.train.batch_size={_BATCH}",
      f"--config.train.steps={steps}",
      "--config.train.log_every=100",
      f"--config.train.eval_every={steps}",
      f"--config.train.ckpt_every={steps}",
      "--config.train.max_eval_images=1000",
    ]
    start = time.perf_counter()
    train_rss = peak_rss_gib(cmd)
    seconds = time.perf_counter() - start
    print(
      f"trained {steps} steps of {_BATCH} (one epoch, {steps * _BATCH} images, "
      f"{steps * _BATCH * _SIZE * _SIZE * 3 / 1e9:.2f} GB "
      f"read) in {seconds:.0f} s: peak RSS {train_rss:.2f} GiB",
      flush=True,
    )

    mmap_rss = peak_rss_gib([sys.executable, "-c", _MMAP_PASS, str(work / "galaxies.npy")])
    print(f"for comparison, one pass over np.load(mmap_mode='r'): peak RSS {mmap_rss:.2f} GiB")
    print(
      "this process (writing the data): peak RSS "
      f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    )
  finally:
    shutil.rmtree(work, ignore_errors=True)
    print(f"removed {work}")


if __name__ == "__main__":
  app.run(main)
