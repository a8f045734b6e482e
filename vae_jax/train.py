"""Training: the VAE's jitted step and evaluation, ``train_and_evaluate(config, workdir)``, and the shared loop ``fit``.

Randomness: ``root = key(config.seed)`` is split once by purpose into
``init``, ``train``, ``eval`` and ``sample`` keys. Step ``n`` uses
``fold_in(train_key, n)`` (so no key lives in the state and a resumed run
draws exactly the noise an uninterrupted one would); evaluation and sample
grids use fixed keys so numbers and pictures are comparable across steps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from flax.training import train_state

from vae_jax import images, losses, parallel
from vae_jax.checkpoint import Checkpointer, CheckpointMismatchError, has_checkpoint
from vae_jax.config import load_config, save_config, workdir_path
from vae_jax.data.augment import augment
from vae_jax.data.pipeline import (
  Dataset,
  DevicePrefetch,
  StackedBatches,
  build_dataset,
  load_images,
  train_iterator,
)
from vae_jax.models import build_model
from vae_jax.models.vae import PRIOR_PARAMS

log = logging.getLogger(__name__)

Metrics = dict[str, jax.Array]


class TrainState(train_state.TrainState):
  """Flax's train state with ``ema_params``: a moving average of the parameters, or None (no average kept).

  Held-out evaluation, the training grids, sampling and the colouriser's
  VAE inputs use the average when there is one (``params_to_evaluate``);
  training itself only ever reads ``params``, so keeping an average leaves
  the training trajectory as it is.
  """

  ema_params: Any = None


def params_to_evaluate(state: TrainState) -> Any:
  """The parameters a run is judged by: the moving average if the run keeps one, else the latest."""
  return state.params if state.ema_params is None else state.ema_params


def ema_decay(train_cfg: ml_collections.ConfigDict) -> float:
  """``config.train.ema_decay`` (0, no average, for configs saved before it existed)."""
  decay = train_cfg.get("ema_decay", 0.0)
  if not 0.0 <= decay < 1.0:
    raise ValueError(
      f"config.train.ema_decay={decay} must be in [0, 1): 0 keeps no average, 0.99 a typical one."
    )
  return decay


def keeps_ema(train_cfg: ml_collections.ConfigDict) -> bool:
  """Whether the config keeps a moving average of the parameters (``ema_decay`` > 0)."""
  return ema_decay(train_cfg) > 0


def update_ema(ema_params: Any, params: Any, step: jax.Array, decay: float) -> Any:
  """One step of the parameters' exponential moving average, ``ema ← d·ema + (1 − d)·params``.

  ``d = min(decay, (1 + step) / (10 + step))``: early on, when the
  parameters move fastest, the average follows them closely instead of
  dragging the initial values along for ~1/(1 − decay) steps.
  """
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema_params, params)


class NonFiniteLossError(FloatingPointError):
  """The training loss or its gradient became NaN or infinite."""


class TrainingInterrupted(Exception):
  """SIGINT (Ctrl-C) or SIGTERM stopped training; a checkpoint of the step reached was saved."""


class _StopSignals:
  """Notes SIGINT/SIGTERM during training so that the loop can stop between two steps.

  A signal may arrive anywhere, e.g. after the data iterator has handed out
  a batch but before the step that uses it ran; acting on it only between
  steps keeps the saved parameters and data position in step, so the
  resumed run still ends with exactly the parameters of an unbroken one. A
  second Ctrl-C interrupts at once. With several processes the signals are
  left as they are: every process takes part in a save, and only one of
  them may have been signalled.
  """

  def __init__(self):
    self.received: str | None = None
    self._previous = {}

  def __enter__(self) -> _StopSignals:
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = {
        sig: signal.signal(sig, self._note) for sig in (signal.SIGINT, signal.SIGTERM)
      }
    return self

  def _note(self, signum, frame) -> None:
    del frame
    self.received = signal.Signals(signum).name
    signal.signal(signal.SIGINT, self._previous[signal.SIGINT])

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def split_root_key(seed: int) -> dict[str, jax.Array]:
  """One key per purpose, derived once from the run's seed."""
  init, train, eval_, sample = jax.random.split(jax.random.key(seed), 4)
  return {"init": init, "train": train, "eval": eval_, "sample": sample}


