"""Configs: today's defaults, presets, and the one place a config is migrated and validated.

Config files in ``configs/`` start from ``base_config()`` (or
``base_config("colorizer")``) and override what differs, so every run has the
same groups: ``data``, ``model``, ``loss``, ``opt``, ``train`` and ``seed``.

Every command resolves its config once, at its start (``resolve``): the
values given are laid over today's defaults for their task (so a
``config.json`` written by an earlier vae_jax, without the fields added
since, still opens), then every field is checked. After that the code reads
plain attributes; a field's default lives here and nowhere else.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections

from vae_jax import files, models
from vae_jax.errors import ConfigError, WorkdirError
from vae_jax.losses import LIKELIHOODS

CONFIG_FILENAME = "config.json"
TASKS = ("vae", "colorizer")
COMPUTE_DTYPES = ("float32", "bfloat16")
SOURCE_FORMS = ("synthetic:faces", "synthetic:galaxies", "folder:PATH", "npz:PATH", "tfds:NAME")

# Fields a config saved before they existed must read as the value the code used then, where that
# differs from today's default: images were enlarged without limit before max_upscale existed.
_LEGACY_VALUES = {("data", "max_upscale"): 0.0}
# Optional fields of one model, by config.model.name (the other model fields are required).
_MODEL_DEFAULTS = {"fcn": {"mix": 0, "up_neighbourhoods": ()}}


def base_config(task: str = "vae") -> ml_collections.ConfigDict:
  """Today's defaults for ``task``; model fields beyond these are filled in by each config file."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = task  # which trainer bin/train.py runs: vae | colorizer

  c.data = ml_collections.ConfigDict()
  c.data.source = (
    "synthetic:faces"  # synthetic:faces|synthetic:galaxies|folder:PATH|npz:PATH|tfds:NAME
  )
  c.data.image_size = 30
  c.data.channels = 1
  c.data.crop = "center"  # "center": largest centred square; "none": squash to square
  c.data.crop_size = 0  # >0: centre crop of this many pixels first (native resolution)
  c.data.val_fraction = 0.1
  c.data.hflip = False  # random horizontal flips of training batches
  c.data.max_shift = 0.0  # random translations of training batches by up to this many pixels
  c.data.max_rotation = 0.0  # … rotations by up to this many degrees
  c.data.max_zoom = 0.0  # … zooms by up to this fraction
  c.data.worker_count = 0  # grain worker processes (0: threads in this process)
  # Hold the training split on the device when its preprocessed images take at most this many MB
  # (one process; 0: never): batches are gathered there, the same ones the host pipeline reads.
  c.data.on_device_mb = 1024
  c.data.cache = True  # decode folders/TFDS/resized arrays once into cache_dir
  c.data.cache_dir = ""  # "": $VAE_JAX_CACHE_DIR or ~/.cache/vae_jax
  c.data.decode_workers = 0  # threads decoding into the cache (0: one per core)
  c.data.max_upscale = 4.0  # skip images that would be enlarged more than this (0: no limit)
  c.data.max_image_pixels = 0  # skip larger images (decompression bombs); 0: PIL's limit
  c.data.tfds_data_dir = ""  # for tfds:NAME; "": ~/tensorflow_datasets
  c.data.tfds_split = "train"
  c.data.tfds_image_key = "image"
  c.data.synthetic = ml_collections.ConfigDict({"num_images": 4000, "image_size": 64, "seed": 0})

  c.model = ml_collections.ConfigDict()
  c.loss = ml_collections.ConfigDict()
  if task == "colorizer":
    c.data.channels = 3  # the RGB targets; the grey inputs are derived from them in the train step
    c.model.name = "conv"  # conv | stacknn (the reference, ~90 M parameters)
    c.model.features = (16, 32, 64)  # conv: channels per U-Net level, full resolution first
    c.loss.luminance_weight = 1.0  # × MSE(0.30 R + 0.59 G + 0.11 B, grey input)
    c.colorizer = ml_collections.ConfigDict()
    c.colorizer.vae_workdir = ""  # a grey VAE run: train on its reconstructions of the grey images
    c.colorizer.input_noise = 0.02  # σ of the Gaussian noise on the grey input ([0, 1] scale)
  else:
    c.model.name = "mlp"
    c.model.latent_dim = 10
    c.model.output_activation = "sigmoid"
    c.model.learned_prior = False  # learn the prior's mean and scale (vae_jax/models/vae.py)
    # gaussian | gaussian_learned | gaussian_per_pixel | logistic | bernoulli (vae_jax/losses.py)
    c.loss.likelihood = "gaussian"
    c.loss.scale = 0.1  # σ on the [0, 1] scale: fixed, or where a learned one starts
    c.loss.min_scale = 1.0 / 255.0  # floor of a per-pixel scale (gaussian_per_pixel, logistic)
    c.loss.beta = 1.0
    c.loss.warmup_steps = 0  # linear KL warm-up from 0 to beta
    c.loss.free_bits = 0.0  # nats per latent dimension

  c.opt = ml_collections.ConfigDict()
  c.opt.learning_rate = 1e-3
  c.opt.warmup_steps = 100
  c.opt.schedule = "cosine"  # cosine | constant
  c.opt.weight_decay = 0.0
  c.opt.grad_clip = 100.0
  c.opt.prior_learning_rate = (
    1e-2  # plain Adam for the parameters a model puts in its "prior" group
  )

  c.train = ml_collections.ConfigDict()
  c.train.steps = 2000
  c.train.batch_size = 100
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.ckpt_every = 500
  c.train.keep_checkpoints = 3
  c.train.eval_batch_size = 256
  c.train.max_eval_images = 2000
  c.train.num_grid_images = 16
  c.train.steps_per_dispatch = (
    1  # >1: that many steps per jitted call (lax.scan); must divide the *_every
  )
  c.train.ema_decay = 0.0  # >0: keep a moving average of the parameters; the run is judged by it
  c.train.compute_dtype = (
    "float32"  # float32 | bfloat16 (bf16 activations; float32 parameters and loss)
  )
  c.train.deterministic = (
    True  # bin/train.py on a GPU: bit-reproducible kernels (exact resume), slower
  )
  return c


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrink a config to seconds: few images, few steps, tiny batches (used by tests)."""
  config.data.synthetic.num_images = 48
  config.data.val_fraction = 0.25
  config.train.steps = 6
  config.train.batch_size = 8
  config.train.log_every = 2
  config.train.eval_every = 3
  config.train.ckpt_every = 3
  config.train.eval_batch_size = 16
  config.train.num_grid_images = 4
  config.train.steps_per_dispatch = 1  # must divide the cadences above
  config.opt.warmup_steps = 2
  return config


def with_preset(
  config: ml_collections.ConfigDict,
  arg: str | None,
  presets: dict[str, Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]],
) -> ml_collections.ConfigDict:
  """Apply the preset named by the ``:arg`` suffix of ``--config=file.py:arg``."""
  if not arg:
    return config
  if arg not in presets:
    raise ConfigError(f"Unknown preset {arg!r}; this config has {sorted(presets)}.")
  return presets[arg](config)


def workdir_path(workdir: str | Path) -> Path:
  """``workdir`` as a filesystem path (``~`` expanded); a URL (``gs://…``) is refused with advice.

  A run writes its workdir through the filesystem, and ``Path("gs://b/x")``
  silently becomes the local directory ``gs:/b/x``. On several hosts the
  workdir must be a directory every host sees (NFS, or a bucket mounted
  with gcsfuse).
  """
  if "://" in str(workdir):
    raise WorkdirError(
      f"--workdir {workdir} is a URL; vae_jax writes runs to a filesystem path. On several hosts, "
      "use a directory every host sees (NFS, or the bucket mounted with gcsfuse)."
    )
  return Path(workdir).expanduser()


def config_from_file(path: str | Path, preset: str | None = None) -> ml_collections.ConfigDict:
  """``get_config(preset)`` of a config file such as ``configs/galaxy.py``, without absl's flags.

  Raises:
    ConfigError: the file is missing, or fails to run (its error's last line is kept).
  """
  path = Path(path).expanduser()
  if not path.is_file():
    raise ConfigError(f"Config file {path} does not exist; configs/ holds the shipped ones.")
  spec = importlib.util.spec_from_file_location(f"configs.{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    get_config = module.get_config
  except Exception as error:  # the config file is the user's code: report what it raised
    raise ConfigError(f"Config file {path} failed: {type(error).__name__}: {error}") from None
  if preset is None:
    return get_config()
  return get_config(preset)


def check_overrides(config: ml_collections.ConfigDict, names: list[str]) -> None:
  """Refuse ``--config.NAME=…`` overrides that name no field, with the nearest field as a hint."""
  fields = sorted(_flatten(config.to_dict()))
  for name in names:
    if name not in fields and not any(f.startswith(name + ".") for f in fields):
      near = difflib.get_close_matches(name, fields, n=1)
      hint = f"; did you mean config.{near[0]}?" if near else ""
      raise ConfigError(f"config.{name} is not a field of this config{hint}")


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def _deep_update(base: dict, values: dict) -> dict:
  for key, value in values.items():
    if isinstance(value, dict) and isinstance(base.get(key), dict):
      _deep_update(base[key], value)
    else:
      base[key] = value
  return base


def migrate(values: ml_collections.ConfigDict | dict) -> ml_collections.ConfigDict:
  """``values`` laid over today's defaults for its task: fields it lacks get their default."""
  values = values.to_dict() if isinstance(values, ml_collections.ConfigDict) else values
  task = values.get("task", "vae")  # runs saved before the colouriser existed have no task
  if task not in TASKS:
    raise ConfigError(f"config.task={task!r} is not a task; choose one of {TASKS}.")
  merged = base_config(task).to_dict()
  for (group, name), value in _LEGACY_VALUES.items():
    if name not in values.get(group, {}):
      merged[group][name] = value
  model_name = values.get("model", {}).get("name", merged["model"]["name"])
  if task == "vae":
    merged["model"].update(copy.deepcopy(_MODEL_DEFAULTS.get(model_name, {})))
  return ml_collections.ConfigDict(_deep_update(merged, copy.deepcopy(values)))


def resolve(config: ml_collections.ConfigDict | dict) -> ml_collections.ConfigDict:
  """The config every command works with: migrated (``migrate``), then validated (``validate``)."""
  config = migrate(config)
  validate(config)
  return config


def save_config(config: ml_collections.ConfigDict, workdir: str | Path) -> Path:
  """Write the resolved config to ``workdir/config.json`` (whole, or not at all)."""
  path = Path(workdir) / CONFIG_FILENAME
  files.write_text(path, config.to_json(indent=2, sort_keys=True) + "\n")
  return path


def load_config(workdir: str | Path) -> ml_collections.ConfigDict:
  """The resolved config a run saved in its workdir (``resolve`` of its ``config.json``).

  Raises:
    WorkdirError: no readable config.json in ``workdir``.
    ConfigError: a value in it cannot be used.
  """
  path = workdir_path(workdir) / CONFIG_FILENAME
  if not path.exists():
    raise WorkdirError(f"No {CONFIG_FILENAME} in {workdir}: is it a vae_jax training workdir?")
  try:
    values = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise WorkdirError(f"{path} cannot be read ({error}); restore it from a copy.") from None
  return resolve(values)


# --- validation ----------------------------------------------------------------------------------


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(low: int) -> Callable[[Any], str | None]:
  return lambda v: None if _is_int(v) and v >= low else f"a whole number ≥ {low}"


def _real_in(low: float, high: float = math.inf, open_low: bool = False, open_high: bool = False):
  def check(v) -> str | None:
    if (
      _is_real(v) and (v > low if open_low else v >= low) and (v < high if open_high else v <= high)
    ):
      return None
    left, right = "(" if open_low else "[", ")" if open_high or high == math.inf else "]"
    return f"a finite number in {left}{low:g}, {high:g}{right}"

  return check


def _one_of(*options) -> Callable[[Any], str | None]:
  return lambda v: None if v in options else f"one of {', '.join(map(repr, options))}"


def _boolean(v) -> str | None:
  return None if isinstance(v, bool) else "True or False"


def _text(v) -> str | None:
  return None if isinstance(v, str) else "a string"


def _source(v) -> str | None:
  kind, _, argument = str(v).partition(":")
  known = kind in ("folder", "npz", "tfds") or argument in ("faces", "galaxies")
  if isinstance(v, str) and argument and known and kind in ("synthetic", "folder", "npz", "tfds"):
    return None
  return f"a data source of the form {', '.join(SOURCE_FORMS)}"


_POSITIVE = _real_in(0.0, open_low=True)
_NON_NEGATIVE = _real_in(0.0)
_COMMON_RULES = {
  "seed": _int_at_least(0),
  "data.source": _source,
  "data.image_size": _int_at_least(1),
  "data.channels": _one_of(1, 3),
  "data.crop": _one_of("center", "none"),
  "data.crop_size": _int_at_least(0),
  "data.val_fraction": _real_in(0.0, 1.0, open_high=True),
  "data.hflip": _boolean,
  "data.max_shift": _NON_NEGATIVE,
  "data.max_rotation": _real_in(0.0, 180.0),
  "data.max_zoom": _real_in(0.0, 1.0, open_high=True),
  "data.worker_count": _int_at_least(0),
  "data.on_device_mb": _NON_NEGATIVE,
  "data.cache": _boolean,
  "data.cache_dir": _text,
  "data.decode_workers": _int_at_least(0),
  "data.max_upscale": _NON_NEGATIVE,
  "data.max_image_pixels": _int_at_least(0),
  "data.tfds_data_dir": _text,
  "data.tfds_split": _text,
  "data.tfds_image_key": _text,
  "data.synthetic.num_images": _int_at_least(1),
  "data.synthetic.image_size": _int_at_least(8),
  "data.synthetic.seed": _int_at_least(0),
  "opt.learning_rate": _POSITIVE,
  "opt.warmup_steps": _int_at_least(0),
  "opt.schedule": _one_of("cosine", "constant"),
  "opt.weight_decay": _NON_NEGATIVE,
  "opt.grad_clip": _POSITIVE,
  "opt.prior_learning_rate": _POSITIVE,
  "train.steps": _int_at_least(1),
  "train.batch_size": _int_at_least(1),
  "train.log_every": _int_at_least(1),
  "train.eval_every": _int_at_least(1),
  "train.ckpt_every": _int_at_least(1),
  "train.keep_checkpoints": _int_at_least(1),
  "train.eval_batch_size": _int_at_least(1),
  "train.max_eval_images": _int_at_least(1),
  "train.num_grid_images": _int_at_least(1),
  "train.steps_per_dispatch": _int_at_least(1),
  "train.ema_decay": _real_in(0.0, 1.0, open_high=True),
  "train.compute_dtype": _one_of(*COMPUTE_DTYPES),
  "train.deterministic": _boolean,
}
_TASK_RULES = {
  "vae": {
    "model.latent_dim": _int_at_least(1),
    "model.output_activation": _one_of("none", "sigmoid", "tanh"),
    "model.learned_prior": _boolean,
    "loss.likelihood": _one_of(*LIKELIHOODS),
    "loss.scale": _POSITIVE,
    "loss.min_scale": _real_in(0.0, 1.0, open_low=True),
    "loss.beta": _NON_NEGATIVE,
    "loss.warmup_steps": _int_at_least(0),
    "loss.free_bits": _NON_NEGATIVE,
  },
  "colorizer": {
    "loss.luminance_weight": _NON_NEGATIVE,
    "colorizer.vae_workdir": _text,
    "colorizer.input_noise": _NON_NEGATIVE,
  },
}


def validate(config: ml_collections.ConfigDict) -> None:
  """Check every field of a migrated config; the first problem is one ``ConfigError`` line.

  Types and ranges of the shared groups and the task's own, then what the
  model needs of them (``vae_jax.models.check_config``: layer plans, image
  sizes it can take).
  """
  values = _flatten(config.to_dict())
  for name, check in {**_COMMON_RULES, **_TASK_RULES[config.task]}.items():
    problem = check(values.get(name)) if name in values else "set (the field is missing)"
    if problem:
      raise ConfigError(f"config.{name}={values.get(name)!r} must be {problem}.")
  train = config.train
  k = train.steps_per_dispatch
  bad = [
    f"{n}={train[n]}" for n in ("steps", "log_every", "eval_every", "ckpt_every") if train[n] % k
  ]
  if bad:
    raise ConfigError(
      f"config.train.steps_per_dispatch={k} must divide config.train's steps, log_every, "
      f"eval_every and ckpt_every ({', '.join(bad)} {'does' if len(bad) == 1 else 'do'} not)."
    )
  bernoulli = config.task == "vae" and config.loss.likelihood == "bernoulli"
  if bernoulli and config.model.output_activation != "none":
    raise ConfigError(
      "The Bernoulli likelihood takes logits: set config.model.output_activation='none'."
    )
  models.check_config(config)
