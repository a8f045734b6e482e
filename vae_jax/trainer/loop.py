"""The training loop every task shares: ``fit(config, workdir, task)``.

Data, resume, steps, logs, evaluation, grids and checkpoints are the same
for every model; a ``Task`` supplies what differs (its loss, its
parameters' initialisation and groups, its held-out evaluation and
pictures). Nothing here knows what a VAE is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grain
import jax
import ml_collections
import numpy as np

from vae_jax import files, parallel
from vae_jax.checkpoint import has_checkpoint, saved_steps
from vae_jax.config import load_config, resolve, save_config, workdir_path
from vae_jax.data.dataset import Dataset, build_dataset, load_images
from vae_jax.data.pipeline import (
  DeviceBatches,
  StackedBatches,
  check_batch_size,
  train_iterator,
)
from vae_jax.errors import NonFiniteLossError, TrainingInterrupted, WorkdirError, WriteError
from vae_jax.rng import split_root_key
from vae_jax.trainer.checkpointer import Checkpointer, check_resumable
from vae_jax.trainer.lock import WorkdirLock
from vae_jax.trainer.runlog import RunLog, due
from vae_jax.trainer.state import (
  LossFn,
  ParamGroups,
  TrainState,
  create_train_state,
  make_optimizer,
  make_train_step,
  params_to_evaluate,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Task:
  """What one kind of model brings to ``fit``.

  Attributes:
    init_params: ``key -> params`` of a fresh model (traced once, inside ``jit``).
    loss: ``(params, batch_uint8, key, step, constants) -> (loss, metrics)``;
      ``metrics`` hold at least ``loss`` and ``psnr_db``.
    evaluate: ``params -> dict`` of held-out metrics, logged as split ``val``.
    grids: ``params -> {name: uint8 H×W×3 picture}``, drawn with fixed keys.
    summary: one log line from ``evaluate``'s result.
    divergence_hint: what to change when the loss stops being finite.
    param_groups: how the model's parameters group for the optimiser.
    constants: passed to every step (e.g. a frozen network's parameters);
      copied to every device with the train state.
    after_checkpoint: ``(params, step, workdir) -> None``, called on every
      process after each checkpoint, for what a task keeps beside it (the
      VAE's sampler); only process 0 should write.
  """

  init_params: Callable[[jax.Array], Any]
  loss: LossFn
  evaluate: Callable[[Any], dict]
  grids: Callable[[Any], dict[str, np.ndarray]]
  summary: Callable[[dict], str]
  divergence_hint: str
  param_groups: ParamGroups = dataclasses.field(default_factory=ParamGroups)
  constants: Any = None
  after_checkpoint: Callable[[Any, int, Path], None] | None = None


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A registered task: how to build its ``Task``, and the config fields a resume must keep.

  ``build(config, dataset, keys, val_images) -> Task``; ``keys`` come from
  ``vae_jax.rng.split_root_key``.
  """

  build: Callable[[ml_collections.ConfigDict, Dataset, dict[str, jax.Array], np.ndarray], Task]
  resume_fields: tuple[str, ...] = ()


class _StopSignals:
  """Notes SIGINT/SIGTERM during training so that the loop can stop between two steps.

  A signal may arrive anywhere, e.g. after the data iterator has handed out
  a batch but before the step that uses it ran; acting on it only between
  steps keeps the saved parameters and data position in step, so the
  resumed run still ends with exactly the parameters of an unbroken one. A
  second Ctrl-C interrupts at once. With several processes the signals are
  left as they are: every process takes part in a save, and only one of
  them may have been signalled.
  """

  def __init__(self):
    self.received: str | None = None
    self._previous = {}

  def __enter__(self) -> _StopSignals:
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = {
        sig: signal.signal(sig, self._note) for sig in (signal.SIGINT, signal.SIGTERM)
      }
    return self

  def _note(self, signum, frame) -> None:
    del frame
    self.received = signal.Signals(signum).name
    signal.signal(signal.SIGINT, self._previous[signal.SIGINT])

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _check_workdir(config: ml_collections.ConfigDict, workdir: Path, spec: TaskSpec) -> None:
  """Refuse a workdir whose checkpointed run this config cannot resume."""
  # A workdir without a checkpoint has nothing to resume (a start stopped before its first
  # checkpoint leaves at most its config.json): it is started again with the new config.
  if (workdir / "config.json").exists() and has_checkpoint(workdir / "checkpoints"):
    check_resumable(load_config(workdir), config, workdir, spec.resume_fields)


def _what_survived(workdir: Path) -> str:
  steps = saved_steps(workdir / "checkpoints")
  if not steps:
    return "no checkpoint had been written yet."
  return f"checkpoint {steps[0]} in {workdir / 'checkpoints'} is intact."


def fit(config: ml_collections.ConfigDict, workdir: str | Path, spec: TaskSpec) -> TrainState:
  """Train what ``spec`` builds from ``config`` in ``workdir``, resuming from its latest checkpoint.

  The workdir receives ``config.json``, ``checkpoints/``, ``metrics.jsonl``,
  ``tensorboard/`` event files and ``samples/training/*.png`` grids.

  Returns:
    The final train state.

  Raises:
    ConfigError: a config value that cannot be used (checked before anything is written).
    NonFiniteLossError: the loss or the gradient became NaN/inf; the last good checkpoint stays.
    CheckpointMismatchError: the workdir belongs to a different model, split or task.
    TrainingInterrupted: SIGINT/SIGTERM (one process); the step reached was saved first.
  """
  config = resolve(config)
  workdir = workdir_path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f"--workdir {workdir} is a file, not a directory; choose another --workdir.")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise WriteError(files.cannot_write(workdir, error), files.FIX) from None
  # One training process per workdir; the processes of one multi-host job share process 0's lock.
  lock = WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with lock:
    _check_workdir(config, workdir, spec)
    try:
      return _train(config, workdir, spec)
    except WriteError as error:  # a full disk or a read-only folder: say what is safe
      raise WriteError(error.what, f"{_what_survived(workdir)} {files.FIX}") from None


def _training_batches(
  config: ml_collections.ConfigDict, dataset: Dataset, mesh: Any
) -> grain.DatasetIterator:
  """The training batches, on the devices: gathered there from the whole split where it fits.

  One process whose split takes at most ``config.data.on_device_mb`` holds
  it on the device(s) (``DeviceBatches``); otherwise the grain pipeline reads
  and copies each batch. Both give the same batches and the same state.
  """
  train_cfg, per_dispatch = config.train, config.train.steps_per_dispatch
  sharding = parallel.batch_sharding(mesh, stacked=per_dispatch > 1)
  size = len(dataset.train_indices) * math.prod(dataset.image_shape)
  if jax.process_count() == 1 and size <= config.data.on_device_mb * 2**20:
    check_batch_size(train_cfg.batch_size, len(dataset.train_indices))
    images = load_images(dataset.train, dataset.preprocess, desc="training images to the device")
    log.info("The %d training images (%.0f MB) are held on the device.", len(images), size / 2**20)
    return DeviceBatches(
      parallel.replicate(images, mesh), train_cfg.batch_size, config.seed, per_dispatch, sharding
    )
  batches = train_iterator(
    dataset,
    train_cfg.batch_size,
    config.seed,
    config.data.worker_count,
    shard=(jax.process_index(), jax.process_count()),
  )
  if per_dispatch > 1:
    batches = StackedBatches(batches, per_dispatch)
  return parallel.DevicePrefetch(batches, sharding=sharding)


def _train(config: ml_collections.ConfigDict, workdir: Path, spec: TaskSpec) -> TrainState:
  """``fit`` once the workdir is locked and checked."""
  train_cfg = config.train
  mesh = parallel.make_mesh()
  parallel.check_batch_size(train_cfg.batch_size, mesh.devices.size)
  parallel.warn_unless_deterministic_gpu_kernels(train_cfg.deterministic)
  dataset = build_dataset(config, workdir)
  keys = split_root_key(config.seed)
  total, per_dispatch = train_cfg.steps, train_cfg.steps_per_dispatch
  val_images = load_images(
    dataset.val, dataset.preprocess, train_cfg.max_eval_images, desc="validation images"
  )
  task = spec.build(config, dataset, keys, val_images)
  tx = make_optimizer(config.opt, total, task.param_groups)
  # Replicated over the mesh first, so a checkpoint is restored straight into that sharding (with
  # several processes, each reads its own copy; moving a restored local array would need cross-host
  # copies).
  state = parallel.replicate(
    create_train_state(task.init_params, tx, keys["init"], keep_ema=train_cfg.ema_decay > 0), mesh
  )
  constants = parallel.replicate(jax.device_get(task.constants), mesh)
  train_step = make_train_step(task.loss, train_cfg.ema_decay, per_dispatch)
  # Only now that the config has built a dataset and a model: a resume that fails on a bad value
  # (a misspelt data source, say) must not replace the config.json the run is read back with.
  if jax.process_index() == 0:
    save_config(config, workdir)
  data_iter = _training_batches(config, dataset, mesh)

  ckpt = Checkpointer(workdir / "checkpoints", keep=train_cfg.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state, data_iter)
    log.info("Resumed from step %d in %s.", int(state.step), ckpt.directory)
  start = int(state.step)
  if start % per_dispatch:
    raise WorkdirError(
      f"The checkpoint is at step {start}, not a multiple of config.train.steps_per_dispatch="
      f"{per_dispatch}; resume with a steps_per_dispatch that divides it."
    )
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  log.info(
    "%s %s: %d parameters; %d train / %d val images of %s from %s; %d %s device(s).",
    config.task,
    config.model.name,
    n_params,
    len(dataset.train_indices),
    len(dataset.val_indices),
    dataset.image_shape,
    config.data.source,
    mesh.devices.size,
    jax.devices()[0].platform,
  )

  def evaluate(step: int) -> None:
    if len(val_images):
      params = params_to_evaluate(state)
      result = task.evaluate(params)
      run_log.scalars(step, "val", result)
      averaged = " (moving average)" if state.ema_params is not None else ""
      log.info("step %d val%s: %s", step, averaged, task.summary(result))
      run_log.grids(step, task.grids(params))

  def check_finite(metrics: dict, step: int) -> dict:
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    # The gradient too: a finite loss with a non-finite gradient has already made the new parameters
    # NaN.
    bad = [k for k in ("loss", "grad_norm") if k in values and not math.isfinite(values[k])]
    if bad:
      last = ckpt.latest_step()
      raise NonFiniteLossError(
        f"The {' and '.join(k.replace('_', ' ') for k in bad)} became "
        f"{' and '.join(str(values[k]) for k in bad)} at step {step}. "
        + (
          f"The last good checkpoint (step {last}) in {ckpt.directory} is intact. "
          if last is not None
          else ""
        )
        + task.divergence_hint
      )
    return values

  def save(step: int) -> None:
    check_finite(metrics, step)
    # Every record up to this step is written before the checkpoint exists: a run killed after it
    # resumes with the logs an uninterrupted run has.
    run_log.flush()
    ckpt.save(step, state, data_iter)
    if task.after_checkpoint is not None:
      task.after_checkpoint(params_to_evaluate(state), step, workdir)

  run_log = RunLog(workdir, start, total)
  t_last, step_last, announced = time.perf_counter(), start, False
  window = parallel.dispatch_window(mesh)
  try:
    with _StopSignals() as stop:
      for step in range(start, total, per_dispatch):
        state, metrics = train_step(state, next(data_iter), keys["train"], constants)
        window.add(metrics)
        done = step + per_dispatch
        run_log.progress(per_dispatch)
        if due(done, train_cfg.log_every, total):
          values = check_finite(metrics, done)
          now = time.perf_counter()
          values["images_per_s"] = (done - step_last) * train_cfg.batch_size / (now - t_last)
          t_last, step_last = now, done
          run_log.scalars(done, "train", values)
          run_log.progress(
            0,
            loss=f"{values['loss']:.4g}",
            psnr=f"{values['psnr_db']:.1f}",
            img_s=f"{values['images_per_s']:.0f}",
          )
          if not announced and done - start > train_cfg.log_every:
            remaining = (total - done) * train_cfg.batch_size / values["images_per_s"]
            log.info(
              "%s: %.1f images/s; about %.1f min left for %d steps.",
              jax.devices()[0].platform,
              values["images_per_s"],
              remaining / 60,
              total - done,
            )
            announced = True
        evaluating, saving = (
          due(done, train_cfg.eval_every, total),
          due(done, train_cfg.ckpt_every, total),
        )
        if evaluating:
          evaluate(done)
        if saving:
          save(done)
        if evaluating or saving:
          # Keep evaluation and saving out of the images/s figure.
          jax.block_until_ready(state.params)
          t_last, step_last = time.perf_counter(), done
        if stop.received and done < total:
          if not saving:
            save(done)
          raise TrainingInterrupted(
            f"Stopped by {stop.received} at step {done} of {total}; its checkpoint is in "
            f"{ckpt.directory}. Re-run the same command to resume."
          )
  except BaseException:
    with contextlib.suppress(Exception):  # the error in flight is the one to report
      run_log.close()
    with contextlib.suppress(Exception):  # the error in flight is the one to report
      ckpt.wait()
    ckpt.close()
    raise
  run_log.close()
  ckpt.wait()
  ckpt.close()
  return state
