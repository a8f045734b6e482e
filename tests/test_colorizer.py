"""The colouriser: StackNN's size, the small model, the loss, training, resume, samples."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, load_config
from PIL import Image

from vae_jax import sampling
from vae_jax.errors import CheckpointMismatchError
from vae_jax.images import comparison_tiles
from vae_jax.inference import open_colorizer, open_run
from vae_jax.models.colorizer import (
  ConvColorizer,
  StackNN,
  build_colorizer,
  luminance,
  rgb_from_luma_chroma,
)
from vae_jax.sampling import colorize_prior
from vae_jax.tasks import train
from vae_jax.tasks.colorizer import (
  GreyInput,
  colorizer_losses,
  grey_from_rgb,
  grey_input,
  make_eval_step,
  make_loss,
)
from vae_jax.trainer import create_train_state, make_optimizer, make_train_step

SHAPE = (30, 30, 3)


def _n_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_params(model, shape=SHAPE):
  """Parameter shapes without computing (StackNN's 90 M parameters are never materialised here)."""
  grey = jax.ShapeDtypeStruct((1,) + shape[:2] + (1,), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), grey)["params"]


def test_stacknn_has_the_reference_parameter_count():
  # The seed's layers on 30×30: ConvT 1→10 k5 s2 (30→63), Conv 10→5 k5 (63→59),
  # Linear 5·59·59 → 5·30·30, Linear 5·30·30 → 3·30·30, each with a bias.
  by_hand = (
    (1 * 10 * 5 * 5 + 10)
    + (10 * 5 * 5 * 5 + 5)
    + (5 * 59 * 59 * 4500 + 4500)
    + (4500 * 2700 + 2700)
  )
  assert by_hand == 90_481_215
  params = _abstract_params(StackNN(image_shape=SHAPE))
  assert _n_params(params) == by_hand
  assert params["fc_0"]["kernel"].shape == (17405, 4500)
  assert params["fc_1"]["kernel"].shape == (4500, 2700)


def test_stacknn_sizes_follow_the_image():
  model = StackNN(image_shape=(20, 20, 3))
  params = _abstract_params(model, (20, 20, 3))
  conv_side = (20 - 1) * 2 + 5 - 4
  assert params["fc_0"]["kernel"].shape == (5 * conv_side**2, 5 * 20 * 20)
  out = jax.eval_shape(
    model.apply, {"params": params}, jax.ShapeDtypeStruct((2, 20, 20, 1), jnp.float32)
  )
  assert out.shape == (2, 20, 20, 3)


def test_default_conv_colorizer_is_at_least_50x_smaller():
  config = load_config("colorizer", None)
  small = _n_params(_abstract_params(build_colorizer(config.model, SHAPE)))
  config.model.name = "stacknn"
  big = _n_params(_abstract_params(build_colorizer(config.model, SHAPE)))
  assert big >= 50 * small, (big, small)


@pytest.mark.parametrize("side", [30, 29])
def test_conv_colorizer_shapes_and_starts_as_the_grey_image(side):
  model = ConvColorizer(features=(4, 8, 8))
  grey = jax.random.uniform(jax.random.key(1), (2, side, side, 1))
  params = jax.jit(model.init)(jax.random.key(0), grey)["params"]
  out = jax.jit(model.apply)({"params": params}, grey)
  assert out.shape == (2, side, side, 3)
  # The last layer starts at zero: no colour yet, the luminance kept.
  np.testing.assert_allclose(out, jnp.repeat(grey, 3, axis=-1), atol=1e-6)


def test_unknown_colorizer_and_grey_data_are_clear_errors():
  config = load_config("colorizer")
  config.model.name = "resnet"
  with pytest.raises(ValueError, match=r"conv.*stacknn"):
    build_colorizer(config.model, SHAPE)
  config.model.name = "conv"
  with pytest.raises(ValueError, match="channels=3"):
    build_colorizer(config.model, (30, 30, 1))


