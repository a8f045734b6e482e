"""Data parallelism over every device: a 1-D mesh, batches split along ``data``, everything else replicated.

The same code runs on one CPU, on N forced CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``), on a multi-GPU
machine and on a single TPU host: the train step is one ``jax.jit`` program whose
inputs carry shardings, and XLA inserts the gradient all-reduce. The global
batch is ``config.train.batch_size`` whatever the device count, so a run's
numbers do not depend on the hardware it ran on.

Launching: on one machine with several GPUs (or a single TPU host) the usual
command uses every device, e.g. ``python bin/train.py --config
configs/galaxy.py --config.train.batch_size=64`` on 8 GPUs gives each 8
images; ``CUDA_VISIBLE_DEVICES`` chooses the GPUs. Several hosts (a TPU pod
slice, a GPU cluster) are not wired up yet: that needs
``jax.distributed.initialize``, a data shard per process and
``jax.make_array_from_process_local_data``; ``shard_batch`` refuses to run
in more than one process until then.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis ``data`` over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_batch_size(batch_size: int, num_devices: int) -> None:
  """Raise unless the global batch splits evenly over ``num_devices`` (a mesh's ``devices.size``)."""
  n = num_devices
  if batch_size % n:
    raise ValueError(
        f"config.train.batch_size={batch_size} does not split over {n} devices; "
        f"use a multiple of {n} (e.g. --config.train.batch_size={max(n, batch_size // n * n)})."
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``data``; other axes whole."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Every leaf of ``tree`` (parameters, optimiser state, keys) copied to every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def shard_batch(batch: np.ndarray, mesh: Mesh) -> jax.Array:
  """The global batch → one array split along ``data`` over the mesh (one process)."""
  if jax.process_count() > 1:
    raise NotImplementedError(
        "Training over several processes (jax.distributed) is not supported yet: every process would need "
        "its own shard of the data. Run one process per machine over its local devices."
    )
  return jax.device_put(batch, batch_sharding(mesh))
