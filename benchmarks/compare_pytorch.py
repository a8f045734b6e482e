#!/usr/bin/env python
"""vae_jax's train steps against the seeds' PyTorch models: same shapes, batch and optimiser.

Four pairs, each at its config's batch size and image shape:

* ``mlp``: configs/faces_mlp.py against the seed's fully connected VAE
  (900→512→96→25 → heads 25→10; decoder 10→25→96→512→900), 30×30 grey, batch 100.
* ``conv``: configs/faces_conv.py against the seed's conv VAE (Conv 1→10 k5,
  pool, Conv 10→5 k5 s2 p1, pool, heads 45→10; dense 10→45, ConvT 5→10 k4 s2,
  ConvT 10→3 k6 s3, ConvT 3→1 k4 s1), 30×30 grey, batch 100.
* ``stacknn``: configs/colorizer.py with ``model.name=stacknn`` against the
  seed's StackNN (ConvT 1→10 k5 s2, Conv 10→5 k5, dense 17405→4500→2700;
  colour MSE + luminance MSE, Gaussian input noise), 30×30, batch 64.
* ``galaxy``: configs/galaxy.py (channels 16-32-64-128, stride-2 2×2
  convolutions as space-to-depth + dense, depth-to-space upsampling, the two
  coarsest as 2×2 sub-pixel convolutions, i.e. k4 s2 transposed ones)
  against the seed's FCN as one would write it in PyTorch (the seed gives
  no layer sizes): the same channel plan with Conv2d k4 s2 p1 and
  ConvTranspose2d k4 s2 p1 (ReLU between, tanh output), 256×256×3, batch 16.
  ``galaxy_k2`` adds the PyTorch model with vae_jax's exact arithmetic (k2
  s2 convolutions, 2×2 conv + PixelShuffle where vae_jax has them), so the
  ratio can be read both as "seed-style code" and "same FLOPs".

Both sides run a full training step: forward, Gaussian NLL (σ from the
config) + analytic KL (the colouriser: its two MSEs), backward, global-norm
clipping and Adam. vae_jax's is the library's own jitted, state-donating step
(``vae_jax.trainer.make_train_step`` with each task's loss),
fed a batch already on the device; PyTorch gets a prepared float tensor. The
seeds train without augmentation, so vae_jax's configs run here with theirs
switched off (what it costs: ``step_variants.py --experiment=augment``).
Each side is timed in windows of about ``--window_s`` seconds, alternating
JAX and PyTorch ``--repeats`` times; the median window is reported, so a
machine busy with other work biases neither side. PyTorch is timed at each
thread count up to its default and its best median counts: on a loaded
machine its OpenMP threads can wait for each other more than they compute.
XLA has no per-program equivalent: on jaxlib 0.10.2 its CPU dots use every
core the process may run on whatever the options
(``xla_cpu_multi_thread_eigen=False`` leaves a 2048² matmul at the two-core
rate; only the process's CPU affinity, e.g. ``taskset -c 0``, confines it),
so vae_jax's step is timed as compiled by default.
``default_settings_ratio`` is the ratio with both at their defaults. FLOPs
per image come from XLA's cost analysis of the step as lowered for the CPU
(``flops.step_flops``; PyTorch's ``FlopCounterMode`` for its side), and
the JAX step's GFLOP/s is compared with this machine's measured f32 matmul
peak. The conv VAE's
convolutions run as banded matmuls (``vae_jax.models.banded_conv``), whose
FLOPs include the band's zeros: its count is the work the CPU does, about 3×
the convolutions' own (5.5 against 1.75 MFLOP per image; PyTorch counts 1.6).

On a GPU (JAX with CUDA, a CUDA build of torch) both sides run there in
float32 with TF32 matmuls and convolutions, each framework's default for
XLA and PyTorch's convolutions (PyTorch's matmuls are switched to TF32 to
match); ``--batch_size=64 --models=galaxy,galaxy_k2`` gives the galaxy at
the batch issue 5 asks for. JAX allocates GPU memory as it needs it here,
not 75 % of it at start, so PyTorch in the same process gets its share.

  pip install torch==2.13.0   # a CPU build; a benchmark-only dependency
  python benchmarks/compare_pytorch.py [--models=mlp,conv,stacknn,galaxy] [--repeats=5]
  python benchmarks/compare_pytorch.py --models=galaxy,galaxy_k2 --galaxy_channels=8,16,32,64
  python benchmarks/compare_pytorch.py --models=galaxy,galaxy_k2 --batch_size=64   # on a GPU

Ends with one JSON line: {"mlp": {"jax_images_per_s": …, "torch_images_per_s": …, "ratio": …, …},
…}.
"""

