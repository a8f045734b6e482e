"""Data parallelism over every device: a 1-D mesh, batches split along ``data``, all else copied.

The same code runs on one CPU, on N forced CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``), on a multi-GPU
machine and on a single TPU host: the train step is one ``jax.jit`` program whose
inputs carry shardings, and XLA inserts the gradient all-reduce. The global
batch is ``config.train.batch_size`` whatever the device count, so a run's
numbers do not depend on the hardware it ran on.

Launching: on one machine with several GPUs (or a single TPU host) the usual
command uses every device, e.g. ``python bin/train.py --config
configs/galaxy.py --config.train.batch_size=64`` on 8 GPUs gives each 8
images; ``CUDA_VISIBLE_DEVICES`` chooses the GPUs.

Several hosts run one process each, joined by ``initialize_distributed``
(``bin/train.py --coordinator_address=HOST0:PORT --num_processes=N
--process_id=I`` on each, or ``--distributed`` where JAX finds the cluster
itself: TPU pod slices, SLURM, Open MPI). The mesh then spans every process's
devices; each process reads its own ``1/N`` of the training images
(``vae_jax.data.pipeline.train_iterator``) and contributes its rows of the
global batch (``DevicePrefetch`` with ``batch_sharding``); only process 0 writes logs and pictures,
and orbax writes checkpoints with every process taking part.
"""

from __future__ import annotations

import collections
import logging
import os
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vae_jax.errors import ConfigError

DATA_AXIS = "data"

log = logging.getLogger(__name__)


DETERMINISTIC_GPU_FLAG = "--xla_gpu_deterministic_ops=true"


def request_deterministic_gpu_kernels(enabled: bool = True) -> None:
  """Ask XLA for bit-reproducible GPU kernels (``XLA_FLAGS``); call before JAX starts its backend.

  ``bin/train.py`` does, unless ``config.train.deterministic`` is False:
  with XLA's default GPU kernels a killed and resumed run ends with other
  parameters than an unbroken one, and the flag given to the train step
  alone did not make the runs match, so it is set for the whole process
  (the cost in speed is in BENCHMARKS.md). A flag for
  ``xla_gpu_deterministic_ops`` already in ``XLA_FLAGS`` is left as it is;
  CPUs ignore it.
  """
  if enabled and not _deterministic_ops_flag_set():
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {DETERMINISTIC_GPU_FLAG}".strip()


def _deterministic_ops_flag_set() -> bool:
  """Whether ``XLA_FLAGS`` sets ``xla_gpu_deterministic_ops`` (ours, or the user's choice)."""
  return "xla_gpu_deterministic_ops" in os.environ.get("XLA_FLAGS", "")


def warn_unless_deterministic_gpu_kernels(enabled: bool = True) -> None:
  """Warn when a GPU run meant to be reproducible started without deterministic kernels.

  The case of ``vae_jax.train.train_and_evaluate`` called from a user's own
  Python: only ``bin/train.py`` sets the flag itself.
  """
  if enabled and jax.default_backend() == "gpu" and not _deterministic_ops_flag_set():
    log.warning(
      "XLA's default GPU kernels are not bit-reproducible: a resumed run will not end where an "
      "unbroken one "
      "does. Call vae_jax.parallel.request_deterministic_gpu_kernels() before anything touches "
      "JAX (bin/train.py "
      "does), or set --config.train.deterministic=False to accept that."
    )


def initialize_distributed(
  coordinator_address: str = "", num_processes: int = 1, process_id: int = 0, auto: bool = False
) -> None:
  """Join a multi-process run; call before anything else touches JAX. Does nothing for one process.

  Args:
    coordinator_address: ``host:port`` of process 0 (it listens there).
    num_processes: how many processes train together.
    process_id: this process's index, 0 … num_processes - 1.
    auto: let ``jax.distributed.initialize`` detect the cluster (TPU pod
      slice, SLURM, Open MPI) instead of the three explicit values.
  """
  if not auto and num_processes <= 1:
    return
  if not auto and not coordinator_address:
    raise ConfigError(
      "Several processes need --coordinator_address=HOST:PORT (process 0's address)."
    )
  # Processes that compute on CPUs exchange gradients through gloo (JAX's CPU collectives).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if auto:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis ``data`` over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_batch_size(batch_size: int, num_devices: int) -> None:
  """Raise unless the global batch splits evenly over ``num_devices`` (``mesh.devices.size``)."""
  n = num_devices
  if batch_size < 1:
    raise ConfigError(f"config.train.batch_size must be at least 1; got {batch_size}.")
  if batch_size % n:
    raise ConfigError(
      f"config.train.batch_size={batch_size} does not split over {n} devices; "
      f"use a multiple of {n} (e.g. --config.train.batch_size={max(n, batch_size // n * n)})."
    )


def batch_sharding(mesh: Mesh, stacked: bool = False) -> NamedSharding:
  """The batch axis (leading, or second of k stacked batches) split over ``data``; others whole."""
  return NamedSharding(
    mesh, PartitionSpec(None, DATA_AXIS) if stacked else PartitionSpec(DATA_AXIS)
  )


class DispatchWindow:
  """At most ``size`` dispatched programs pending (None: no limit); beyond, the host waits.

  JAX dispatches asynchronously, so a loop of train steps runs ahead of the
  devices until something reads a result (fit reads metrics every
  ``log_every`` steps). Build it with ``dispatch_window(mesh)``.
  """

  def __init__(self, size: int | None):
    self._size = size
    self._pending: collections.deque = collections.deque()

  def add(self, result: Any) -> None:
    """Record one dispatched program's output; wait for the oldest beyond ``size``."""
    if self._size is None:
      return
    self._pending.append(result)
    if len(self._pending) > self._size:
      jax.block_until_ready(self._pending.popleft())


def dispatch_window(mesh: Mesh) -> DispatchWindow:
  """16 steps ahead at most where a process drives several CPU devices; unlimited elsewhere.

  XLA's CPU client admits 32 pending executions per device; with several
  CPU devices in one process (``--xla_force_host_platform_device_count=N``)
  going past that deadlocks the train step's collective. Elsewhere the host
  is left to run ahead as far as JAX lets it.
  """
  several_cpus = len(mesh.local_devices) > 1 and mesh.local_devices[0].platform == "cpu"
  return DispatchWindow(16 if several_cpus else None)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Every leaf of ``tree`` (parameters, optimiser state, keys) on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


class DevicePrefetch(grain.DatasetIterator):
  """Keeps the next ``size`` batches already on the accelerator.

  Host→device copies then overlap the train step instead of preceding it.
  The saved state is that of the underlying iterator *before* the oldest
  batch still waiting here, so batches fetched but not yet consumed are
  fetched again after a restore: resume stays exact.
  """

  def __init__(self, parent: grain.DatasetIterator, size: int = 2, sharding: Any = None):
    super().__init__(parent)
    self._iterator, self._size, self._sharding = parent, size, sharding
    self._buffer: collections.deque = collections.deque()

  def _put(self, batch: np.ndarray) -> Any:
    if self._sharding is None:
      return jax.device_put(batch)
    return jax.make_array_from_process_local_data(self._sharding, batch)

  def __next__(self) -> Any:
    while len(self._buffer) <= self._size:
      state = self._iterator.get_state()
      self._buffer.append((state, self._put(next(self._iterator))))
    return self._buffer.popleft()[1]

  def get_state(self) -> dict:
    return self._buffer[0][0] if self._buffer else self._iterator.get_state()

  def set_state(self, state: dict) -> None:
    self._buffer.clear()
    self._iterator.set_state(state)