def _optimizer_labels(params: Any) -> Any:
  """``"prior"`` for the learned prior's parameters (``PRIOR_PARAMS``), ``"net"`` for the rest."""
  return {
    k: jax.tree.map(lambda _, k=k: "prior" if k in PRIOR_PARAMS else "net", v)
    for k, v in params.items()
  }


def _weight_decayed(params: Any) -> Any:
  """True for every parameter but a learned likelihood's ``log_scale`` (see ``make_optimizer``)."""
  return {k: jax.tree.map(lambda _, k=k: k != "log_scale", v) for k, v in params.items()}


def make_optimizer(
  opt_cfg: ml_collections.ConfigDict, total_steps: int
) -> optax.GradientTransformation:
  """Adam(W) with linear warm-up, then cosine decay or constant, and global-norm clipping.

  A learned prior's mean and scale (``vae_jax.models.vae.VAE.learned_prior``)
  get their own plain Adam at ``opt_cfg.prior_learning_rate``: only the KL
  moves them, and it has to bring them to the codes' mean and spread, units
  of order 1 away, within a few hundred steps; Adam at the network's learning
  rate (1e-3, decaying) moves a parameter by at most about that per step.

  Weight decay regularises the encoder and decoder only: a learned
  likelihood's log σ (``gaussian_learned``) is a parameter of the density,
  and decay would pull it towards σ = 1 and bias every likelihood figure.
  """
  warmup = min(opt_cfg.warmup_steps, max(total_steps - 1, 0))
  if opt_cfg.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(
      0.0,
      opt_cfg.learning_rate,
      warmup,
      max(total_steps, warmup + 1),
      end_value=opt_cfg.learning_rate * 0.01,
    )
  elif opt_cfg.schedule == "constant":
    lr = optax.constant_schedule(opt_cfg.learning_rate)
    if warmup:
      lr = optax.join_schedules(
        [optax.linear_schedule(0.0, opt_cfg.learning_rate, warmup), lr], [warmup]
      )
  else:
    raise ValueError(
      f"Unknown config.opt.schedule {opt_cfg.schedule!r}; choose cosine or constant."
    )
  net = optax.chain(
    optax.clip_by_global_norm(opt_cfg.grad_clip),
    optax.adamw(lr, weight_decay=opt_cfg.weight_decay, mask=_weight_decayed),
  )
  prior = optax.adam(opt_cfg.get("prior_learning_rate", 1e-2))
  return optax.multi_transform({"net": net, "prior": prior}, _optimizer_labels)


def create_train_state(
  model: nn.Module,
  tx: optax.GradientTransformation,
  image_shape: tuple[int, ...],
  key: jax.Array,
  keep_ema: bool = False,
) -> TrainState:
  """Initialise parameters (jitted, so init costs one compile, not eager op-by-op).

  With ``keep_ema`` the state also holds a moving average of the parameters, starting at them.
  """

  @jax.jit
  def init(key):
    dummy = jnp.zeros((1,) + tuple(image_shape), jnp.uint8)
    params = model.init(key, dummy, jax.random.key(0))["params"]
    state = TrainState.create(
      apply_fn=model.apply, params=params, tx=tx, ema_params=params if keep_ema else None
    )
    # A strongly typed step: a restored checkpoint's step is int32, not weak, and a weak one here
    # would make the train step compile a second time after a restore.
    return state.replace(step=jnp.zeros((), jnp.int32))

  return init(key)


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(train_cfg: ml_collections.ConfigDict) -> jnp.dtype:
  """The activations' dtype ``config.train.compute_dtype`` names (float32 when the config has none)."""
  name = train_cfg.get("compute_dtype", "float32")
  if name not in COMPUTE_DTYPES:
    raise ValueError(
      f"Unknown config.train.compute_dtype {name!r}; choose one of {sorted(COMPUTE_DTYPES)}."
    )
  return COMPUTE_DTYPES[name]


