"""Shared config defaults, presets, and the resolved config saved in a workdir.

Config files in ``configs/`` start from ``base_config()`` and override what
differs, so every run has the same groups: ``data``, ``model``, ``loss``,
``opt``, ``train`` and ``seed``.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import ml_collections

CONFIG_FILENAME = "config.json"


def base_config() -> ml_collections.ConfigDict:
  """Defaults every config shares; model fields are filled in by each config file."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "vae"  # vae | colorizer: which trainer bin/train.py runs

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
  c.model.name = "mlp"
  c.model.latent_dim = 10
  c.model.output_activation = "sigmoid"
  c.model.learned_prior = False  # learn the prior's mean and scale (see vae_jax/models/vae.py)

  c.loss = ml_collections.ConfigDict()
  c.loss.likelihood = "gaussian"  # gaussian | gaussian_learned | bernoulli
  c.loss.scale = 0.1  # σ of the Gaussian likelihood on the [0, 1] scale (initial value if learned)
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
    1e-2  # Adam for a learned prior's mean and scale (config.model.learned_prior)
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
  # >0: keep a moving average of the parameters with this decay; evaluation, pictures and sampling use it.
  c.train.ema_decay = 0.0
  c.train.compute_dtype = (
    "float32"  # float32 | bfloat16 (bf16 activations; float32 parameters and loss)
  )
  c.train.deterministic = (
    True  # bin/train.py on a GPU: bit-reproducible kernels (exact resume), ~30 % slower
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
    raise ValueError(f"Unknown preset {arg!r}; this config has {sorted(presets)}.")
  return presets[arg](config)


def workdir_path(workdir: str | Path) -> Path:
  """``workdir`` as a filesystem path (``~`` expanded); a URL (``gs://…``, ``s3://…``) is refused with advice.

  A run writes its workdir with pathlib, PIL and a local TensorBoard writer,
  and ``Path("gs://b/x")`` silently becomes the local directory ``gs:/b/x``.
  On several hosts the workdir must be a directory every host sees (NFS, or
  a bucket mounted with gcsfuse).
  """
  if "://" in str(workdir):
    raise ValueError(
      f"--workdir {workdir} is a URL; vae_jax writes runs to a filesystem path. On several hosts, use a "
      "directory every host sees (NFS, or the bucket mounted with gcsfuse)."
    )
  return Path(workdir).expanduser()


def config_from_file(path: str | Path, preset: str | None = None) -> ml_collections.ConfigDict:
  """``get_config(preset)`` of a config file such as ``configs/galaxy.py``, without absl's flags (tests, benchmarks)."""
  path = Path(path)
  spec = importlib.util.spec_from_file_location(f"configs.{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def save_config(config: ml_collections.ConfigDict, workdir: str | Path) -> Path:
  path = Path(workdir) / CONFIG_FILENAME
  path.write_text(config.to_json(indent=2, sort_keys=True) + "\n")
  return path


def load_config(workdir: str | Path) -> ml_collections.ConfigDict:
  """The resolved config a run saved in its workdir."""
  path = workdir_path(workdir) / CONFIG_FILENAME
  if not path.exists():
    raise FileNotFoundError(f"No {CONFIG_FILENAME} in {workdir}: is it a vae_jax training workdir?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))
