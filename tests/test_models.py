"""The model registry, the seeds' sizes and shapes, the FCN's convolutions, the learned prior."""

from __future__ import annotations

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config
from flax import traverse_util

from vae_jax.config import resolve
from vae_jax.errors import ConfigError
from vae_jax.losses import gaussian_kl
from vae_jax.models import build_model
from vae_jax.models.conv import conv_encoder_geometry
from vae_jax.models.fcn import FCNDecoder, depth_to_space, space_to_depth
from vae_jax.models.vae import VAE
from vae_jax.tasks.vae import standalone_training
from vae_jax.trainer import ParamGroups, make_optimizer

_KEY = jax.random.key(0)


def _dense(n_in: int, n_out: int) -> int:
  return n_in * n_out + n_out


def _conv(c_in: int, c_out: int, k: int) -> int:
  return c_in * c_out * k * k + c_out


def _image_shape(config) -> tuple[int, int, int]:
  return (config.data.image_size, config.data.image_size, config.data.channels)


def _abstract_params(model, image_shape):
  """Parameter shapes without compiling anything."""
  x = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.uint8)
  return jax.eval_shape(model.init, _KEY, x, _KEY)["params"]


def _normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
  """Test data from numpy: eager ``jax.random`` would compile its generator first."""
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _num_params(params) -> int:
  return sum(math.prod(p.shape) for p in jax.tree.leaves(params))


# --- The seed models, parameter for parameter ----------------------------------------------------


def test_mlp_matches_the_seed_parameter_count():
  config = load_config("faces_mlp", None)
  config.loss.likelihood = "gaussian"  # the seed's fixed σ; the default learns one more number
  seed_layers = [
    _dense(900, 512),
    _dense(512, 96),
    _dense(96, 25),  # encoder
    _dense(25, 10),
    _dense(25, 10),  # mean and log-variance heads
    _dense(10, 25),
    _dense(25, 96),
    _dense(96, 512),
    _dense(512, 900),  # decoder
  ]
  model = build_model(config.model, config.loss, _image_shape(config))
  assert _num_params(_abstract_params(model, _image_shape(config))) == sum(seed_layers) == 1_027_640


def test_conv_matches_the_seed_parameter_count():
  config = load_config("faces_conv", None)
  seed_layers = [
    _conv(1, 10, 5),
    _conv(10, 5, 5),  # encoder (max-pools have no parameters)
    _dense(45, 10),
    _dense(45, 10),  # heads on the flattened 5×3×3 map
    _dense(10, 45),  # decoder: back to 5×3×3
    _conv(5, 10, 4),
    _conv(10, 3, 6),
    _conv(3, 1, 4),  # transposed convolutions
  ]
  model = build_model(config.model, config.loss, _image_shape(config))
  assert _num_params(_abstract_params(model, _image_shape(config))) == sum(seed_layers) == 4_872


def test_conv_encoder_geometry_follows_the_seed():
  assert conv_encoder_geometry(30, (5, 5), (1, 2), (0, 1)) == 3  # 30 → 26 → 13 → 6 → 3
  with pytest.raises(ValueError, match="fewer layers"):
    conv_encoder_geometry(30, (5, 5, 5), (1, 2, 1), (0, 1, 0))


# --- Shapes of the three families ----------------------------------------------------------------


def _config(name: str):
  """The family's smoke config with the seeds' likelihood, one fixed σ (scales per pixel: below)."""
  if name == "fcn":
    config = load_config("galaxy", "smoke")  # channels 4-8-8-8
    config.data.image_size = 64
  else:
    config = load_config({"mlp": "faces_mlp", "conv": "faces_conv"}[name], "smoke")
  config.loss.likelihood = "gaussian"
  return config


