"""The VAE wrapper: an encoder, a diagonal-Gaussian posterior, a decoder.

Randomness is explicit: ``__call__`` takes the reparameterisation key as an
argument (no Flax rng streams), so a train step derives it from
``fold_in(train_key, step)`` and resumes bit-exactly.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

OUTPUT_ACTIVATIONS = ("none", "sigmoid", "tanh")
# The learned prior's parameters (top level of ``params``).
PRIOR_PARAMS = ("prior_mean", "prior_log_std")


def _activate(raw: jax.Array, activation: str) -> jax.Array:
  """Map decoder output onto the [0, 1] data scale (or leave logits as they are)."""
  if activation == "sigmoid":
    return nn.sigmoid(raw)
  if activation == "tanh":  # the galaxy seed: tanh output mapped linearly to 0..255
    return 0.5 * (jnp.tanh(raw) + 1.0)
  if activation == "none":
    return raw
  raise ValueError(f"Unknown output activation {activation!r}; choose one of {OUTPUT_ACTIVATIONS}.")


class VAE(nn.Module):
  """Gaussian-latent VAE around any encoder/decoder pair.

  Attributes:
    encoder: maps images in [-1, 1] (B×H×W×C) to ``(mean_BZ, logvar_BZ)``.
    decoder: maps ``z_BZ`` to raw outputs B×H×W×C (B×H×W×2C with
      ``scale_per_pixel``: the location's channels, then the scale's).
    output_activation: how raw decoder outputs become data-scale means.
    learn_scale: learn one global log σ of the Gaussian likelihood.
    scale_per_pixel: the decoder predicts the likelihood's scale for every
      pixel, ``min_scale + softplus(raw)`` (a floor, so it cannot collapse).
    init_log_scale: log σ (fixed, or the learned one's initial value; with
      ``scale_per_pixel``, the scale a zero raw output stands for).
    min_scale: the floor of a per-pixel scale, on the [0, 1] scale.
    dtype: the dtype of the computation: the encoder's input, hence every
      activation (the encoder and decoder are built with the same dtype);
      ``bfloat16`` for mixed precision. Parameters, the likelihood's scale
      and the learned prior stay float32.
    latent_dim: size of z (needed only by ``learned_prior``).
    learned_prior: learn the prior N(m, diag(s²)) instead of fixing N(0, I).
      It is exposed in whitened coordinates: ``encode`` returns the posterior
      of (z - m) / s and ``decode`` maps back, so everything downstream
      (KL, sampling, traversals) keeps using N(0, I). The reconstruction does
      not depend on m and s, so only the KL moves them, towards the mean and
      spread of the encoder's codes. Why: with ~200 000 pixels against 4
      latents the KL's pull on the encoder is drowned by the reconstruction
      gradient, the codes settle in a small off-centre cloud, and draws from a
      fixed N(0, I) land where the decoder never trained (galaxy samples were
      noise). The ELBO stays exact: the prior's parameters are model
      parameters.
  """

  encoder: nn.Module
  decoder: nn.Module
  output_activation: str = "sigmoid"
  learn_scale: bool = False
  scale_per_pixel: bool = False
  init_log_scale: float = -2.302585  # σ = 0.1
  min_scale: float = 1.0 / 255.0
  dtype: Any = jnp.float32
  latent_dim: int = 0
  learned_prior: bool = False

  def setup(self):
    if self.learn_scale:
      self.log_scale = self.param(
        "log_scale", lambda _: jnp.asarray(self.init_log_scale, jnp.float32)
      )
    else:
      self.log_scale = jnp.asarray(self.init_log_scale, jnp.float32)
    if self.learned_prior:
      self.prior_mean, self.prior_log_std = (
        self.param(name, nn.initializers.zeros, (self.latent_dim,), jnp.float32)
        for name in PRIOR_PARAMS
      )

  def encode(self, x_uint8: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = x_uint8.astype(self.dtype) * (2.0 / 255.0) - 1.0
    mean, logvar = self.encoder(x)
    if self.learned_prior:  # the posterior of the whitened code (z - m) / s
      mean = (mean - self.prior_mean) * jnp.exp(-self.prior_log_std)
      logvar = logvar - 2.0 * self.prior_log_std
    return mean, logvar

  def decode(self, z_BZ: jax.Array) -> jax.Array:
    """Data-scale means for codes in the prior's coordinates (N(0, I) draws are prior samples)."""
    return self.decode_likelihood(z_BZ)[0]

  def decode_likelihood(self, z_BZ: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(location, log_scale)`` of p(x|z): the decoded image, and the scale(s) around it."""
    if self.learned_prior:
      z_BZ = (self.prior_mean + jnp.exp(self.prior_log_std) * z_BZ).astype(self.dtype)
    raw = self.decoder(z_BZ)
    if not self.scale_per_pixel:
      return _activate(raw, self.output_activation), self.log_scale
    loc_raw, scale_raw = jnp.split(raw.astype(jnp.float32), 2, axis=-1)
    # A raw output of 0 means the initial scale: floor + softplus(offset) = exp(init_log_scale).
    offset = math.log(math.expm1(max(math.exp(self.init_log_scale) - self.min_scale, 1e-6)))
    scale = self.min_scale + jax.nn.softplus(scale_raw + offset)
    return _activate(loc_raw, self.output_activation), jnp.log(scale)

  def __call__(self, x_uint8: jax.Array, key: jax.Array) -> dict[str, Any]:
    mean, logvar = self.encode(x_uint8)
    eps = jax.random.normal(key, mean.shape, jnp.float32)  # the same draws whatever the dtype
    z = mean + jnp.exp(0.5 * logvar) * eps
    decoded, log_scale = self.decode_likelihood(z.astype(self.dtype))
    return {"decoded": decoded, "mean": mean, "logvar": logvar, "z": z, "log_scale": log_scale}

  @staticmethod
  def optimizer_groups(params: Any) -> Any:
    """``"prior"`` for the learned prior's parameters, ``"net"`` for the rest (``vae_jax.trainer``).

    Only the KL moves the prior's mean and scale, and it has to bring them
    to the codes' mean and spread, units of order 1 away, within a few
    hundred steps: a plain Adam of their own (``config.opt.prior_learning_rate``)
    does; the network's clipped, decaying schedule moves them too slowly.
    """
    return {
      k: jax.tree.map(lambda _, k=k: "prior" if k in PRIOR_PARAMS else "net", v)
      for k, v in params.items()
    }

  @staticmethod
  def weight_decayed(params: Any) -> Any:
    """True for every parameter but a learned likelihood's ``log_scale``.

    Weight decay regularises the encoder and decoder; a learned σ is a
    parameter of the density, and decay would pull it towards σ = 1 and bias
    every likelihood figure.
    """
    return {k: jax.tree.map(lambda _, k=k: k != "log_scale", v) for k, v in params.items()}
