"""Helpers shared by the ``bin/`` entry points (they only parse flags and call these)."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from absl import flags
from absl import logging as absl_logging

from vae_jax.train import NonFiniteLossError, TrainingInterrupted

# Errors whose message tells the user what to do, when vae_jax raised them: print it, no traceback.
# (CheckpointMismatchError is a ValueError.)
USER_ERRORS = (
  ValueError,
  FileNotFoundError,
  NotImplementedError,
  NonFiniteLossError,
  TrainingInterrupted,
)
_PACKAGE = Path(__file__).resolve().parent


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


def parse_flags_or_explain(argv: list[str]) -> list[str]:
  """absl flag parsing that reports a bad flag, config file or override in one line, no traceback.

  ml_collections loads ``--config`` lazily and reports an unknown override key
  as an AttributeError; both are forced and caught here, before any work starts.
  """
  try:
    remaining = flags.FLAGS(argv)
    if "config" in flags.FLAGS and flags.FLAGS["config"].present:
      flags.FLAGS.config.get("seed")  # load the config file now
    return remaining
  except (flags.Error, AttributeError, KeyError, OSError, TypeError, ValueError) as e:
    message = str(e).replace("\\n", "\n").replace("\\'", "'").strip("'\"")
    if "Traceback" in message:  # a config file's own error: keep its last line
      message = message.strip().splitlines()[-1]
    print(f"error: {message}\nRun with --help to list the flags.", file=sys.stderr)
    sys.exit(2)


def _raised_by_vae_jax(error: BaseException) -> bool:
  """Whether the innermost frame of ``error``'s traceback is vae_jax's own code (a message written for users)."""
  frames = traceback.extract_tb(error.__traceback__)
  return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(_PACKAGE)


def run_or_explain(fn: Callable[[], object]) -> object:
  """Run ``fn``; turn the errors users can act on into a message and exit status 1.

  The same kinds of error raised inside a library (numpy, JAX, …) are more
  likely a bug than a user's mistake: their traceback is printed too.
  """
  try:
    return fn()
  except USER_ERRORS as e:
    if not _raised_by_vae_jax(e):
      traceback.print_exc()
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