def cast_for_compute(params: Any, dtype: jnp.dtype) -> Any:
  """Encoder and decoder parameters in ``dtype``; the likelihood's own scale parameter stays float32.

  The cast sits inside the differentiated function, so gradients, the
  optimiser state and the stored parameters stay float32 (mixed precision).
  """
  if dtype == jnp.float32:
    return params
  cast = lambda tree: jax.tree.map(lambda p: p.astype(dtype), tree)
  return {k: cast(v) if k in ("encoder", "decoder") else v for k, v in params.items()}


def elbo_terms(
  model: nn.Module,
  params: Any,
  x_uint8: jax.Array,
  key: jax.Array,
  likelihood: str,
  discretized: bool,
) -> dict[str, jax.Array]:
  """Per-image reconstruction NLL and per-dimension KL for one posterior sample (float32 whatever the compute dtype)."""
  out = {k: v.astype(jnp.float32) for k, v in model.apply({"params": params}, x_uint8, key).items()}
  rec = losses.reconstruction_nll(
    likelihood, x_uint8, out["decoded"], out["log_scale"], discretized
  )
  return {"rec": rec, "kl_BZ": losses.gaussian_kl(out["mean"], out["logvar"]), **out}


def jit_steps(step: Callable, steps_per_dispatch: int = 1) -> Callable:
  """Jit ``step(state, batch, *rest) -> (state, metrics)`` with the state donated.

  With ``steps_per_dispatch`` k > 1 the compiled program takes k batches
  stacked k×B×… and runs the k steps in a ``lax.scan``: one dispatch, one
  host round trip and one launch instead of k, which pays where a step is
  short (small models, accelerators); on a 2-core CPU it gains a few percent
  for the MLP and ~10 % for the conv VAE's banded-matmul convolutions, but
  slowed XLA's own small convolutions down (BENCHMARKS.md). The steps are the same
  computation, so the parameters match those of k single steps; the metrics
  are the last step's.
  """
  if steps_per_dispatch == 1:
    return jax.jit(step, donate_argnums=0)

  def steps(state, batches, *rest):
    state, metrics = jax.lax.scan(lambda s, batch: step(s, batch, *rest), state, batches)
    return state, jax.tree.map(lambda m: m[-1], metrics)

  return jax.jit(steps, donate_argnums=0)


def make_train_step(model: nn.Module, config: ml_collections.ConfigDict) -> Callable:
  """One jitted, state-donating step: ``step(state, batch_uint8, train_key) -> (state, metrics)``.

  With ``config.train.steps_per_dispatch`` k > 1 it takes k stacked batches
  and runs k steps (``jit_steps``).

  A state that keeps a moving average of the parameters (``create_train_state(keep_ema=True)``) has it
  updated after every step with ``config.train.ema_decay`` (``update_ema``).

  ``config.train.compute_dtype="bfloat16"`` runs the model's activations in
  bf16 (parameters cast inside the step) while parameters, gradients, the
  optimiser and the loss stay float32. Called with a state replicated over a
  mesh and a batch split along its ``data`` axis (``vae_jax.parallel``), the
  same program runs data-parallel: XLA adds the gradient all-reduce.
  """
  loss_cfg = config.loss
  decay = ema_decay(config.train)
  dtype = compute_dtype(config.train)
  if dtype != jnp.float32:
    model = model.clone(compute_dtype=dtype)

  def loss_fn(params, x, key, step):
    terms = elbo_terms(
      model, cast_for_compute(params, dtype), x, key, loss_cfg.likelihood, discretized=False
    )
    kl_objective = losses.kl_with_free_bits(terms["kl_BZ"], loss_cfg.free_bits)
    weight = losses.kl_weight(step, loss_cfg.beta, loss_cfg.warmup_steps)
    loss = jnp.mean(terms["rec"] + weight * kl_objective)
    recon = losses.mean_image(loss_cfg.likelihood, terms["decoded"])
    metrics = {
      "loss": loss,
      "rec_nats": jnp.mean(terms["rec"]),
      "kl_nats": jnp.mean(terms["kl_BZ"].sum(-1)),
      "kl_weight": weight,
      "psnr_db": jnp.mean(losses.psnr(x, recon)),
      "log_scale": terms["log_scale"],
    }
    return loss, metrics

  def step(
    state: TrainState, x_uint8: jax.Array, train_key: jax.Array
  ) -> tuple[TrainState, Metrics]:
    key = jax.random.fold_in(train_key, state.step)
    z_key, augment_key = jax.random.split(key)
    x_uint8 = augment(x_uint8, augment_key, config.data)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, x_uint8, z_key, state.step)
    metrics["grad_norm"] = optax.tree.norm(grads)
    new_state = state.apply_gradients(grads=grads)
    if state.ema_params is not None:
      new_state = new_state.replace(
        ema_params=update_ema(state.ema_params, new_state.params, state.step, decay)
      )
    return new_state, metrics

  return jit_steps(step, steps_per_dispatch(config.train))


