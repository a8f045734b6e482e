"""A trainer that knows nothing about VAEs: the loop, the train state, checkpoints and the run log.

Tasks (``vae_jax.tasks``) build on it; nothing that only looks inside a
trained run imports it.
"""

from vae_jax.trainer.checkpointer import Checkpointer
from vae_jax.trainer.loop import Task, TaskSpec, fit
from vae_jax.trainer.state import (
  ParamGroups,
  TrainState,
  create_train_state,
  make_optimizer,
  make_train_step,
  params_to_evaluate,
)

__all__ = [
  "Checkpointer",
  "ParamGroups",
  "Task",
  "TaskSpec",
  "TrainState",
  "create_train_state",
  "fit",
  "make_optimizer",
  "make_train_step",
  "params_to_evaluate",
]
