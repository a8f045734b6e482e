"""What a user can act on: the ``VaeJaxError`` family.

``bin/`` scripts print these as one line and exit with status 1; any other
exception is a bug (in vae_jax or a library) and keeps its traceback. Each
subclass also derives from the built-in exception it refines, so
``except ValueError`` keeps catching a bad config value.
"""

from __future__ import annotations


class VaeJaxError(Exception):
  """An error whose message says what to change; shown to users without a traceback."""


class ConfigError(VaeJaxError, ValueError):
  """A config value (or a command-line option) that cannot be used."""


class DataError(VaeJaxError, ValueError):
  """A data source that is missing, malformed or has no usable image."""


class WorkdirError(VaeJaxError, ValueError):
  """A workdir that cannot be used: a URL, a file, a workdir another run holds."""


class CheckpointError(VaeJaxError):
  """A checkpoint that is missing, damaged or of another model."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
  """A workdir without a usable checkpoint; ``damaged`` lists the damaged ones, with why."""

  def __init__(self, message: str, damaged: list[str] = ()):
    super().__init__(message)
    self.damaged = list(damaged)


class CheckpointMismatchError(CheckpointError, ValueError):
  """A checkpoint (or a workdir's run) that does not fit the model or data the config describes."""


class NonFiniteLossError(VaeJaxError, FloatingPointError):
  """The training loss or its gradient became NaN or infinite."""


class TrainingInterrupted(VaeJaxError):
  """SIGINT (Ctrl-C) or SIGTERM stopped training; a checkpoint of the step reached was saved."""


class WriteError(VaeJaxError, OSError):
  """A file could not be written (full disk, read-only folder); its previous version is intact.

  ``what`` says which file and why, without advice, for a caller that knows
  more of what survived to say it in one line.
  """

  def __init__(self, what: str, advice: str = ""):
    super().__init__(f"{what}; {advice}" if advice else what)
    self.what = what