def steps_per_dispatch(train_cfg: ml_collections.ConfigDict) -> int:
  """``config.train.steps_per_dispatch`` (1 for configs saved before it existed)."""
  return train_cfg.get("steps_per_dispatch", 1)


def make_eval_step(model: nn.Module, config: ml_collections.ConfigDict) -> Callable:
  """Jitted ``eval_step(params, batch_uint8, mask, key) -> sums`` of per-image metrics.

  −ELBO uses the discretised likelihood (nats of the 8-bit data) and β = 1,
  whatever β training used; PSNR and the squared error are of the
  posterior-mean reconstruction.
  """
  likelihood = config.loss.likelihood

  def eval_step(params, x_uint8, mask, key):
    terms = elbo_terms(
      model, params, x_uint8, key, likelihood, discretized=likelihood != "bernoulli"
    )
    recon = losses.mean_image(
      likelihood, model.apply({"params": params}, terms["mean"], method=model.decode)
    )
    kl = terms["kl_BZ"].sum(-1)
    mse = losses.squared_error(x_uint8, recon)
    per_image = {
      "neg_elbo_nats": terms["rec"] + kl,
      "rec_nats": terms["rec"],
      "kl_nats": kl,
      "psnr_db": losses.psnr_of_mse(mse),
      "mse": mse,
    }
    sums = {k: jnp.sum(v * mask) for k, v in per_image.items()}
    sums["kl_per_dim"] = jnp.sum(terms["kl_BZ"] * mask[:, None], axis=0)
    return sums

  return jax.jit(eval_step)


def fixed_size_batches(images_NHWC: np.ndarray, batch_size: int):
  """``(batch, count)`` over ``images_NHWC``: batches of one size, so that a jitted step compiles once.

  The last batch is zero-padded; ``count`` says how many of its images are real.
  """
  for start in range(0, len(images_NHWC), batch_size):
    batch = images_NHWC[start : start + batch_size]
    padding = np.zeros((batch_size - len(batch),) + batch.shape[1:], batch.dtype)
    yield np.concatenate([batch, padding]), len(batch)


def batch_means(
  eval_step: Callable, params: Any, images_NHWC: np.ndarray, batch_size: int, key: jax.Array
) -> dict[str, np.ndarray]:
  """Means over ``images_NHWC`` of the per-image sums ``eval_step(params, batch, mask, key)`` returns.

  The padding of the last batch is masked out; batch ``i`` gets the key ``fold_in(key, i)``.
  """
  totals: dict[str, Any] = {}
  for i, (batch, count) in enumerate(
    fixed_size_batches(images_NHWC, min(batch_size, len(images_NHWC)))
  ):
    mask = (np.arange(len(batch)) < count).astype(np.float32)
    sums = eval_step(params, batch, mask, jax.random.fold_in(key, i))
    totals = sums if not totals else jax.tree.map(jnp.add, totals, sums)
  return {k: np.asarray(v) / len(images_NHWC) for k, v in totals.items()}


def evaluate(
  eval_step: Callable, params: Any, images_NHWC: np.ndarray, batch_size: int, key: jax.Array
) -> dict:
  """The VAE's held-out metrics (``make_eval_step``) with bits per dimension, pooled PSNR and each latent's KL.

  Two PSNRs, since both are in use: ``psnr_db`` is the mean of the per-image
  PSNRs; ``pooled_psnr_db`` is the PSNR of the mean squared error over every
  pixel of the split. The mean of logs rewards images that are already easy,
  so on data whose images differ in difficulty (galaxies: a bright core on a
  dark sky, or mostly sky) ``psnr_db`` is the higher by up to ~2 dB.
  """
  result = batch_means(eval_step, params, images_NHWC, batch_size, key)
  dims = int(np.prod(images_NHWC.shape[1:]))
  out = {k: float(v) for k, v in result.items() if k != "kl_per_dim"}
  out["pooled_psnr_db"] = float(losses.psnr_of_mse(out["mse"]))
  out["bits_per_dim"] = float(losses.bits_per_dim(out["neg_elbo_nats"], dims))
  out["kl_per_dim"] = [round(float(v), 4) for v in result["kl_per_dim"]]
  return out


