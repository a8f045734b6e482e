#!/usr/bin/env python
"""Train a VAE or a colouriser: python bin/train.py --config configs/galaxy.py [--workdir DIR].

Re-running the same command resumes from the workdir's latest checkpoint; Ctrl-C saves one first.
Any config field can be overridden with --config.GROUP.FIELD=VALUE.

Every local device (GPUs, TPU cores, forced CPU devices) trains data-parallel.
Several hosts: start one process per host with --coordinator_address=HOST0:PORT
--num_processes=N --process_id=I (or --distributed on a TPU pod slice / SLURM).
"""

from absl import app, flags
from ml_collections import config_flags

from vae_jax.cli import default_workdir, parse_flags_or_explain, run_or_explain, setup_logging
from vae_jax.config import resolve
from vae_jax.parallel import initialize_distributed, request_deterministic_gpu_kernels
from vae_jax.tasks import train

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Config file, e.g. configs/faces_mlp.py or configs/galaxy.py:smoke.",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  "workdir",
  None,
  "Run directory (default: runs/<config name>, or runs/<config name>_<preset> with a preset).",
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", "", "Several processes: host:port of process 0."
)
_NUM_PROCESSES = flags.DEFINE_integer(
  "num_processes", 1, "Several processes: how many train together."
)
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "Several processes: this one's index, 0 … N-1.")
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed", False, "Several processes, found by JAX itself (TPU pod slice, SLURM, Open MPI)."
)


def main(argv):
  del argv
  setup_logging()
  workdir = _WORKDIR.value or default_workdir(
    config_flags.get_config_filename(flags.FLAGS["config"])
  )

  def run():
    config = resolve(_CONFIG.value)
    request_deterministic_gpu_kernels(config.train.deterministic)
    initialize_distributed(
      _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, auto=_DISTRIBUTED.value
    )
    return train(config, workdir)

  run_or_explain(run)
  print(f"Done. Pictures in {workdir}/samples, curves: tensorboard --logdir {workdir}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=parse_flags_or_explain)
