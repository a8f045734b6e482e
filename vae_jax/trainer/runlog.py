"""The run's record: ``metrics.jsonl``, TensorBoard events, training grids and the progress bar.

Written by process 0 only, from one background thread, in order, so that
the next steps start while pictures are encoded and files written; the
trainer ``flush``es it before each checkpoint. On resume, records after the
restored step are dropped from ``metrics.jsonl`` (and TensorBoard purges its
events after it), so the logs of a resumed run equal an uninterrupted run's.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
from pathlib import Path

import jax
import numpy as np
import tqdm
from tensorboardX import SummaryWriter
from tensorboardX.proto.summary_pb2 import Summary

from vae_jax import files, images
from vae_jax.errors import WriteError

METRICS_FILENAME = "metrics.jsonl"


def due(step: int, every: int, total: int) -> bool:
  """Whether ``step`` (counted from 1) is one of a cadence's: every ``every``-th, and the last."""
  return step % every == 0 or step == total


def drop_records_after(path: Path, step: int) -> None:
  """Keep only the records of ``metrics.jsonl`` up to ``step`` (an incomplete last line goes)."""
  if not path.exists():
    return
  kept = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:  # a line cut by a kill mid-write
      continue
    if record.get("step", 0) <= step:
      kept.append(line)
  files.write_text(path, "".join(line + "\n" for line in kept))


class RunLog:
  """``metrics.jsonl``, TensorBoard events, grids under ``samples/training/`` and a progress bar."""

  def __init__(self, workdir: Path, start: int, total: int):
    self.enabled = jax.process_index() == 0
    self.workdir = workdir
    self.bar = tqdm.tqdm(
      total=total,
      initial=start,
      desc="train",
      unit="step",
      dynamic_ncols=True,
      disable=not self.enabled,
    )
    self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="runlog")
    self._pending: list[concurrent.futures.Future] = []
    if self.enabled:
      path = workdir / METRICS_FILENAME
      drop_records_after(path, start)
      try:
        self.jsonl = open(path, "a")  # noqa: SIM115 (open for the run's whole length)
        self.tb = SummaryWriter(
          str(workdir / "tensorboard"), purge_step=start + 1 if start else None
        )
      except OSError as error:
        raise WriteError(files.cannot_write(workdir, error)) from None

  def _submit(self, fn, *args) -> None:
    """Run ``fn(*args)`` on the writer thread; raise what an earlier write raised."""
    waiting = []
    for future in self._pending:
      if future.done():
        future.result()  # raises the error of a failed write
      else:
        waiting.append(future)
    self._pending = [*waiting, self._writer.submit(fn, *args)]

  def flush(self) -> None:
    """Wait until everything logged so far is written (raising a write's error)."""
    for future in self._pending:
      future.result()
    self._pending = []

  def scalars(self, step: int, split: str, metrics: dict) -> None:
    if self.enabled:
      self._submit(self._write_scalars, step, split, metrics)

  def _write_scalars(self, step: int, split: str, metrics: dict) -> None:
    record = {"step": step, "split": split, **metrics}
    try:
      self.jsonl.write(json.dumps(record) + "\n")
      self.jsonl.flush()
    except OSError as error:
      raise WriteError(files.cannot_write(self.jsonl.name, error)) from None
    for k, v in metrics.items():
      if isinstance(v, (int, float)) and math.isfinite(v):
        self.tb.add_scalar(f"{split}/{k}", v, step)

  def progress(self, steps: int, **postfix: str) -> None:
    self.bar.update(steps)
    if postfix:
      self.bar.set_postfix(postfix)

  def grids(self, step: int, grids: dict[str, np.ndarray]) -> None:
    """Each grid to ``samples/training/<name>_<step>.png`` and ``<name>.png``, and TensorBoard."""
    if self.enabled:
      self._submit(self._write_grids, step, grids)

  def _write_grids(self, step: int, grids: dict[str, np.ndarray]) -> None:
    samples_dir = self.workdir / "samples" / "training"
    for name, grid in grids.items():
      # Encoded once, at zlib's fastest level, for both files and TensorBoard: a 256×256 model's
      # grids are megapixels, and encoding them twice at the default level is seconds of every
      # evaluation.
      png = images.encode_png(grid, fast=True)
      for path in (samples_dir / f"{name}_{step:06d}.png", samples_dir / f"{name}.png"):
        files.write_bytes(path, png)
      image = Summary.Image(
        height=grid.shape[0],
        width=grid.shape[1],
        colorspace=grid.shape[2],
        encoded_image_string=png,
      )
      self.tb.file_writer.add_summary(Summary(value=[Summary.Value(tag=name, image=image)]), step)
    self.tb.flush()

  def close(self) -> None:
    """Write what is pending and close the files (raising a write's error)."""
    self.bar.close()
    try:
      self.flush()
    finally:
      self._writer.shutdown(wait=True)
      if self.enabled:
        self.jsonl.close()
        self.tb.close()