def make_picture_fn(model: nn.Module, likelihood: str, num_prior: int) -> Callable:
  """Jitted ``(params, images_uint8, key) -> (recon01, prior01)``: posterior-mean reconstructions and prior samples."""

  def pictures(params, x_uint8, key):
    def decode(z):
      return losses.mean_image(likelihood, model.apply({"params": params}, z, method=model.decode))

    mean, _ = model.apply({"params": params}, x_uint8, method=model.encode)
    return decode(mean), decode(jax.random.normal(key, (num_prior, mean.shape[-1])))

  return jax.jit(pictures)


def training_grids(
  picture_fn: Callable, params: Any, val_images: np.ndarray, key: jax.Array
) -> dict:
  """Inputs with their reconstructions on the row below, and a square of prior samples."""
  recon, prior = (images.to_uint8(a) for a in picture_fn(params, val_images, key))
  tiles = images.interleave_rows([val_images, recon], math.ceil(math.sqrt(len(val_images))))
  return {
    "recon": images.make_grid(tiles.reshape((-1,) + tiles.shape[2:]), tiles.shape[1]),
    "prior": images.make_grid(prior, math.ceil(math.sqrt(len(prior)))),
  }


def _check_compatible(config: ml_collections.ConfigDict, workdir: Path) -> None:
  """Refuse to resume a workdir written with another task, model, image shape, split or averaging.

  Averaging: a moving average of the parameters kept then but not now, or
  the reverse. Split: ``seed`` and ``data.val_fraction`` choose the held-out
  images, and with other values the resumed run would be scored on images
  it had trained on (the seed also sets every later step's keys).

  A workdir without a checkpoint has nothing to resume (a start stopped
  before its first checkpoint leaves at most its config.json): it is started
  again with the new config.
  """
  if not (workdir / "config.json").exists() or not has_checkpoint(workdir / "checkpoints"):
    return
  saved = load_config(workdir)
  if saved.get("task", "vae") != config.get("task", "vae"):
    raise CheckpointMismatchError(
      f"{workdir} holds a {saved.get('task', 'vae')!r} run, not a {config.get('task', 'vae')!r} one. "
      "Choose a new --workdir."
    )
  if keeps_ema(saved.train) != keeps_ema(config.train):
    raise CheckpointMismatchError(
      f"{workdir} holds a run {'with' if keeps_ema(saved.train) else 'without'} a moving average of the "
      f"parameters (config.train.ema_decay={ema_decay(saved.train)}); resume it with the same setting, "
      "or choose a new --workdir."
    )
  if saved.get("seed") != config.get("seed"):
    raise CheckpointMismatchError(
      f"{workdir} holds a run with config.seed={saved.get('seed')}, not {config.get('seed')}: the seed chooses "
      "the held-out images and every step's keys. Resume it with the same seed, or choose a new --workdir."
    )
  for group, keys in (
    ("model", None),
    ("data", ("image_size", "channels", "val_fraction")),
    ("loss", ("likelihood",)),
  ):
    old, new = json.loads(saved[group].to_json()), json.loads(config[group].to_json())
    if keys:
      old, new = {k: old.get(k) for k in keys}, {k: new.get(k) for k in keys}
    if old != new:
      diff = {k: (old.get(k), new.get(k)) for k in set(old) | set(new) if old.get(k) != new.get(k)}
      raise CheckpointMismatchError(
        f"{workdir} holds a run with a different config.{group} (saved vs now: {diff}). "
        "Use the same config to resume it, or choose a new --workdir."
      )