def test_a_moving_average_and_bf16_compute_train_a_colorizer_too(tmp_path):
  """The trainer's options are every task's: a colouriser keeps an average and computes in bf16."""
  config = load_config("colorizer")
  config.train.ema_decay, config.train.compute_dtype = 0.9, "bfloat16"
  config.train.steps = config.train.ckpt_every = config.train.eval_every = 3
  state = train(config, tmp_path / "run")
  assert state.ema_params is not None
  for tree in (state.params, state.ema_params):
    assert {p.dtype for p in jax.tree.leaves(tree)} == {jnp.dtype(jnp.float32)}
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(tree))
  assert any(
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state.ema_params), strict=True)
  )
  averaged = open_colorizer(tmp_path / "run").params  # the run is judged by its average
  for a, b in zip(jax.tree.leaves(averaged), jax.tree.leaves(state.ema_params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_grey_from_rgb_is_pil_luma_exactly():
  rgb = np.random.default_rng(0).integers(0, 256, (3, 17, 19, 3), dtype=np.uint8)
  ours = np.asarray(grey_from_rgb(jnp.asarray(rgb)))
  pil = np.stack([np.asarray(Image.fromarray(x).convert("L")) for x in rgb])[..., None]
  np.testing.assert_array_equal(ours, pil)


def test_luminance_term_is_zero_when_the_output_keeps_the_input_luminance():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  grey = jax.random.uniform(k1, (4, 8, 8, 1))
  u, v = 0.2 * jax.random.normal(k2, grey.shape), 0.2 * jax.random.normal(k3, grey.shape)
  rgb = rgb_from_luma_chroma(grey, u, v)
  target = jnp.zeros(rgb.shape, jnp.uint8)
  np.testing.assert_allclose(luminance(rgb), grey, atol=1e-6)
  terms = colorizer_losses(rgb, target, grey)
  assert terms["luminance_mse"].shape == (4,)
  np.testing.assert_allclose(terms["luminance_mse"], 0.0, atol=1e-12)
  np.testing.assert_allclose(
    terms["color_mse"], jnp.mean(jnp.square(rgb), axis=(1, 2, 3)), rtol=1e-6
  )
  # A brighter output misses the luminance by exactly the offset.
  brighter = colorizer_losses(rgb + 0.1, target, grey)["luminance_mse"]
  np.testing.assert_allclose(brighter, 0.01, rtol=1e-4)


def _initial_state(model, tx):
  def init_params(key):
    return model.init(key, jnp.zeros((1,) + SHAPE[:2] + (1,), jnp.float32))["params"]

  return create_train_state(init_params, tx, jax.random.key(0))


def test_steps_lower_the_loss_on_a_fixed_batch_and_trace_once():
  config = load_config("colorizer")
  config.opt.warmup_steps = 0
  model = ConvColorizer(features=(8, 16))
  state = _initial_state(model, make_optimizer(config.opt, 100))
  # Random images in one warm tint: their colour is predictable from their grey version.
  grey = np.random.default_rng(0).uniform(0, 255, (8,) + SHAPE[:2] + (1,))
  rgb = np.round(grey * np.array([1.0, 0.8, 0.4])).astype(np.uint8)
  step = make_train_step(make_loss(model, config, GreyInput()))
  eval_step = make_eval_step(model, config, GreyInput())
  mask = np.ones(len(rgb), np.float32)

  def loss(params):
    return float(eval_step(params, rgb, mask, jax.random.key(0), None)["loss"]) / len(rgb)

  before = loss(state.params)
  for _ in range(15):
    state, metrics = step(state, rgb, jax.random.key(2), None)
  assert np.isfinite(float(metrics["loss"]))
  assert loss(state.params) < 0.8 * before
  assert step._cache_size() == 1


@pytest.fixture(scope="module")
def vae_workdir(smoke_vae):
  """The shared 6-step smoke VAE on grey 30×30 synthetic faces: the sampler of grey images."""
  return smoke_vae[0]


@pytest.fixture(scope="module")
def colorizer_workdir(tmp_path_factory):
  """``bin/train.py --config configs/colorizer.py:smoke`` for 6 steps (checkpoints at 3 and 6)."""
  workdir = tmp_path_factory.mktemp("colorizer")
  cmd = [
    sys.executable,
    str(ROOT / "bin" / "train.py"),
    f"--config={ROOT / 'configs' / 'colorizer.py'}:smoke",
    f"--workdir={workdir}",
    "--config.opt.schedule=constant",
  ]
  done = subprocess.run(cmd, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir


def test_bin_train_trains_a_colorizer(colorizer_workdir):
  records = [
    json.loads(line) for line in (colorizer_workdir / "metrics.jsonl").read_text().splitlines()
  ]
  val = [r for r in records if r["split"] == "val"]
  assert [r["step"] for r in val] == [3, 6]
  for r in val:
    assert {"psnr_db", "grey_psnr_db", "color_mse", "luminance_mse", "loss"} <= set(r)
    assert r["loss"] == pytest.approx(r["color_mse"] + r["luminance_mse"], rel=1e-5)
  assert json.loads((colorizer_workdir / "config.json").read_text())["task"] == "colorizer"
  grid = np.asarray(Image.open(colorizer_workdir / "samples" / "training" / "colorize.png"))
  assert (
    grid.ndim == 3 and grid.shape[0] > 3 * 30 * 4
  )  # grey, colourised and original rows, upscaled


def test_resumed_colorizer_equals_an_uninterrupted_one(colorizer_workdir, tmp_path):
  """The 6-step CLI run continued to 9 steps ends where 9 steps in one go end."""
  config9 = load_config("colorizer")
  config9.opt.schedule = "constant"
  config9.train.steps = 9
  resumed = train(config9, colorizer_workdir)
  straight = train(config9, tmp_path / "straight")
  assert int(resumed.step) == 9
  for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_vae_workdir_in_a_colorizer_workdir_is_refused(vae_workdir):
  with pytest.raises(CheckpointMismatchError, match="'vae' run"):
    train(load_config("colorizer"), vae_workdir)
  with pytest.raises(ValueError, match="not a colouriser"):
    open_colorizer(vae_workdir)


def test_vae_workdir_gives_vae_reconstructions_as_input(vae_workdir):
  config = load_config("colorizer")
  grey_fn, vae_params = grey_input(str(vae_workdir), SHAPE)
  rgb = np.random.default_rng(0).integers(0, 256, (4,) + SHAPE, dtype=np.uint8)
  expected = open_run(vae_workdir).reconstruct(np.asarray(grey_from_rgb(rgb)))
  got = np.asarray(grey_fn(vae_params, jnp.asarray(rgb)))
  np.testing.assert_allclose(got * 255, expected, atol=0.51)
  model = ConvColorizer(features=(4, 8))
  state = _initial_state(model, make_optimizer(config.opt, 10))
  state, metrics = make_train_step(make_loss(model, config, grey_fn))(
    state, rgb, jax.random.key(1), vae_params
  )
  assert np.isfinite(float(metrics["loss"]))
  with pytest.raises(ValueError, match="image_size=30"):
    grey_input(str(vae_workdir), (20, 20, 3))


def _colorized_prior_samples(vae_workdir, colorizer_workdir, n, seed):
  return colorize_prior(
    open_run(vae_workdir), open_colorizer(colorizer_workdir), n, jax.random.key(seed)
  )


def test_colorize_prior_shapes_determinism_and_luminance(vae_workdir, colorizer_workdir):
  grey, rgb = _colorized_prior_samples(vae_workdir, colorizer_workdir, n=5, seed=3)
  assert grey.shape == (5, 30, 30, 1) and rgb.shape == (5, 30, 30, 3)
  assert grey.dtype == rgb.dtype == np.uint8
  again_grey, again_rgb = _colorized_prior_samples(vae_workdir, colorizer_workdir, n=5, seed=3)
  np.testing.assert_array_equal(grey, again_grey)
  np.testing.assert_array_equal(rgb, again_rgb)
  assert not np.array_equal(
    grey, _colorized_prior_samples(vae_workdir, colorizer_workdir, n=5, seed=4)[0]
  )
  # A colouriser keeps the luminance of what it colours (up to rounding and clipping at 0 and 255).
  luma = np.asarray(luminance(rgb.astype(np.float32)))
  assert np.mean(np.abs(luma - grey)) < 3.0


def test_sample_kind_colorize_draws_grey_rows_above_colour_rows(
  vae_workdir, colorizer_workdir, tmp_path
):
  grey, rgb = _colorized_prior_samples(vae_workdir, colorizer_workdir, n=8, seed=0)
  kind = sampling.Colorize(faces=8, colorizer=str(colorizer_workdir), sampler="prior")
  path = sampling.write_samples(vae_workdir, kind, tmp_path / "c.png")
  picture = np.asarray(Image.open(path))
  again = sampling.write_samples(vae_workdir, kind, tmp_path / "again.png")
  np.testing.assert_array_equal(np.asarray(Image.open(again)), picture)
  tiles = comparison_tiles(grey, rgb)
  assert tiles.shape == (2, 8, 30, 30, 3)
  np.testing.assert_array_equal(tiles[0], np.repeat(grey, 3, axis=-1))
  np.testing.assert_array_equal(tiles[1], rgb)
  # The picture's bottom row holds the colourised tiles, upscaled ×4 (nearest neighbour) behind
  # 2-pixel separators.
  side, pad = 30 * 4, 2
  top = picture.shape[0] - pad - side
  np.testing.assert_array_equal(picture[top : top + side : 4, pad : pad + side : 4], rgb[0])
  with pytest.raises(ValueError, match="--colorizer"):
    sampling.write_samples(vae_workdir, sampling.Colorize(faces=2), tmp_path / "d.png")