import json
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share a GPU with PyTorch

import itertools

import jax
import numpy as np
from absl import app, flags
from common import NO_AUGMENTATION, load_config
from flops import device_name, matmul_peak_gflops, step_flops

from vae_jax.models.colorizer import LUMA_WEIGHTS, build_colorizer
from vae_jax.tasks import colorizer, vae
from vae_jax.trainer import create_train_state, make_optimizer, make_train_step

INSTALL_HINT = (
  "PyTorch is not installed. It is only needed for this benchmark: "
  "pip install torch==2.13.0 (CPU build)."
)

_MODELS = flags.DEFINE_list(
  "models", ["mlp", "conv", "stacknn", "galaxy", "galaxy_k2"], "Which pairs to time."
)
_REPEATS = flags.DEFINE_integer(
  "repeats", 5, "Alternating timing windows per side; the median is reported."
)
_WINDOW = flags.DEFINE_float("window_s", 2.0, "Approximate length of one timing window.")
_BATCH = flags.DEFINE_integer(
  "batch_size",
  0,
  "One batch size for every pair (0: each config's); e.g. 64 for the galaxy on a GPU.",
)
_GALAXY_CHANNELS = flags.DEFINE_list(
  "galaxy_channels",
  [],
  "A channel plan for both galaxy pairs (both sides), e.g. 8,16,32,64; default: the config's.",
)

# name -> (config file, overrides); the JAX side of every pair.
PAIRS = {
  "mlp": ("faces_mlp", NO_AUGMENTATION),
  "conv": ("faces_conv", NO_AUGMENTATION),
  "stacknn": ("colorizer", {"model.name": "stacknn", **NO_AUGMENTATION}),
  "galaxy": ("galaxy", NO_AUGMENTATION),
  "galaxy_k2": ("galaxy", NO_AUGMENTATION),
}


# --- PyTorch: the seeds' models, written from the seed write-ups' descriptions
# -------------------------


def torch_models(torch):
  nn = torch.nn

  class SeedMLP(nn.Module):
    def __init__(self, pixels: int, z: int):
      super().__init__()
      self.encoder = nn.Sequential(
        nn.Linear(pixels, 512), nn.ReLU(True), nn.Linear(512, 96), nn.ReLU(True), nn.Linear(96, 25)
      )
      self.fcmu, self.fcvar = nn.Linear(25, z), nn.Linear(25, z)
      self.decoder = nn.Sequential(
        nn.Linear(z, 25),
        nn.ReLU(True),
        nn.Linear(25, 96),
        nn.ReLU(True),
        nn.Linear(96, 512),
        nn.ReLU(True),
        nn.Linear(512, pixels),
      )

    def forward(self, x):
      h = self.encoder(x.flatten(1))
      mu, logvar = self.fcmu(h), self.fcvar(h)
      z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
      return torch.sigmoid(self.decoder(z)).view_as(x), mu, logvar

  class SeedConv(nn.Module):
    def __init__(self, z: int):
      super().__init__()
      self.encoder = nn.Sequential(
        nn.Conv2d(1, 10, 5),
        nn.ReLU(True),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(10, 5, 5, stride=2, padding=1),
        nn.ReLU(True),
        nn.MaxPool2d(2, 2),
      )
      self.fcmu, self.fcvar, self.fc2 = nn.Linear(45, z), nn.Linear(45, z), nn.Linear(z, 45)
      self.decode_conv = nn.Sequential(
        nn.ConvTranspose2d(5, 10, 4, stride=2),
        nn.ReLU(),
        nn.ConvTranspose2d(10, 3, 6, stride=3),
        nn.ReLU(),
        nn.ConvTranspose2d(3, 1, 4, stride=1),
      )

    def forward(self, x):
      h = self.encoder(x).flatten(1)
      mu, logvar = self.fcmu(h), self.fcvar(h)
      z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
      return torch.sigmoid(self.decode_conv(self.fc2(z).view(-1, 5, 3, 3))), mu, logvar

  class SeedFCN(nn.Module):
    """Four stride-2 convolutions, heads on the flattened map, mirrored upsampling, tanh."""

    def __init__(
      self, size: int, channels: tuple, z: int, kernel: int, up_neighbourhoods: tuple = ()
    ):
      """``up_neighbourhoods`` (kernel 2): n > 1 makes that upsampling n×n conv + PixelShuffle."""
      super().__init__()
      pad = (kernel - 2) // 2
      plan = (3,) + tuple(channels)
      enc = []
      for c_in, c_out in itertools.pairwise(plan):
        enc += [nn.Conv2d(c_in, c_out, kernel, stride=2, padding=pad), nn.ReLU(True)]
      self.encoder = nn.Sequential(*enc)
      self.start = (channels[-1], size // 2 ** len(channels), size // 2 ** len(channels))
      flat = math.prod(self.start)
      self.fcmu, self.fcvar, self.fc2 = nn.Linear(flat, z), nn.Linear(flat, z), nn.Linear(z, flat)
      dec = []
      rev = plan[::-1]
      sizes = tuple(up_neighbourhoods) or (1,) * len(channels)
      for i, (c_in, c_out) in enumerate(itertools.pairwise(rev)):
        if sizes[i] > 1:
          dec += [
            nn.Conv2d(c_in, 4 * c_out, sizes[i], padding="same"),
            nn.PixelShuffle(2),
          ]  # XLA's SAME padding
        else:
          dec.append(nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=pad))
        if i < len(rev) - 2:
          dec.append(nn.ReLU(True))
      self.decoder = nn.Sequential(*dec)

    def forward(self, x):
      h = self.encoder(x).flatten(1)
      mu, logvar = self.fcmu(h), self.fcvar(h)
      z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
      h = torch.relu(self.fc2(z)).view((-1,) + self.start)
      return 0.5 * (torch.tanh(self.decoder(h)) + 1.0), mu, logvar

  class StackNN(nn.Module):
    def __init__(self, size: int):
      super().__init__()
      self.remap = nn.Sequential(
        nn.ConvTranspose2d(1, 10, 5, stride=2), nn.ReLU(), nn.Conv2d(10, 5, 5), nn.ReLU()
      )
      remapped = 2 * size + 3 - 4  # ConvT k5 s2 then Conv k5
      self.fc = nn.Sequential(
        nn.Linear(5 * remapped**2, 5 * size * size), nn.Linear(5 * size * size, 3 * size * size)
      )
      self.size = size

    def forward(self, x):
      return self.fc(self.remap(x).flatten(1)).view(-1, 3, self.size, self.size)

  return SeedMLP, SeedConv, SeedFCN, StackNN


