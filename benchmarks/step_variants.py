#!/usr/bin/env python
"""Before/after figures for speed choices: variants of one train step timed in turn, in one process.

On a machine shared with other work, images/s move by tens of percent from
minute to minute; timing the variants in turn, several windows each, and
comparing medians taken in the same minutes is what makes a before/after
figure meaningful. Experiments:

* ``conv_layout``: configs/faces_conv.py (augmentation off) with its
  convolutions as plain linen (``nn.Conv``, ``nn.max_pool``,
  ``nn.ConvTranspose``); the same with a reshape + max pooling (the library
  before the banded matmuls); ``banded_conv`` matmuls with that pooling; and
  the library's (banded matmuls, pooling windows laid out as blocks).
* ``fcn_einsum``: configs/galaxy.py with the library's space-to-depth +
  ``nn.Dense`` stages vs the same kernels applied by ``jnp.einsum`` on a
  free reshape (no explicit transposes); the parameters are identical.
* ``xla``: the library's step for ``--config`` compiled with XLA CPU options
  (``--options=name=value,...``; each option is one variant).
* ``upsampling``: configs/galaxy.py with kernel-2 upsamplings everywhere vs
  3×3 sub-pixel convolutions at the coarsest one or two stages, vs 2×2
  sub-pixel convolutions (k4 s2 transposed convolutions) at the coarsest two
  (the default), and those two upsamplings done the other usual ways:
  nearest-neighbour ×2 resize + 3×3 convolution, bilinear ×2 resize + 3×3
  convolution, and ``nn.ConvTranspose`` k4 s2 (same channels everywhere).
* ``channels``: configs/galaxy.py with channel plans 8-16-32-64,
  16-32-64-128 (the default) and 32-64-128-256 (the seed's structure in all).
* ``scan``: the library's step for ``--config`` one step per dispatch vs
  ``--per_dispatch`` steps in one ``lax.scan`` (``config.train.steps_per_dispatch``).
* ``augment``: the library's step for ``--config`` with its config's on-device
  augmentation (flips, affine warps) vs none, the work PyTorch's side of
  benchmarks/compare_pytorch.py does.
* ``optimizer``: the library's step for ``--config`` (global-norm clipping +
  AdamW) vs the same step with plain SGD: what the optimiser's passes over
  the parameters cost, i.e. how fast the step could be with a free optimiser.
* ``bf16``: the library's step for ``--config`` with float32 activations vs
  ``config.train.compute_dtype="bfloat16"`` (on CPUs with AMX or AVX-512
  bf16, XLA's bf16 dots with float32 results are faster than f32 ones, but
  whole bf16 steps measured slower: BENCHMARKS.md).

Each variant's images/s come with its GFLOP/s (XLA's cost analysis of the
step as lowered for the CPU, the same count on every device) and the
fraction of this device's f32 and bf16 matmul peaks that is.
``--batch_size`` changes the ``--config`` experiments' batch: on a GPU,
``--experiment=bf16 --config=galaxy --batch_size=64`` gives the galaxy
figures issue 5 asks for (images/s at batch 64, fraction of the bf16 peak).
The steps here run with XLA's default GPU kernels, as with
``config.train.deterministic=False``; what bin/train.py's default
bit-reproducible ones cost: ``--experiment=xla
--options=xla_gpu_deterministic_ops=true``.

  python benchmarks/step_variants.py --experiment=conv_layout
  python benchmarks/step_variants.py --experiment=fcn_einsum
  python benchmarks/step_variants.py --experiment=xla --config=galaxy \\
      --options=xla_cpu_use_onednn=true,xla_cpu_use_xnnpack=true,xla_cpu_multi_thread_eigen=false
  python benchmarks/step_variants.py --experiment=upsampling
  python benchmarks/step_variants.py --experiment=channels
  python benchmarks/step_variants.py --experiment=scan --config=faces_mlp --per_dispatch=10
  python benchmarks/step_variants.py --experiment=bf16 --config=galaxy [--batch_size=64]
  python benchmarks/step_variants.py --experiment=xla --config=galaxy --batch_size=64 \\
      --options=xla_gpu_deterministic_ops=true   # on a GPU: what bit-reproducible kernels cost
  python benchmarks/step_variants.py --experiment=optimizer --config=faces_mlp
  python benchmarks/step_variants.py --experiment=augment --config=faces_mlp
"""

import functools
import json
import statistics
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from common import NO_AUGMENTATION, load_config
from flops import device_name, matmul_peak_gflops, step_flops

import vae_jax.models as models
from vae_jax.models.banded_conv import banded_conv
from vae_jax.models.conv import ConvDecoder, ConvEncoder
from vae_jax.models.fcn import FCNDecoder, FCNEncoder, depth_to_space
from vae_jax.tasks.vae import standalone_training