@pytest.fixture(scope="module", params=["mlp", "conv", "fcn"])
def family(request):
  """A model, its config, and every method's output on one batch, from a single compilation.

  Parameters are random draws of the right shapes: compiling ``model.init`` costs
  several seconds of CPU for the conv model, and the shapes are what is tested here.
  """
  config = _config(request.param)
  image_shape = _image_shape(config)
  model = build_model(config.model, config.loss, image_shape)
  x = jnp.asarray(np.random.default_rng(1).integers(0, 256, (3,) + image_shape, dtype=np.uint8))
  rng = np.random.default_rng(2)
  params = jax.tree.map(
    lambda p: jnp.asarray(rng.normal(0.0, 0.1, p.shape), jnp.float32),
    _abstract_params(model, image_shape),
  )

  @jax.jit
  def run(params, x):
    variables = {"params": params}
    out = model.apply(variables, x, jax.random.key(2))
    mean, logvar = model.apply(variables, x, method=model.encode)
    return {
      "out": out,
      "mean": mean,
      "logvar": logvar,
      "decoded_z": model.apply(variables, out["z"], method=model.decode),
    }

  return request.param, config, x, run(params, x)


def test_forward_shapes(family):
  name, config, x, res = family
  z_dim = config.model.latent_dim
  expected = {"mlp": (3, 30, 30, 1), "conv": (3, 30, 30, 1), "fcn": (3, 64, 64, 3)}[name]
  assert x.shape == expected
  out = res["out"]
  assert out["decoded"].shape == expected
  assert out["mean"].shape == out["logvar"].shape == out["z"].shape == (3, z_dim)
  assert out["log_scale"].shape == ()
  for v in jax.tree.leaves(res):
    assert np.all(np.isfinite(np.asarray(v)))


def test_encode_decode_shapes_and_consistency_with_call(family):
  _name, config, _x, res = family
  out = res["out"]
  assert res["mean"].shape == res["logvar"].shape == (3, config.model.latent_dim)
  np.testing.assert_allclose(np.asarray(res["mean"]), np.asarray(out["mean"]), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(res["logvar"]), np.asarray(out["logvar"]), rtol=1e-6)
  np.testing.assert_allclose(
    np.asarray(res["decoded_z"]), np.asarray(out["decoded"]), rtol=1e-5, atol=1e-6
  )
  assert not np.allclose(np.asarray(out["z"]), np.asarray(out["mean"]))  # a sample, not the mean
  decoded = np.asarray(out["decoded"])
  assert decoded.min() >= 0.0 and decoded.max() <= 1.0  # sigmoid / mapped tanh: the data scale


# --- Space-to-depth convolutions -----------------------------------------------------------------


def test_space_to_depth_groups_each_patch_row_major():
  x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
  y = np.asarray(space_to_depth(jnp.asarray(x)))
  assert y.shape == (2, 2, 3, 12)
  for i, j in [(0, 0), (1, 2), (0, 1)]:
    patch = [
      x[:, 2 * i, 2 * j],
      x[:, 2 * i, 2 * j + 1],
      x[:, 2 * i + 1, 2 * j],
      x[:, 2 * i + 1, 2 * j + 1],
    ]
    np.testing.assert_array_equal(y[:, i, j], np.concatenate(patch, axis=-1))


def test_space_to_depth_and_depth_to_space_are_inverses():
  x = _normal(3, (2, 6, 8, 3))
  y = _normal(4, (2, 3, 4, 12))
  np.testing.assert_array_equal(np.asarray(depth_to_space(space_to_depth(x))), np.asarray(x))
  np.testing.assert_array_equal(np.asarray(space_to_depth(depth_to_space(y))), np.asarray(y))


