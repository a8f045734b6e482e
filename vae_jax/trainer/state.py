"""The train state, its optimiser and the jitted step: everything a task's loss needs to train.

Nothing here knows what is trained: a task gives a loss function and
initial parameters; the model says how its parameters group for the
optimiser (``ParamGroups``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from vae_jax.data.pipeline import Rows

Metrics = dict[str, jax.Array]
# (params, batch, key, step, constants) -> (loss, metrics); metrics hold at least ``psnr_db``.
LossFn = Callable[[Any, jax.Array, jax.Array, jax.Array, Any], tuple[jax.Array, Metrics]]

# The optimiser's two groups: the configured schedule for most parameters, and a plain Adam at
# config.opt.prior_learning_rate for those a model puts in "prior" (``ParamGroups.labels``).
MAIN_GROUP, OWN_ADAM_GROUP = "net", "prior"


class TrainState(train_state.TrainState):
  """Flax's train state with ``ema_params``: a moving average of the parameters, or None.

  Held-out evaluation, the training grids and everything that reads the run
  later use the average when there is one (``params_to_evaluate``);
  training itself only reads ``params``, so keeping an average leaves the
  training trajectory as it is.
  """

  ema_params: Any = None


def params_to_evaluate(state: TrainState) -> Any:
  """The parameters a run is judged by: the moving average if the run keeps one, else the latest."""
  return state.params if state.ema_params is None else state.ema_params


def update_ema(ema_params: Any, params: Any, step: jax.Array, decay: float) -> Any:
  """One step of the parameters' exponential moving average, ``ema ← d·ema + (1 − d)·params``.

  ``d = min(decay, (1 + step) / (10 + step))``: early on, when the
  parameters move fastest, the average follows them closely instead of
  dragging the initial values along for ~1/(1 − decay) steps.
  """
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema_params, params)


def _all_main(params: Any) -> Any:
  return jax.tree.map(lambda _: MAIN_GROUP, params)


def _all_decayed(params: Any) -> Any:
  return jax.tree.map(lambda _: True, params)


@dataclasses.dataclass(frozen=True)
class ParamGroups:
  """Optimiser groups: the model declares it, the trainer applies it.

  Attributes:
    labels: ``params -> tree of group names`` (``MAIN_GROUP`` or ``OWN_ADAM_GROUP``).
    decayed: ``params -> tree of bools``: whether weight decay acts on each parameter.
  """

  labels: Callable[[Any], Any] = _all_main
  decayed: Callable[[Any], Any] = _all_decayed


def make_optimizer(
  opt_cfg: ml_collections.ConfigDict, total_steps: int, groups: ParamGroups = ParamGroups()
) -> optax.GradientTransformation:
  """Adam(W) with linear warm-up, then cosine decay or constant, and global-norm clipping.

  Parameters in the ``OWN_ADAM_GROUP`` get a plain Adam at
  ``opt_cfg.prior_learning_rate`` instead; weight decay acts where
  ``groups.decayed`` says.
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
  else:
    lr = optax.constant_schedule(opt_cfg.learning_rate)
    if warmup:
      lr = optax.join_schedules(
        [optax.linear_schedule(0.0, opt_cfg.learning_rate, warmup), lr], [warmup]
      )
  main = optax.chain(
    optax.clip_by_global_norm(opt_cfg.grad_clip),
    optax.adamw(lr, weight_decay=opt_cfg.weight_decay, mask=groups.decayed),
  )
  own = optax.adam(opt_cfg.prior_learning_rate)
  return optax.multi_transform({MAIN_GROUP: main, OWN_ADAM_GROUP: own}, groups.labels)


def create_train_state(
  init_params: Callable[[jax.Array], Any],
  tx: optax.GradientTransformation,
  key: jax.Array,
  keep_ema: bool = False,
) -> TrainState:
  """The initial state from ``init_params(key)`` (jitted: one compile, not eager op-by-op).

  With ``keep_ema`` the state also holds a moving average of the parameters, starting at them.
  """

  @jax.jit
  def init(key):
    params = init_params(key)
    state = TrainState.create(
      apply_fn=None, params=params, tx=tx, ema_params=params if keep_ema else None
    )
    # A strongly typed step: a restored checkpoint's step is int32, not weak, and a weak one here
    # would make the train step compile a second time after a restore.
    return state.replace(step=jnp.zeros((), jnp.int32))

  return init(key)


def jit_steps(step: Callable, steps_per_dispatch: int = 1) -> Callable:
  """Jit ``step(state, batch, *rest) -> (state, metrics)`` with the state donated.

  With ``steps_per_dispatch`` k > 1 the compiled program takes k batches
  stacked k×B×… and runs the k steps in a ``lax.scan``: one dispatch, one
  host round trip and one launch instead of k, which pays where a step is
  short (small models, accelerators). The steps are the same computation,
  so the parameters match those of k single steps; the metrics are the
  last step's. A batch may come as ``Rows`` of images held on the device.
  """

  def steps(state, batches, *rest):
    if isinstance(batches, Rows):  # images held on the device: gathered in this program
      batches = batches.gather()
    if steps_per_dispatch == 1:
      return step(state, batches, *rest)
    state, metrics = jax.lax.scan(lambda s, batch: step(s, batch, *rest), state, batches)
    return state, jax.tree.map(lambda m: m[-1], metrics)

  return jax.jit(steps, donate_argnums=0)


def make_train_step(loss: LossFn, ema_decay: float = 0.0, steps_per_dispatch: int = 1) -> Callable:
  """One jitted, state-donating ``step(state, batch, train_key, constants) -> (state, metrics)``.

  Step ``n`` gives ``loss`` the key ``fold_in(train_key, n)``; ``constants``
  (e.g. a frozen network's parameters) are an argument, not baked into the
  program. A state that keeps a moving average has it updated after every
  step (``update_ema``). Called with a state replicated over a mesh and a
  batch split along its ``data`` axis (``vae_jax.parallel``), the same
  program runs data-parallel: XLA adds the gradient all-reduce.
  """

  def step(state: TrainState, batch: jax.Array, train_key: jax.Array, constants: Any = None):
    key = jax.random.fold_in(train_key, state.step)
    grads, metrics = jax.grad(loss, has_aux=True)(state.params, batch, key, state.step, constants)
    metrics["grad_norm"] = optax.tree.norm(grads)
    new_state = state.apply_gradients(grads=grads)
    if state.ema_params is not None:
      new_state = new_state.replace(
        ema_params=update_ema(state.ema_params, new_state.params, state.step, ema_decay)
      )
    return new_state, metrics

  return jit_steps(step, steps_per_dispatch)