def torch_vae_step(torch, model, config, x01):
  """Seed-style step with the config's ELBO (NLL summed per image + KL, batch mean); Adam."""
  opt = torch.optim.Adam(model.parameters(), lr=config.opt.learning_rate)
  inv_two_var = 0.5 / config.loss.scale**2

  def step():
    opt.zero_grad(set_to_none=True)
    recon, mu, logvar = model(x01 * 2.0 - 1.0)
    rec = ((recon - x01) ** 2).flatten(1).sum(1) * inv_two_var
    kl = 0.5 * (logvar.exp() + mu**2 - 1.0 - logvar).sum(1)
    loss = (rec + kl).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.opt.grad_clip)
    opt.step()
    return loss

  return step


def torch_colorizer_step(torch, model, config, rgb01):
  """The seed's colouriser loss (colour MSE + luminance MSE) on noisy grey input; Adam."""
  opt = torch.optim.Adam(model.parameters(), lr=config.opt.learning_rate)
  luma = torch.tensor(LUMA_WEIGHTS, device=rgb01.device).view(1, 3, 1, 1)
  grey = (rgb01 * luma).sum(1, keepdim=True)

  def step():
    opt.zero_grad(set_to_none=True)
    out = model(grey + config.colorizer.input_noise * torch.randn_like(grey))
    loss = ((out - rgb01) ** 2).mean() + config.loss.luminance_weight * (
      ((out * luma).sum(1, keepdim=True) - grey) ** 2
    ).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.opt.grad_clip)
    opt.step()
    return loss

  return step


def build_torch(torch, name: str, config, images_uint8: np.ndarray, device: str) -> Callable:
  """The seed model's train step for pair ``name`` on ``device`` ("cpu", "cuda"), a fixed batch."""
  SeedMLP, SeedConv, SeedFCN, StackNN = torch_models(torch)
  x01 = (
    torch.from_numpy(images_uint8.astype(np.float32) / 255.0)
    .permute(0, 3, 1, 2)
    .contiguous()
    .to(device)
  )
  size, z = config.data.image_size, config.model.get("latent_dim", 0)
  if name == "mlp":
    model, make_step = SeedMLP(size * size * config.data.channels, z), torch_vae_step
  elif name == "conv":
    model, make_step = SeedConv(z), torch_vae_step
  elif name == "galaxy":
    model, make_step = SeedFCN(size, tuple(config.model.channels), z, kernel=4), torch_vae_step
  elif name == "galaxy_k2":
    model = SeedFCN(
      size,
      tuple(config.model.channels),
      z,
      kernel=2,
      up_neighbourhoods=tuple(config.model.get("up_neighbourhoods", ())),
    )
    make_step = torch_vae_step
  elif name == "stacknn":
    model, make_step = StackNN(size), torch_colorizer_step
  else:
    raise ValueError(name)
  return make_step(torch, model.to(device), config, x01)


