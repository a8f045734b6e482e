"""Every ``configs/*.py`` builds and its smoke model fits its data; bin/train.py's flags."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, load_config

from vae_jax.cli import run_or_explain
from vae_jax.data.dataset import split_indices
from vae_jax.models import build_model

CONFIG_NAMES = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if not p.name.startswith("_"))
# Configs of VAEs (the colouriser's config has no latent; tests/test_colorizer.py covers its model).
VAE_CONFIG_NAMES = [
  name for name in CONFIG_NAMES if load_config(name, None).get("task", "vae") == "vae"
]
GROUPS = ("data", "model", "loss", "opt", "train")
TRAIN_FIELDS = ("steps", "batch_size", "log_every", "eval_every", "ckpt_every")
DATA_FIELDS = ("source", "image_size", "channels", "val_fraction")


def test_the_config_folder_is_found():
  assert {"faces_mlp", "faces_conv", "galaxy"} <= set(CONFIG_NAMES)


@pytest.mark.parametrize("preset", [None, "smoke"])
@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_builds_with_the_shared_groups(name, preset):
  config = load_config(name, preset)
  for group in GROUPS:
    assert group in config, f"configs/{name}.py has no config.{group}"
  assert isinstance(config.seed, int)
  for field in TRAIN_FIELDS:
    assert config.train[field] > 0, f"configs/{name}.py: config.train.{field}"
  for field in DATA_FIELDS:
    assert field in config.data, f"configs/{name}.py has no config.data.{field}"
  assert config.data.channels in (1, 3)
  assert 0.0 <= config.data.val_fraction < 1.0
  assert config.model.name
  if name in VAE_CONFIG_NAMES:
    assert config.model.latent_dim > 0


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_smoke_is_smaller_than_the_full_run(name):
  full, smoke = load_config(name, None), load_config(name, "smoke")
  assert smoke.train.steps < full.train.steps
  assert smoke.train.batch_size <= full.train.batch_size


@pytest.mark.parametrize("name", VAE_CONFIG_NAMES)
def test_smoke_model_maps_its_images_to_their_shape(name):
  config = load_config(name, "smoke")
  image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
  model = build_model(config.model, config.loss, image_shape)
  x = jax.ShapeDtypeStruct((config.train.batch_size,) + image_shape, jnp.uint8)
  key = jax.random.key(0)
  variables = jax.eval_shape(model.init, key, x, key)  # shapes only: no compilation
  assert jax.tree.leaves(variables["params"])
  out = jax.eval_shape(model.apply, variables, x, key)
  assert out["decoded"].shape == x.shape
  assert out["mean"].shape == (x.shape[0], config.model.latent_dim)


def _leaves(config, prefix=""):
  """Every setting of a config as {"group.field": value}."""
  out = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      out.update(_leaves(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def test_many_faces_presets_change_only_the_weight_decay_and_the_likelihood():
  default, many, sharp = (
    _leaves(load_config("faces_mlp", preset)) for preset in (None, "many_faces", "many_faces_sharp")
  )
  assert default.keys() == many.keys() == sharp.keys()
  assert {k for k in default if default[k] != sharp[k]} == {"opt.weight_decay"}
  assert {k for k in default if default[k] != many[k]} == {"opt.weight_decay", "loss.likelihood"}
  assert many["opt.weight_decay"] == sharp["opt.weight_decay"] < default["opt.weight_decay"]
  assert (default["loss.likelihood"], many["loss.likelihood"]) == ("gaussian_learned", "logistic")


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_unknown_preset_raises(name):
  with pytest.raises(ValueError, match="smok"):
    load_config(name, "smok")


# --- bin/train.py flag handling (fails before anything is compiled, so it is fast) ---------------


def _train(tmp_path, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, str(ROOT / "bin" / "train.py"), *args],
    cwd=tmp_path,  # a default runs/ folder would land here
    capture_output=True,
    text=True,
    timeout=120,
  )


def test_train_rejects_a_misspelt_override_naming_the_key(tmp_path):
  result = _train(
    tmp_path,
    f"--config={ROOT / 'configs' / 'faces_mlp.py'}:smoke",
    f"--workdir={tmp_path / 'run'}",
    "--config.train.stepz=3",
  )
  assert result.returncode != 0
  assert "stepz" in result.stderr
  assert "steps" in result.stderr  # the did-you-mean suggestion
  assert not (tmp_path / "run").exists()


def test_train_help_describes_the_flags(tmp_path):
  result = _train(tmp_path, "--help")
  assert "Traceback" not in result.stderr
  usage = result.stdout + result.stderr
  assert "--config" in usage and "--workdir" in usage
  assert "resumes" in usage  # the script's docstring


def test_several_processes_without_a_coordinator_is_a_one_line_error(tmp_path):
  result = _train(
    tmp_path,
    f"--config={ROOT / 'configs' / 'faces_mlp.py'}:smoke",
    f"--workdir={tmp_path / 'run'}",
    "--num_processes=2",
    "--process_id=1",
  )
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert "--coordinator_address" in result.stderr


@pytest.mark.parametrize("script", ["sample.py", "evaluate.py", "build_dataset.py", "explore.py"])
def test_every_script_explains_a_missing_flag_in_one_line(tmp_path, script):
  result = subprocess.run(
    [sys.executable, str(ROOT / "bin" / script)],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 2
  assert result.stderr.startswith("error: flag --") and "Run with --help" in result.stderr, (
    result.stderr[-2000:]
  )


def test_a_user_error_from_vae_jax_is_one_line_and_a_library_error_keeps_its_traceback(capsys):
  with pytest.raises(SystemExit) as exit_:
    run_or_explain(lambda: split_indices(10, 1.5, seed=0))
  assert exit_.value.code == 1
  assert capsys.readouterr().err == "error: config.data.val_fraction must be in [0, 1); got 1.5.\n"
  with pytest.raises(SystemExit) as exit_:
    run_or_explain(lambda: np.zeros(2) + np.zeros(3))  # a ValueError raised by numpy: likely a bug
  assert exit_.value.code == 1
  err = capsys.readouterr().err
  assert err.startswith("Traceback") and err.splitlines()[-1].startswith(
    "error: operands could not be broadcast"
  )