def _check_steps_per_dispatch(train_cfg: ml_collections.ConfigDict) -> None:
  """Every step the loop stops at (logs, evaluations, checkpoints, the end) must end a dispatch."""
  k = steps_per_dispatch(train_cfg)
  names = ("steps", "log_every", "eval_every", "ckpt_every")
  bad = [f"{n}={train_cfg[n]}" for n in names if k < 1 or train_cfg[n] % k]
  if bad:
    raise ValueError(
      f"config.train.steps_per_dispatch={k} must be ≥ 1 and divide config.train's {', '.join(names)} "
      f"({', '.join(bad)} {'does' if len(bad) == 1 else 'do'} not)."
    )


class _RunLog:
  """metrics.jsonl + TensorBoard event files, written by process 0 only."""

  def __init__(self, workdir: Path):
    self.enabled = jax.process_index() == 0
    if self.enabled:
      # Imported here, not with the module: tensorboardX imports PyTorch when it is installed (~2 s), which
      # bin/sample.py and bin/evaluate.py, importing this module but writing no logs, need not pay.
      from tensorboardX import SummaryWriter

      self.jsonl = open(workdir / "metrics.jsonl", "a")
      self.tb = SummaryWriter(str(workdir / "tensorboard"))

  def scalars(self, step: int, split: str, metrics: dict) -> None:
    if not self.enabled:
      return
    record = {"step": step, "split": split, **metrics}
    self.jsonl.write(json.dumps(record) + "\n")
    self.jsonl.flush()
    for k, v in metrics.items():
      if isinstance(v, (int, float)):
        self.tb.add_scalar(f"{split}/{k}", v, step)

  def pictures(self, step: int, grids: dict[str, np.ndarray], samples_dir: Path) -> None:
    if not self.enabled:
      return
    from tensorboardX.proto.summary_pb2 import Summary  # with SummaryWriter, see __init__

    samples_dir.mkdir(parents=True, exist_ok=True)
    for name, grid in grids.items():
      # Encoded once, at zlib's fastest level, for both files and TensorBoard: a 256×256 model's grids
      # are megapixels: twice at the default level took 1.8 s of every galaxy evaluation on a 2-core CPU.
      png = images.encode_png(grid, fast=True)
      for path in (samples_dir / f"{name}_{step:06d}.png", samples_dir / f"{name}.png"):
        path.write_bytes(png)
      image = Summary.Image(
        height=grid.shape[0],
        width=grid.shape[1],
        colorspace=grid.shape[2],
        encoded_image_string=png,
      )
      self.tb.file_writer.add_summary(Summary(value=[Summary.Value(tag=name, image=image)]), step)
    self.tb.flush()

  def close(self) -> None:
    if self.enabled:
      self.jsonl.close()
      self.tb.close()


@dataclasses.dataclass(frozen=True)
class Task:
  """What one kind of model brings to the shared training loop, ``fit``.

  Attributes:
    state: the freshly initialised train state (replaced by the checkpoint on resume).
    train_step: jitted ``(state, batch_uint8, train_key) -> (state, metrics)``;
      ``metrics`` holds at least ``loss`` and ``psnr_db``.
    evaluate: ``params -> dict`` of held-out metrics, logged as split ``val``.
    pictures: ``params -> {name: uint8 H×W×3 grid}``, drawn with fixed keys.
    summary: one log line from ``evaluate``'s result.
    divergence_hint: what to change when the loss stops being finite.
  """

  state: TrainState
  train_step: Callable[[TrainState, np.ndarray, jax.Array], tuple[TrainState, Metrics]]
  evaluate: Callable[[Any], dict]
  pictures: Callable[[Any], dict[str, np.ndarray]]
  summary: Callable[[dict], str]
  divergence_hint: str


# (config, dataset, keys from split_root_key, held-out images) -> Task
TaskBuilder = Callable[[ml_collections.ConfigDict, Dataset, dict[str, jax.Array], np.ndarray], Task]