# --- JAX: the library's own steps
# ----------------------------------------------------------------------


def build_jax(name: str, config, images_uint8: np.ndarray):
  """(step thunk that advances its own state and returns the loss, one train step's FLOPs).

  The thunk calls the library's jitted step. With
  ``config.train.steps_per_dispatch`` k > 1 a call runs k steps, on k copies
  of the batch; the FLOPs are counted on a one-step program all the same
  (XLA's cost analysis counts a loop's body once).
  """
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  key, k = jax.random.key(1), config.train.steps_per_dispatch
  if name == "stacknn":
    model = build_colorizer(config.model, shape)
    loss = colorizer.make_loss(model, config, colorizer.GreyInput())
    grey = jax.ShapeDtypeStruct((1,) + shape[:2] + (1,), jax.numpy.float32)
    init = lambda rng: model.init(rng, jax.numpy.zeros(grey.shape, grey.dtype))["params"]
    state = create_train_state(init, make_optimizer(config.opt, 10**6), jax.random.key(0))
    make_step = lambda per_dispatch: make_train_step(loss, 0.0, per_dispatch)
    flops = step_flops(make_step(1), state, jax.device_put(images_uint8), key)
    step = make_step(k)
  else:
    one_step = config.copy_and_resolve_references()
    one_step.train.steps_per_dispatch = 1
    _, state, single = vae.standalone_training(one_step, jax.random.key(0), 10**6)
    flops = step_flops(single, state, jax.device_put(images_uint8), key)
    _, state, step = vae.standalone_training(config, jax.random.key(0), 10**6)
  args = (jax.device_put(np.stack([images_uint8] * k) if k > 1 else images_uint8), key)
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], *args)
    return metrics["loss"]

  return run, flops


def torch_flops(torch, step: Callable) -> float:
  from torch.utils.flop_counter import FlopCounterMode

  with FlopCounterMode(display=False) as counter:
    step()
  return float(counter.get_total_flops())


def time_window(run: Callable, block: Callable, steps: int) -> float:
  """Seconds for ``steps`` calls of ``run``, waiting for the last result."""
  start = time.perf_counter()
  out = None
  for _ in range(steps):
    out = run()
  block(out)
  return time.perf_counter() - start


def steps_for_window(run: Callable, block: Callable, window_s: float) -> int:
  """How many steps fill about ``window_s`` seconds (after one warm-up call)."""
  block(run())
  probe = time_window(run, block, 2)
  return max(2, int(window_s / max(probe / 2, 1e-6)))