def _conv2x2(x_BHWC, kernel_HWIO):
  return jax.lax.conv_general_dilated(
    x_BHWC, kernel_HWIO, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def test_space_to_depth_dense_is_a_2x2_stride_2_convolution():
  c_in, c_out = 3, 5
  x = _normal(5, (2, 8, 6, c_in))
  kernel = _normal(6, (4 * c_in, c_out))
  bias = _normal(7, (c_out,))
  dense = nn.Dense(c_out).apply({"params": {"kernel": kernel, "bias": bias}}, space_to_depth(x))
  conv = _conv2x2(x, kernel.reshape(2, 2, c_in, c_out)) + bias
  assert dense.shape == (2, 4, 3, c_out)
  np.testing.assert_allclose(np.asarray(dense), np.asarray(conv), rtol=1e-5, atol=1e-5)


def test_dense_depth_to_space_is_the_transposed_convolution():
  """Dense with the transposed kernel, then depth-to-space, is the adjoint of the strided conv."""
  c_in, c_out = 3, 5
  x = _normal(8, (2, 8, 6, c_in))
  kernel = _normal(9, (4 * c_in, c_out))
  y = _normal(10, (2, 4, 3, c_out))
  _, vjp = jax.vjp(lambda v: _conv2x2(v, kernel.reshape(2, 2, c_in, c_out)), x)
  np.testing.assert_allclose(
    np.asarray(depth_to_space(y @ kernel.T)), np.asarray(vjp(y)[0]), rtol=1e-5, atol=1e-5
  )


def test_2x2_sub_pixel_upsampling_is_a_kernel_4_stride_2_transposed_convolution():
  """``up_neighbourhoods`` 2: a 2×2 convolution + depth-to-space is a k4 s2 transposed one.

  Output pixel 2m + r reads input pixels m and m + 1 (rows and columns alike)
  through taps 1 − r and 3 − r of a 4×4 kernel: a stride-1 convolution of the
  2×-dilated input padded (1, 3) (PyTorch's ``ConvTranspose2d(k=4, s=2,
  p=1)`` pads it (2, 2): the same arithmetic, shifted by one output pixel),
  plus one bias per output phase.
  """
  c_in, c_out, h0, w0 = 3, 2, 3, 4
  decoder = FCNDecoder(start_shape=(h0, w0, c_in), channels=(c_out,), up_neighbourhoods=(2,))
  z = _normal(11, (2, 5))
  params = decoder.init(_KEY, z)["params"]
  params["up_0"]["bias"] = _normal(12, (4 * c_out,))
  out = decoder.apply({"params": params}, z)

  h = jax.nn.relu(z @ params["dense"]["kernel"] + params["dense"]["bias"]).reshape(2, h0, w0, c_in)
  w = np.asarray(params["up_0"]["kernel"]).reshape(
    2, 2, c_in, 2, 2, c_out
  )  # dy, dx, in, ry, rx, out
  kernel = np.zeros((4, 4, c_in, c_out), np.float32)
  for dy, dx, ry, rx in np.ndindex(2, 2, 2, 2):
    kernel[2 * dy - ry + 1, 2 * dx - rx + 1] = w[dy, dx, :, ry, rx]
  transposed = jax.lax.conv_general_dilated(
    h,
    jnp.asarray(kernel),
    (1, 1),
    ((1, 3), (1, 3)),
    lhs_dilation=(2, 2),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  phase_bias = depth_to_space(jnp.broadcast_to(params["up_0"]["bias"], (2, h0, w0, 4 * c_out)))
  assert out.shape == (2, 2 * h0, 2 * w0, c_out)
  np.testing.assert_allclose(
    np.asarray(out), np.asarray(transposed + phase_bias), rtol=1e-5, atol=1e-5
  )


# --- Configuration errors and the likelihood scale -----------------------------------------------


def test_decoder_plan_that_misses_the_image_size_raises():
  config = load_config("faces_conv", "smoke")
  config.model.decoder_kernels = (4, 6, 5)  # 3 → 8 → 27 → 31, not 30
  with pytest.raises(ConfigError, match=r"produces 31×31 images.*decoder_kernels"):
    build_model(config.model, config.loss, _image_shape(config))


@pytest.mark.parametrize(
  "field, value", [("encoder_channels", (10, 5, 7)), ("decoder_kernels", (4, 6))]
)
def test_conv_layer_lists_of_different_lengths_raise(field, value):
  config = load_config("faces_conv", "smoke")
  config.model[field] = value
  with pytest.raises(ValueError, match=rf"one entry per layer.*'{field}': {re.escape(str(value))}"):
    build_model(config.model, config.loss, _image_shape(config))


def test_fcn_needs_an_image_size_divisible_by_its_downsampling():
  config = load_config("galaxy", "smoke")
  with pytest.raises(ValueError, match="multiple of 16"):
    build_model(config.model, config.loss, (30, 30, 3))


def test_unknown_model_name_raises():
  config = load_config("faces_mlp", "smoke")
  config.model.name = "transformer"
  with pytest.raises(ValueError, match="transformer"):
    build_model(config.model, config.loss, _image_shape(config))


def test_no_latent_dimension_is_a_clear_error():
  config = load_config("faces_mlp", "smoke")
  config.model.latent_dim = 0
  with pytest.raises(ConfigError, match="latent_dim=0 must be a whole number ≥ 1"):
    resolve(config)


def test_bernoulli_needs_logits():
  config = load_config("faces_mlp", "smoke")
  config.loss.likelihood = "bernoulli"
  for activation in ("sigmoid", "tanh"):
    config.model.output_activation = activation
    with pytest.raises(ConfigError, match="output_activation='none'"):
      resolve(config)
  config.model.output_activation = "none"
  assert build_model(config.model, config.loss, _image_shape(config)).output_activation == "none"
  resolve(config)


def test_unknown_output_activation_raises():
  config = load_config("faces_mlp", "smoke")
  config.model.output_activation = "softplus"
  model = build_model(config.model, config.loss, _image_shape(config))
  with pytest.raises(ValueError, match="softplus"):
    _abstract_params(model, _image_shape(config))


def test_learned_scale_adds_exactly_one_parameter():
  config = load_config("faces_mlp", "smoke")
  config.loss.likelihood = "gaussian"
  image_shape = _image_shape(config)
  fixed = traverse_util.flatten_dict(
    _abstract_params(build_model(config.model, config.loss, image_shape), image_shape)
  )
  config.loss.likelihood = "gaussian_learned"
  config.loss.scale = 0.2
  model = build_model(config.model, config.loss, image_shape)
  learned = traverse_util.flatten_dict(_abstract_params(model, image_shape))
  assert set(learned) - set(fixed) == {("log_scale",)}
  assert set(fixed) <= set(learned)
  assert learned[("log_scale",)].shape == ()
  assert _num_params(learned) == _num_params(fixed) + 1
  # Its initial value is log(config.loss.scale), and it is the scale the likelihood uses.
  x = jnp.zeros((1,) + image_shape, jnp.uint8)
  params = model.init(_KEY, x, _KEY)["params"]
  assert float(params["log_scale"]) == pytest.approx(math.log(0.2))
  z = jnp.zeros((1, config.model.latent_dim))
  _, log_scale = model.apply({"params": params}, z, method=model.decode_likelihood)
  assert float(log_scale) == pytest.approx(math.log(0.2))


# --- The learned prior and the sub-pixel upsamplings
# -----------------------------------------------


def test_learned_prior_leaves_the_reconstruction_alone_and_is_what_the_kl_measures_against():
  """``encode`` whitens by the prior, ``decode`` undoes it: the sample decoded is the same z."""
  config = load_config("galaxy", "smoke")
  assert config.model.learned_prior
  image_shape = _image_shape(config)
  model = build_model(config.model, config.loss, image_shape)
  rng = np.random.default_rng(4)
  params = jax.tree.map(
    lambda p: jnp.asarray(rng.normal(0.0, 0.1, p.shape), jnp.float32),
    _abstract_params(model, image_shape),
  )
  plain = dict(params, prior_mean=jnp.zeros(4), prior_log_std=jnp.zeros(4))
  learned = dict(
    params,
    prior_mean=jnp.asarray([0.5, -1.0, 2.0, 0.0]),
    prior_log_std=jnp.asarray([-1.0, 0.3, 0.0, -2.0]),
  )
  x = jnp.asarray(rng.integers(0, 256, (3,) + image_shape, dtype=np.uint8))
  apply = jax.jit(lambda p: model.apply({"params": p}, x, jax.random.key(3)))
  raw, out = apply(plain), apply(learned)
  np.testing.assert_allclose(
    np.asarray(out["decoded"]), np.asarray(raw["decoded"]), rtol=1e-4, atol=1e-5
  )
  # KL(N(μ, σ²) ‖ N(m, s²)) in the encoder's own coordinates, per dimension.
  m, log_s = learned["prior_mean"], learned["prior_log_std"]
  mu, var = raw["mean"], jnp.exp(raw["logvar"])
  closed_form = log_s - 0.5 * raw["logvar"] + (var + (mu - m) ** 2) / (2 * jnp.exp(2 * log_s)) - 0.5
  np.testing.assert_allclose(
    np.asarray(gaussian_kl(out["mean"], out["logvar"])),
    np.asarray(closed_form),
    rtol=1e-4,
    atol=1e-5,
  )


def test_the_learned_prior_has_its_own_optimizer():
  config = load_config("galaxy", "smoke")
  tx = make_optimizer(config.opt, 10, ParamGroups(VAE.optimizer_groups, VAE.weight_decayed))
  params = {"prior_mean": jnp.zeros(2), "decoder": {"kernel": jnp.zeros(2)}}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # Adam's first step is −lr·sign(g); the network's learning rate is still 0 in its warm-up.
  np.testing.assert_allclose(
    np.asarray(updates["prior_mean"]), -config.opt.prior_learning_rate, rtol=1e-3
  )
  np.testing.assert_array_equal(np.asarray(updates["decoder"]["kernel"]), 0.0)


def test_weight_decay_spares_a_learned_likelihood_scale_and_a_constant_schedule_starts_at_once():
  config = load_config("faces_mlp", "smoke")  # weight decay 1.0
  config.opt.schedule, config.opt.warmup_steps = "constant", 0
  tx = make_optimizer(config.opt, 10, ParamGroups(VAE.optimizer_groups, VAE.weight_decayed))
  params = {"decoder": {"kernel": jnp.full(2, 0.5)}, "log_scale": jnp.asarray(-2.3)}
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  # With zero gradients only the decoupled decay moves a parameter: −lr·wd·p, from the first step.
  lr, wd = config.opt.learning_rate, config.opt.weight_decay
  np.testing.assert_allclose(np.asarray(updates["decoder"]["kernel"]), -lr * wd * 0.5, rtol=1e-5)
  assert float(updates["log_scale"]) == 0.0


def test_sub_pixel_upsampling_is_an_n_by_n_convolution_to_four_times_the_channels():
  config = load_config("galaxy", "sharp")  # one σ: the decoder outputs the image's channels only
  config.model.channels = (4, 8, 8, 8)
  image_shape = _image_shape(config)
  config.model.up_neighbourhoods = (3, 1, 2, 1)
  decoder = _abstract_params(build_model(config.model, config.loss, image_shape), image_shape)[
    "decoder"
  ]
  ins = tuple(reversed(config.model.channels))  # 8, 8, 8, 4
  outs = ins[1:] + (image_shape[-1],)
  for i, size in enumerate(config.model.up_neighbourhoods):
    expected = (size, size, ins[i], 4 * outs[i]) if size > 1 else (ins[i], 4 * outs[i])
    assert decoder[f"up_{i}"]["kernel"].shape == expected


@pytest.mark.parametrize("sizes", [(3, 3), (2, 1, 1, 1, 1), (0, 1, 1, 1)])
def test_up_neighbourhoods_need_one_positive_size_per_upsampling(sizes):
  config = load_config("galaxy", "smoke")
  config.model.up_neighbourhoods = sizes
  with pytest.raises(ValueError, match="up_neighbourhoods"):
    build_model(config.model, config.loss, _image_shape(config))


@pytest.mark.parametrize("likelihood", ["gaussian_per_pixel", "logistic"])
@pytest.mark.parametrize("name", ["faces_mlp", "faces_conv", "galaxy"])
def test_a_per_pixel_scale_comes_from_the_decoder_with_a_floor(name, likelihood):
  config = load_config(name, "smoke")
  config.loss.likelihood = likelihood
  shape = _image_shape(config)
  model = build_model(config.model, config.loss, shape)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2,) + shape, dtype=np.uint8))
  params = jax.jit(model.init)(_KEY, x, _KEY)["params"]
  out = jax.jit(model.apply)({"params": params}, x, _KEY)
  assert out["decoded"].shape == out["log_scale"].shape == x.shape
  scale = np.exp(np.asarray(out["log_scale"]))
  assert (scale >= config.loss.min_scale * (1 - 1e-6)).all() and scale.std() > 0
  # It trains: the training objective is the likelihood's (the logistic's exact discrete one).
  _, state, step = standalone_training(config, _KEY, total_steps=10)
  batch = np.repeat(np.asarray(x), config.train.batch_size // 2, axis=0)
  state, metrics = step(state, batch, _KEY)
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