def vae_task(
  config: ml_collections.ConfigDict,
  dataset: Dataset,
  keys: dict[str, jax.Array],
  val_images: np.ndarray,
) -> Task:
  """The VAE's model, ELBO step, evaluation and reconstruction/prior grids."""
  model = build_model(config.model, config.loss, dataset.image_shape)
  state = create_train_state(
    model,
    make_optimizer(config.opt, config.train.steps),
    dataset.image_shape,
    keys["init"],
    keep_ema=keeps_ema(config.train),
  )
  eval_step = make_eval_step(model, config)
  grid_images = val_images[: config.train.num_grid_images]
  picture_fn = make_picture_fn(model, config.loss.likelihood, num_prior=max(16, len(grid_images)))
  return Task(
    state=state,
    train_step=make_train_step(model, config),
    evaluate=lambda params: evaluate(
      eval_step, params, val_images, config.train.eval_batch_size, keys["eval"]
    ),
    pictures=lambda params: training_grids(picture_fn, params, grid_images, keys["sample"]),
    summary=lambda r: (
      f"-ELBO {r['neg_elbo_nats']:.1f} nats ({r['bits_per_dim']:.3f} bits/dim), "
      f"PSNR {r['psnr_db']:.2f} dB (pooled {r['pooled_psnr_db']:.2f} dB)"
    ),
    divergence_hint="Try a lower --config.opt.learning_rate, a smaller --config.opt.grad_clip, "
    "a larger --config.loss.scale, or a KL warm-up (--config.loss.warmup_steps).",
  )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> TrainState:
  """Train the VAE ``config`` describes in ``workdir``, resuming from its latest checkpoint if there is one.

  The workdir receives ``config.json``, ``checkpoints/``, ``metrics.jsonl``,
  ``tensorboard/`` event files and ``samples/training/*.png`` grids (fixed keys).

  Returns:
    The final train state.

  Raises:
    NonFiniteLossError: the loss or the gradient became NaN/inf; the last good checkpoint stays.
    CheckpointMismatchError: the workdir belongs to a different model.
  """
  return fit(config, workdir, vae_task)


