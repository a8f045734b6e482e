"""Helpers shared by the ``bin/`` entry points (they only parse flags and call these)."""

from __future__ import annotations

import logging
import sys

from absl import logging as absl_logging
from pathlib import Path
from typing import Callable

from vae_jax.checkpoint import CheckpointMismatchError
from vae_jax.train import NonFiniteLossError

# Errors whose message already tells the user what to do: print it, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotImplementedError, CheckpointMismatchError, NonFiniteLossError)


def setup_logging() -> None:
  """Show vae_jax's own progress messages; leave library chatter (orbax, absl) at warnings."""
  logger = logging.getLogger("vae_jax")
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False
  absl_logging.set_verbosity(absl_logging.WARNING)


def default_workdir(config_path: str) -> str:
  """runs/<config file name>[_<preset>] for ``configs/galaxy.py:smoke`` → runs/galaxy_smoke."""
  path, _, preset = config_path.partition(":")
  return str(Path("runs") / (Path(path).stem + (f"_{preset}" if preset else "")))


def run_or_explain(fn: Callable[[], object]) -> object:
  """Run ``fn``; turn the errors users can act on into a message and exit status 1."""
  try:
    return fn()
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