def compare(
  torch, name: str, repeats: int, window_s: float, peak_gflops: float, device: str
) -> dict:
  config = load_config(*PAIRS[name])
  if name.startswith("galaxy") and _GALAXY_CHANNELS.value:
    config.model.channels = tuple(int(c) for c in _GALAXY_CHANNELS.value)
  if _BATCH.value:
    config.train.batch_size = _BATCH.value
  batch = config.train.batch_size
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  images_uint8 = np.random.default_rng(0).integers(0, 256, (batch,) + shape, dtype=np.uint8)

  t0 = time.perf_counter()
  jax_run, jax_flops = build_jax(name, config, images_uint8)
  jax.block_until_ready(jax_run())
  compile_s = time.perf_counter() - t0
  torch_step = build_torch(torch, name, config, images_uint8, device)
  t_flops = torch_flops(torch, torch_step)

  def torch_at(threads):
    def run():
      torch.set_num_threads(threads)
      return torch_step()

    return run

  default_threads = torch.get_num_threads()
  # side -> variant -> step thunk; PyTorch on CPU is synchronous, so blocking is a no-op for it
  # there.
  if device == "cpu":
    torch_side = (
      {f"{n}_threads": torch_at(n) for n in range(1, default_threads + 1)},
      lambda out: out,
    )
    torch_default = f"{default_threads}_threads"
  else:
    torch_side, torch_default = ({device: torch_step}, lambda out: torch.cuda.synchronize()), device
  sides = {"jax": ({"default": jax_run}, jax.block_until_ready), "torch": torch_side}
  steps = {
    (side, v): steps_for_window(run, block, window_s)
    for side, (runs, block) in sides.items()
    for v, run in runs.items()
  }
  images_per_call = {"jax": config.train.steps_per_dispatch * batch, "torch": batch}
  rates = {key: [] for key in steps}
  for _ in range(repeats):  # alternate every variant of both sides within each repeat
    for side, (runs, block) in sides.items():
      for v, run in runs.items():
        rates[side, v].append(
          steps[side, v] * images_per_call[side] / time_window(run, block, steps[side, v])
        )
  torch.set_num_threads(default_threads)
  median = {key: statistics.median(r) for key, r in rates.items()}
  best = {
    side: max(runs, key=lambda v, side=side: median[side, v]) for side, (runs, _) in sides.items()
  }
  jax_ips, torch_ips = median["jax", best["jax"]], median["torch", best["torch"]]
  jax_gflops = jax_flops / batch * jax_ips / 1e9
  result = {
    "jax_images_per_s": round(jax_ips, 1),
    "torch_images_per_s": round(torch_ips, 1),
    "ratio": round(jax_ips / torch_ips, 2),
    "batch_size": batch,
    "image_shape": list(shape),
    **({"channels": list(config.model.channels)} if "channels" in config.model else {}),
    "jax_mflop_per_image": round(jax_flops / batch / 1e6, 2),
    "torch_mflop_per_image": round(t_flops / batch / 1e6, 2),
    "jax_gflop_per_s": round(jax_gflops, 2),
    "torch_gflop_per_s": round(t_flops / batch * torch_ips / 1e9, 2),
    "jax_fraction_of_matmul_peak": round(jax_gflops / peak_gflops, 3),
    "jax_compile_s": round(compile_s, 1),
    "torch_best": best["torch"],
    "default_settings_ratio": round(median["jax", "default"] / median["torch", torch_default], 2),
    "window_images_per_s": {
      f"{side}/{v}": [round(r, 1) for r in rs] for (side, v), rs in rates.items()
    },
  }
  print(
    f"{name:9s} jax {jax_ips:9.1f} img/s ({jax_gflops:6.1f} GFLOP/s, "
    f"{result['jax_fraction_of_matmul_peak']:.0%} "
    f"of peak)  torch {torch_ips:9.1f} img/s ({result['torch_gflop_per_s']:6.1f} GFLOP/s, "
    f"{best['torch']})  ratio {result['ratio']:.2f} (default settings: "
    f"{result['default_settings_ratio']:.2f})",
    flush=True,
  )
  return result


def main(argv):
  del argv
  try:
    import torch
  except ImportError:
    print(INSTALL_HINT)
    return 0
  torch.manual_seed(0)
  # galaxy_k2's 2×2 convolutions with padding="same" make PyTorch pad a copy of the input and say so
  # once; that copy is part of its step, as XLA's padding is of vae_jax's.
  warnings.filterwarnings("ignore", message="Using padding='same' with even kernel lengths")
  if jax.default_backend() == "cpu":
    device = "cpu"
  elif torch.cuda.is_available():
    device = "cuda"
    # XLA's f32 dots and convolutions on a GPU run as TF32 by default; PyTorch's convolutions do,
    # its matmuls too now.
    torch.set_float32_matmul_precision("high")
  else:
    print(
      f"JAX runs on {jax.default_backend()} but this PyTorch has no CUDA: install a CUDA build of "
      "torch, "
      "or compare on the CPU with JAX_PLATFORMS=cpu."
    )
    return 1
  peak = matmul_peak_gflops()
  threads = f" with {torch.get_num_threads()} threads" if device == "cpu" else ""
  print(
    f"jax {jax.__version__} on {device_name()} ({len(jax.devices())} device(s)), "
    f"torch {torch.__version__} on {device}{threads}; measured f32 matmul peak (jnp.dot): "
    f"{peak:.1f} GFLOP/s",
    flush=True,
  )
  results = {
    name: compare(torch, name, _REPEATS.value, _WINDOW.value, peak, device)
    for name in _MODELS.value
  }
  peak_after = matmul_peak_gflops()
  if (
    peak_after > peak
  ):  # a busy machine lowers the measured peak: keep the higher, rescale the fractions
    for r in results.values():
      r["jax_fraction_of_matmul_peak"] = round(
        r["jax_fraction_of_matmul_peak"] * peak / peak_after, 3
      )
  print(
    f"matmul peak measured again at the end: {peak_after:.1f} GFLOP/s; fractions use the higher "
    "of the two."
  )
  results["matmul_peak_gflop_per_s"] = round(max(peak, peak_after), 1)
  results["device"] = device_name()
  print(json.dumps(results))
  return 0


if __name__ == "__main__":
  app.run(main)