def fit(
  config: ml_collections.ConfigDict, workdir: str | Path, build_task: TaskBuilder
) -> TrainState:
  """The training loop every model shares: data, resume, steps, logs, evaluation, pictures, checkpoints.

  ``build_task`` supplies what differs between models (see ``Task``); the
  rest (the resumable data stream, the exact-resume checkpoints, the metrics
  JSONL and TensorBoard files, the progress bar, the stop on a non-finite
  loss or gradient) is the same for all. ``config`` needs the groups ``data``, ``model``,
  ``opt``, ``train`` and ``seed``.

  Returns:
    The final train state.

  Raises:
    NonFiniteLossError: the loss or the gradient became NaN/inf; the last good checkpoint stays.
    CheckpointMismatchError: the workdir belongs to a different model.
    TrainingInterrupted: SIGINT/SIGTERM (one process); the step reached was saved first.
  """
  workdir = workdir_path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise ValueError(f"--workdir {workdir} is a file, not a directory; choose another --workdir.")
  workdir.mkdir(parents=True, exist_ok=True)
  _check_compatible(config, workdir)

  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.train.batch_size, mesh.devices.size)
  parallel.warn_unless_deterministic_gpu_kernels(config.train.get("deterministic", True))
  _check_steps_per_dispatch(config.train)
  dataset: Dataset = build_dataset(config, workdir)
  keys = split_root_key(config.seed)
  total = config.train.steps
  val_images = load_images(
    dataset.val, dataset.preprocess, config.train.max_eval_images, desc="validation images"
  )
  task = build_task(config, dataset, keys, val_images)
  # Only now that the config has built a dataset and a model: a resume that fails on a bad value
  # (a misspelt data source, say) must not replace the run's config.json, which sample.py and
  # evaluate.py rebuild the model from.
  if jax.process_index() == 0:
    save_config(config, workdir)
  # Replicated over the mesh first, so a checkpoint is restored straight into that sharding (with
  # several processes, each reads its own copy; moving a restored local array would need cross-host copies).
  state = parallel.replicate(task.state, mesh)
  per_dispatch = steps_per_dispatch(config.train)
  batches = train_iterator(dataset, config.train.batch_size, config.seed, config.data.worker_count)
  if per_dispatch > 1:
    batches = StackedBatches(batches, per_dispatch)
  data_iter = DevicePrefetch(
    batches, sharding=parallel.batch_sharding(mesh, stacked=per_dispatch > 1)
  )

  ckpt = Checkpointer(workdir / "checkpoints", keep=config.train.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state, data_iter)
    log.info("Resumed from step %d in %s.", int(state.step), ckpt.directory)
  start = int(state.step)
  if start % per_dispatch:
    raise ValueError(
      f"The checkpoint is at step {start}, not a multiple of config.train.steps_per_dispatch={per_dispatch}; "
      "resume with a steps_per_dispatch that divides it."
    )

  run_log = _RunLog(workdir)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  log.info(
    "%s: %d parameters; %d train / %d val images of %s from %s; %d %s device(s).",
    config.model.name,
    n_params,
    len(dataset.train_indices),
    len(dataset.val_indices),
    dataset.image_shape,
    config.data.source,
    mesh.devices.size,
    jax.devices()[0].platform,
  )

  def run_eval(step: int) -> None:
    if len(val_images):
      params = params_to_evaluate(state)
      result = task.evaluate(params)
      run_log.scalars(step, "val", result)
      log.info(
        "step %d val%s: %s",
        step,
        " (moving average)" if state.ema_params is not None else "",
        task.summary(result),
      )
      run_log.pictures(step, task.pictures(params), workdir / "samples" / "training")

  def check_finite(metrics: Metrics, step: int) -> dict:
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    # The gradient too: a finite loss with a non-finite gradient has already made the new parameters NaN.
    bad = [k for k in ("loss", "grad_norm") if k in values and not math.isfinite(values[k])]
    if bad:
      last = ckpt.latest_step()
      raise NonFiniteLossError(
        f"The {' and '.join(k.replace('_', ' ') for k in bad)} became "
        f"{' and '.join(str(values[k]) for k in bad)} at step {step}. "
        + (
          f"The last good checkpoint (step {last}) in {ckpt.directory} is intact. "
          if last is not None
          else ""
        )
        + task.divergence_hint
      )
    return values

  bar = tqdm.tqdm(
    total=total,
    initial=start,
    desc="train",
    unit="step",
    dynamic_ncols=True,
    disable=jax.process_index() != 0,
  )
  t_last, step_last, announced = time.perf_counter(), start, False
  window = parallel.dispatch_window(mesh)
  try:
    with _StopSignals() as stop:
      for step in range(start, total, per_dispatch):
        state, metrics = task.train_step(state, next(data_iter), keys["train"])
        window.add(metrics)
        done = step + per_dispatch
        bar.update(per_dispatch)
        if done % config.train.log_every == 0 or done == total:
          values = check_finite(metrics, done)
          now = time.perf_counter()
          values["images_per_s"] = (done - step_last) * config.train.batch_size / (now - t_last)
          t_last, step_last = now, done
          run_log.scalars(done, "train", values)
          bar.set_postfix(
            loss=f"{values['loss']:.4g}",
            psnr=f"{values['psnr_db']:.1f}",
            img_s=f"{values['images_per_s']:.0f}",
          )
          if not announced and done - start > config.train.log_every:
            remaining = (total - done) * config.train.batch_size / values["images_per_s"]
            log.info(
              "%s: %.1f images/s; about %.1f min left for %d steps.",
              jax.devices()[0].platform,
              values["images_per_s"],
              remaining / 60,
              total - done,
            )
            announced = True
        if done % config.train.eval_every == 0 or done == total:
          run_eval(done)
        if done % config.train.ckpt_every == 0 or done == total:
          check_finite(metrics, done)
          ckpt.save(done, state, data_iter)
        if done % config.train.eval_every == 0 or done % config.train.ckpt_every == 0:
          # Keep evaluation and saving out of the images/s figure.
          jax.block_until_ready(state.params)
          t_last, step_last = time.perf_counter(), done
        if stop.received and done < total:
          if done % config.train.ckpt_every:
            check_finite(metrics, done)
            ckpt.save(done, state, data_iter)
          raise TrainingInterrupted(
            f"Stopped by {stop.received} at step {done} of {total}; its checkpoint is in {ckpt.directory}. "
            "Re-run the same command to resume."
          )
  finally:
    bar.close()
    ckpt.wait()
    ckpt.close()
    run_log.close()
  return state