_EXPERIMENT = flags.DEFINE_enum(
  "experiment",
  "conv_layout",
  [
    "conv_layout",
    "fcn_einsum",
    "xla",
    "upsampling",
    "channels",
    "scan",
    "bf16",
    "optimizer",
    "augment",
  ],
  "Which comparison.",
)
_CONFIG = flags.DEFINE_string(
  "config",
  "galaxy",
  "configs/<name>.py (a VAE config) for --experiment=xla, scan, bf16, optimizer or augment.",
)
_PER_DISPATCH = flags.DEFINE_integer(
  "per_dispatch", 10, "Steps per dispatch for --experiment=scan."
)
_OPTIONS = flags.DEFINE_list(
  "options", [], "XLA options for --experiment=xla, one variant each: name=value."
)
_REPEATS = flags.DEFINE_integer(
  "repeats", 7, "Timing windows per variant (alternating); the median is reported."
)
_WINDOW = flags.DEFINE_float("window_s", 1.5, "Approximate length of one timing window.")
_BATCH = flags.DEFINE_integer(
  "batch_size",
  0,
  "Batch size for the --config experiments (0: the config's; e.g. 64 for the galaxy on a GPU).",
)


def _reshape_max_pool(x_BHWC):
  """2×2 max-pooling as a reshape and a max over the two new axes (odd last row/column dropped)."""
  b, h, w, c = x_BHWC.shape
  return x_BHWC[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class _NHWCConvEncoder(ConvEncoder):
  """The conv VAE's encoder as conv → ReLU → pooling on NHWC arrays, with a chosen conv and pool."""

  conv: Callable = jax.lax.conv_general_dilated
  pool: Callable = _reshape_max_pool

  @nn.compact
  def __call__(self, x_BHWC):
    h = x_BHWC
    for i, (c, k, s, p) in enumerate(zip(self.channels, self.kernels, self.strides, self.paddings)):
      padding = ((p, p), (p, p))
      conv = nn.Conv(
        c, (k, k), strides=(s, s), padding=padding, conv_general_dilated=self.conv, name=f"conv_{i}"
      )
      h = self.pool(nn.relu(conv(h)))
    h = h.reshape(h.shape[0], -1)
    return nn.Dense(self.latent_dim, name="mean")(h), nn.Dense(self.latent_dim, name="logvar")(h)


class _TransposedConvDecoder(ConvDecoder):
  """The conv VAE's decoder with ``nn.ConvTranspose`` (XLA's transposed convolutions)."""

  @nn.compact
  def __call__(self, z_BZ):
    h0, w0, c0 = self.start_shape
    h = nn.Dense(h0 * w0 * c0, name="dense")(z_BZ).reshape(z_BZ.shape[0], h0, w0, c0)
    for i, (c, k, s) in enumerate(zip(self.channels, self.kernels, self.strides)):
      h = nn.ConvTranspose(c, (k, k), strides=(s, s), padding="VALID", name=f"deconv_{i}")(h)
      if i < len(self.channels) - 1:
        h = nn.relu(h)
    return h


class _EinsumDown(nn.Module):
  """A 2×2 stride-2 convolution with space-to-depth + Dense's parameters, as one einsum."""

  features: int

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (4 * c, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    patches = x.reshape(b, h // 2, 2, w // 2, 2, c)
    return jnp.einsum("bipjqc,pqco->bijo", patches, kernel.reshape(2, 2, c, -1)) + bias


class _EinsumUp(nn.Module):
  """Dense + depth-to-space's parameters, as one einsum whose output reshapes freely to 2H×2W."""

  features: int

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (c, 4 * self.features))
    bias = self.param("bias", nn.initializers.zeros, (4 * self.features,))
    y = jnp.einsum("bijc,cpqo->bipjqo", x, kernel.reshape(c, 2, 2, -1)) + bias.reshape(2, 1, 2, -1)
    return y.reshape(b, 2 * h, 2 * w, self.features)


class _EinsumEncoder(FCNEncoder):
  @nn.compact
  def __call__(self, x_BHWC):
    h = x_BHWC
    for i, c in enumerate(self.channels):
      h = nn.relu(_EinsumDown(c, name=f"down_{i}")(h))
    h = h.reshape(h.shape[0], -1)
    return nn.Dense(self.latent_dim, name="mean")(h), nn.Dense(self.latent_dim, name="logvar")(h)


class _VariantDecoder(FCNDecoder):
  """The galaxy decoder with its upsamplings written another way (same channels and sizes).

  ``kernel2``: the kernel-2 stages as the library's ``Dense`` + depth-to-space
  ("dense") or as one einsum on a free reshape ("einsum", same parameters).
  ``overlapping``: the overlapping stages (size > 1) as the library's
  sub-pixel convolution ("subpixel"), as ``jax.image.resize`` ×2 ("nearest"
  or "linear") then a 3×3 convolution to the stage's channels, or as
  ``nn.ConvTranspose`` k4 s2 ("conv_transpose", SAME padding: XLA's own
  form of the library's size-2 stages).
  """

  kernel2: str = "dense"
  overlapping: str = "subpixel"

  @nn.compact
  def __call__(self, z_BZ):
    h0, w0, c0 = self.start_shape
    h = nn.relu(nn.Dense(h0 * w0 * c0, name="dense")(z_BZ)).reshape(z_BZ.shape[0], h0, w0, c0)
    sizes = tuple(self.up_neighbourhoods) or (1,) * len(self.channels)
    for i, (c, size) in enumerate(zip(self.channels, sizes)):
      name = f"up_{i}"
      if size == 1:
        h = (
          _EinsumUp(c, name=name)(h)
          if self.kernel2 == "einsum"
          else depth_to_space(nn.Dense(4 * c, name=name)(h))
        )
      elif self.overlapping == "subpixel":
        h = depth_to_space(nn.Conv(4 * c, (size, size), name=name)(h))
      elif self.overlapping == "conv_transpose":
        h = nn.ConvTranspose(c, (4, 4), strides=(2, 2), padding="SAME", name=name)(h)
      else:
        b, hh, ww, cc = h.shape
        h = nn.Conv(c, (3, 3), name=name)(
          jax.image.resize(h, (b, 2 * hh, 2 * ww, cc), self.overlapping)
        )
      if i < len(self.channels) - 1:
        h = nn.relu(h)
    return h


def _step_for(
  config, options: dict | None = None, tx: optax.GradientTransformation | None = None
) -> tuple[Callable, int, float]:
  """(a thunk calling the library's train step on a fixed batch, images per call, FLOPs per image).

  ``tx`` replaces the config's optimiser; ``options`` are XLA compiler options.
  """
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  _, state, step = standalone_training(config, jax.random.key(0), 10**6, tx)
  k = config.train.steps_per_dispatch
  batch = (k, config.train.batch_size) if k > 1 else (config.train.batch_size,)
  x = jax.device_put(np.random.default_rng(0).integers(0, 256, batch + shape, dtype=np.uint8))
  key = jax.random.key(1)
  compiled = step.lower(state, x, key).compile(compiler_options=options)
  flops_per_image = step_flops(step, state, x, key) / config.train.batch_size
  holder = {"state": state}

  def run():
    holder["state"], metrics = compiled(holder["state"], x, key)
    return metrics["loss"]

  jax.block_until_ready(run())
  # XLA counts a scan's body once, so this is one step's work whatever steps_per_dispatch is.
  return run, k * config.train.batch_size, flops_per_image


def _config(overrides: dict | None = None):
  """``--config`` with ``overrides`` and ``--batch_size``."""
  config = load_config(_CONFIG.value, overrides)
  if _BATCH.value:
    config.train.batch_size = _BATCH.value
  return config


def _variants() -> dict[str, tuple[Callable, int, float]]:
  """Build every variant's step now (module swaps only matter while tracing)."""
  if _EXPERIMENT.value == "conv_layout":
    config = load_config("faces_conv", {**NO_AUGMENTATION, "train.steps_per_dispatch": 1})
    max_pool = functools.partial(nn.max_pool, window_shape=(2, 2), strides=(2, 2))
    plans = {
      "nn.Conv, nn.max_pool, nn.ConvTranspose": (
        functools.partial(_NHWCConvEncoder, pool=max_pool),
        _TransposedConvDecoder,
      ),
      "the same, reshape + max pooling": (_NHWCConvEncoder, _TransposedConvDecoder),
      "banded_conv matmuls, reshape + max pooling": (
        functools.partial(_NHWCConvEncoder, conv=banded_conv),
        ConvDecoder,
      ),
      "banded matmuls, pooling as blocks (library)": (ConvEncoder, ConvDecoder),
    }
    out = {}
    try:
      for name, (models.ConvEncoder, models.ConvDecoder) in plans.items():
        out[name] = _step_for(config)
    finally:
      models.ConvEncoder, models.ConvDecoder = ConvEncoder, ConvDecoder
    return out
  if _EXPERIMENT.value == "fcn_einsum":
    config = load_config("galaxy")
    library = _step_for(config)
    models.FCNEncoder, models.FCNDecoder = (
      _EinsumEncoder,
      functools.partial(_VariantDecoder, kernel2="einsum"),
    )
    try:
      einsum = _step_for(config)
    finally:
      models.FCNEncoder, models.FCNDecoder = FCNEncoder, FCNDecoder
    return {"space_to_depth + Dense (library)": library, "einsum on reshape": einsum}
  if _EXPERIMENT.value == "upsampling":
    out = {}
    for sizes in ((1, 1, 1, 1), (3, 1, 1, 1), (3, 3, 1, 1), (2, 2, 1, 1)):
      config = load_config("galaxy")
      config.model.up_neighbourhoods = sizes
      out[f"up_neighbourhoods={sizes}"] = _step_for(config)
    try:
      for method in ("nearest", "linear", "conv_transpose"):
        models.FCNDecoder = functools.partial(_VariantDecoder, overlapping=method)
        out[
          f"16->32->64 as {method}"
          + (" resize + 3x3 conv" if method != "conv_transpose" else " k4 s2")
        ] = _step_for(load_config("galaxy"))
    finally:
      models.FCNDecoder = FCNDecoder
    return out
  if _EXPERIMENT.value == "channels":
    out = {}
    for plan in ((8, 16, 32, 64), (16, 32, 64, 128), (32, 64, 128, 256)):
      config = load_config("galaxy")
      config.model.channels = plan
      out["channels " + "-".join(map(str, plan))] = _step_for(config)
    return out
  config = _config()
  if _EXPERIMENT.value == "scan":
    config.train.steps_per_dispatch = 1
    out = {"1 step per dispatch": _step_for(config)}
    config.train.steps_per_dispatch = _PER_DISPATCH.value
    out[f"{_PER_DISPATCH.value} steps per dispatch (lax.scan)"] = _step_for(config)
    return out
  if _EXPERIMENT.value == "bf16":
    out = {"float32": _step_for(config)}
    config.train.compute_dtype = "bfloat16"
    out["bfloat16 activations"] = _step_for(config)
    return out
  if _EXPERIMENT.value == "optimizer":
    config = _config(NO_AUGMENTATION)
    return {
      "clip + AdamW (library)": _step_for(config),
      "plain SGD": _step_for(config, tx=optax.sgd(1e-6)),
    }
  if _EXPERIMENT.value == "augment":
    return {
      "config's augmentation": _step_for(config),
      "no augmentation": _step_for(_config(NO_AUGMENTATION)),
    }
  out = {"default": _step_for(config)}
  for spec in _OPTIONS.value:
    name, value = spec.split("=", 1)
    value = {"true": True, "false": False}.get(
      value, int(value) if value.lstrip("-").isdigit() else value
    )
    out[spec] = _step_for(config, {name: value})
  return out


def main(argv):
  del argv
  variants = _variants()
  steps = {}
  for name, (run, _, _) in variants.items():
    start = time.perf_counter()
    jax.block_until_ready([run() for _ in range(2)])
    steps[name] = max(2, int(_WINDOW.value / ((time.perf_counter() - start) / 2)))
  rates = {name: [] for name in variants}
  for _ in range(_REPEATS.value):
    for name, (run, images, _) in variants.items():
      start = time.perf_counter()
      jax.block_until_ready([run() for _ in range(steps[name])][-1])
      rates[name].append(steps[name] * images / (time.perf_counter() - start))
  peaks = {"f32": matmul_peak_gflops(), "bf16": matmul_peak_gflops(dtype=jnp.bfloat16)}
  print(f"{device_name()}: matmul peak {peaks['f32']:.0f} GFLOP/s f32, {peaks['bf16']:.0f} bf16")
  result = {}
  for name, r in rates.items():
    ips = statistics.median(r)
    gflops = variants[name][2] * ips / 1e9
    result[name] = {
      "images_per_s": round(ips, 1),
      "gflop_per_s": round(gflops, 1),
      **{f"fraction_of_{d}_peak": round(gflops / p, 3) for d, p in peaks.items()},
      "windows": [round(v, 1) for v in r],
    }
    print(
      f"{name:45s} {ips:10.1f} img/s  {gflops:7.1f} GFLOP/s ({gflops / peaks['f32']:.0%} of the "
      "f32 peak, "
      f"{gflops / peaks['bf16']:.0%} of bf16)  windows {result[name]['windows']}"
    )
  print(
    json.dumps(
      {
        "experiment": _EXPERIMENT.value,
        "device": device_name(),
        "matmul_peak_gflop_per_s": {d: round(p, 1) for d, p in peaks.items()},
        **result,
      }
    )
  )


if __name__ == "__main__":
  app.run(main)
