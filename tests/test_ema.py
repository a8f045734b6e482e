"""A moving average of the parameters (``ema_decay``): its recurrence; runs are judged by it."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from conftest import load_config, vae_training

from vae_jax.config import resolve
from vae_jax.errors import CheckpointMismatchError
from vae_jax.evaluation import evaluate_workdir
from vae_jax.inference import open_run
from vae_jax.tasks.vae import train_and_evaluate

DECAY = 0.9


def _config(steps: int = 6):
  config = load_config("faces_mlp")
  config.train.ema_decay = DECAY
  config.train.steps = steps
  config.opt.schedule = "constant"  # so that a longer run extends a shorter one (resume test)
  return config


def _leaves(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_the_average_follows_its_recurrence_and_leaves_training_as_it_is():
  config = _config()
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  batches = np.random.default_rng(0).integers(
    0, 256, (3, config.train.batch_size) + shape, dtype=np.uint8
  )

  def run(keep_ema: bool):
    config.train.ema_decay = DECAY if keep_ema else 0.0
    _, state, step = vae_training(config, total_steps=10)
    history = [_leaves(state.params)]
    for batch in batches:
      state, _ = step(state, batch, jax.random.key(1))
      history.append(_leaves(state.params))
    return state, history

  with_ema, history = run(keep_ema=True)
  without, _ = run(keep_ema=False)
  assert without.ema_params is None
  for x, y in zip(_leaves(with_ema.params), _leaves(without.params), strict=True):
    np.testing.assert_array_equal(x, y)  # the average is read by nothing in training

  expected = history[0]
  for t, params in enumerate(history[1:]):
    d = min(DECAY, (1 + t) / (10 + t))
    expected = [d * e + (1 - d) * p for e, p in zip(expected, params, strict=True)]
  moved = 0.0
  for got, want, last in zip(_leaves(with_ema.ema_params), expected, history[-1], strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    moved = max(moved, float(np.abs(got - last).max()))
  assert moved > 1e-4  # the average is not simply the latest parameters


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory):
  """A 6-step smoke run keeping an average: (workdir, final state)."""
  workdir = tmp_path_factory.mktemp("ema")
  return workdir, train_and_evaluate(_config(), workdir)


def test_evaluation_and_sampling_use_the_average(averaged_run):
  workdir, final = averaged_run
  restored = open_run(workdir).params
  for x, y in zip(_leaves(restored), _leaves(final.ema_params), strict=True):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for x, y in zip(_leaves(restored), _leaves(final.params)))
  # bin/evaluate.py's report (through open_run) and the training loop's last validation score the
  # same parameters.
  logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  last_val = [r for r in logged if r["split"] == "val"][-1]
  report = evaluate_workdir(workdir, iw_samples=1)
  for k in ("neg_elbo_nats", "psnr_db"):
    assert report[k] == pytest.approx(last_val[k], rel=1e-4), k


def test_a_resumed_run_ends_with_the_average_of_an_unbroken_one(tmp_path):
  staged = tmp_path / "staged"
  train_and_evaluate(_config(), staged)
  resumed = train_and_evaluate(_config(steps=9), staged)
  straight = train_and_evaluate(_config(steps=9), tmp_path / "straight")
  assert int(resumed.step) == 9
  for x, y in zip(
    _leaves((resumed.params, resumed.ema_params)),
    _leaves((straight.params, straight.ema_params)),
    strict=True,
  ):
    np.testing.assert_array_equal(x, y)


def test_resuming_without_the_average_is_a_clear_error(averaged_run):
  workdir, _ = averaged_run
  config = _config(steps=9)
  config.train.ema_decay = 0.0
  with pytest.raises(CheckpointMismatchError, match="moving average"):
    train_and_evaluate(config, workdir)


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1])
def test_a_decay_outside_0_1_is_refused(bad):
  config = _config()
  config.train.ema_decay = 0.99
  assert resolve(config).train.ema_decay == 0.99
  del config.train["ema_decay"]
  assert resolve(config).train.ema_decay == 0.0  # a config saved before the field existed
  config.train.ema_decay = bad
  with pytest.raises(ValueError, match=r"ema_decay=.* must be a finite number in \[0, 1\)"):
    resolve(config)
