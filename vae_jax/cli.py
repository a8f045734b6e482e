"""What the ``bin/`` entry points share: logging, flag parsing and error reporting."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from absl import flags
from absl import logging as absl_logging

from vae_jax.config import check_overrides, config_from_file
from vae_jax.errors import VaeJaxError


def setup_logging() -> None:
  """Show vae_jax's own progress messages; keep orbax's (absl's) log to fatal errors.

  vae_jax reports what goes wrong with a checkpoint in one line of its own;
  orbax logs the same failures from each of its threads.
  """
  logger = logging.getLogger("vae_jax")
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False
  absl_logging.set_verbosity(absl_logging.FATAL)


def default_workdir(config_path: str) -> str:
  """runs/<config file name>[_<preset>] for ``configs/galaxy.py:smoke`` → runs/galaxy_smoke."""
  path, _, preset = config_path.partition(":")
  return str(Path("runs") / (Path(path).stem + (f"_{preset}" if preset else "")))


def _check_config_flags(argv: list[str]) -> None:
  """Load ``--config=FILE[:PRESET]`` and check every ``--config.FIELD=`` override names a field.

  Done before absl parses the flags, whose config loader would report these
  mistakes as tracebacks wrapped in other exceptions.
  """
  config_arg = next(
    (a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")),
    None,
  )
  if config_arg is None:
    i = argv.index("--config") if "--config" in argv[1:] else -1
    config_arg = argv[i + 1] if 0 < i < len(argv) - 1 else None
  if config_arg is None:
    return
  path, _, preset = config_arg.partition(":")
  config = config_from_file(path, preset or None)
  names = [a[len("--config.") :].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
  check_overrides(config, names)


def parse_flags_or_explain(argv: list[str]) -> list[str]:
  """absl flag parsing that reports a bad flag, config file or override in one line (exit 2)."""
  try:
    _check_config_flags(argv)
    return flags.FLAGS(argv)
  except (flags.Error, VaeJaxError) as error:
    print(f"error: {error}\nRun with --help to list the flags.", file=sys.stderr)
    sys.exit(2)


def run_or_explain(fn: Callable[[], object]) -> object:
  """Run ``fn``; a ``VaeJaxError`` becomes its one-line message and exit status 1.

  Any other exception is a bug (in vae_jax or a library): its traceback is
  printed, then the same one-line summary, and the exit status is 1.
  """
  try:
    return fn()
  except VaeJaxError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)
  except Exception as error:
    traceback.print_exc()
    print(f"error: {error} (an unexpected error: the traceback above says where)", file=sys.stderr)
    sys.exit(1)
