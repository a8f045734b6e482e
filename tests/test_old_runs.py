"""Workdirs written by earlier versions of vae_jax still open, sample, evaluate and resume."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from vae_jax import sampling
from vae_jax.config import load_config
from vae_jax.evaluation import evaluate_workdir
from vae_jax.inference import open_colorizer, open_run
from vae_jax.tasks import train

FIXTURES = ROOT / "tests" / "fixtures" / "v0_runs"
# Fields added to the config after the first runs were saved (a config.json of then has none
# of them; a colouriser's always had its task).
LATER_FIELDS = {
  "": ("task",),
  "data": (
    "max_upscale",
    "max_image_pixels",
    "decode_workers",
    "cache",
    "cache_dir",
    "tfds_data_dir",
  ),
  "model": ("learned_prior",),
  "opt": ("prior_learning_rate",),
  "train": ("ema_decay", "compute_dtype", "steps_per_dispatch", "deterministic"),
}


def _copy(name: str, tmp_path, strip_later_fields: bool = False):
  workdir = tmp_path / name
  shutil.copytree(FIXTURES / name, workdir)
  if strip_later_fields:
    path = workdir / "config.json"
    config = json.loads(path.read_text())
    for group, fields in LATER_FIELDS.items():
      for field in fields if config.get("task", "vae") == "vae" else set(fields) - {"task"}:
        (config[group] if group else config).pop(field, None)
    path.write_text(json.dumps(config))
  return workdir


def _leaves(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("strip", [False, True], ids=["as_saved", "without_later_fields"])
def test_an_old_vae_run_samples_and_evaluates(tmp_path, strip):
  workdir = _copy("faces_mlp", tmp_path, strip)
  run = open_run(workdir)
  assert run.step == 4 and run.config.model.encoder_hidden == [8]
  if strip:  # the migrated values are the ones the run was trained with
    assert run.config.data.max_upscale == 0.0 and run.config.train.ema_decay == 0.0
    assert run.config.task == "vae" and run.config.train.steps_per_dispatch == 1
  assert run.mixture is None  # trained before samplers: the gmm is fitted when first asked for
  path = sampling.write_samples(workdir, sampling.Prior(side=3), seed=1)
  assert np.asarray(Image.open(path)).shape[0] > 3 * 30
  assert open_run(workdir).mixture.step == 4
  report = evaluate_workdir(workdir, iw_samples=2)
  assert report["n_images"] == 12 and np.isfinite(report["neg_elbo_nats"])


def _continued(config, workdir, steps: int):
  config = config.copy_and_resolve_references()
  config.train.steps = steps
  return train(config, workdir)


@pytest.mark.parametrize("name", ["faces_mlp", "colorizer"])
def test_an_old_run_resumes_exactly_as_a_run_of_this_version(tmp_path, name):
  """The old run's 4 steps are this version's bit for bit; continued to 6 it ends where ours do."""
  old = _copy(name, tmp_path, strip_later_fields=True)
  config = load_config(old)
  ours = _continued(config, tmp_path / "ours", 4)
  opened = open_run(old) if name == "faces_mlp" else open_colorizer(old)
  for a, b in zip(_leaves(opened.params), _leaves(ours.params), strict=True):
    np.testing.assert_array_equal(a, b)
  resumed = _continued(config, old, 6)
  ours = _continued(config, tmp_path / "ours", 6)
  assert int(resumed.step) == 6
  for a, b in zip(_leaves(resumed), _leaves(ours), strict=True):
    np.testing.assert_array_equal(a, b)


def test_an_old_colorizer_run_colours(tmp_path):
  colorizer = open_colorizer(_copy("colorizer", tmp_path, strip_later_fields=True))
  grey = np.random.default_rng(0).integers(0, 256, (3, 30, 30, 1), dtype=np.uint8)
  assert colorizer.colorize(grey).shape == (3, 30, 30, 3)
