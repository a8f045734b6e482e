"""How real a sampler's images look: a classifier two-sample test (Lopez-Paz & Oquab, 2017).

FID needs an Inception network that many machines cannot download. Here a
small classifier, trained from scratch in seconds, tries to tell two sets of
images apart; its ROC AUC on images it was not trained on is the measure:
0.5 when it cannot (the sets come from one distribution), 1.0 when it tells
every image apart. For a VAE's sampler the two sets are decoded codes from
the sampler and decoded posterior draws of held-out images — the same
decoder, so only the codes differ: an AUC near 0.5 says the sampler draws
codes the decoder turns into images like those it makes of real ones.

Each set is cut in two halves; a classifier trained on one half of both sets
scores the other halves, and the other way round, so every image is scored
by a classifier that never saw it. Deterministic for a fixed key.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import numpy as np
import optax

MAX_SIDE = 32  # images are averaged down to at most this many pixels a side
HIDDEN = 256
STEPS = 300
BATCH = 128
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-2


class Classifier(nn.Module):
  """A two-hidden-layer MLP on the flattened, standardised small images: one logit each."""

  @nn.compact
  def __call__(self, x_NF: jax.Array) -> jax.Array:
    for _ in range(2):
      x_NF = nn.relu(nn.Dense(HIDDEN)(x_NF))
    return nn.Dense(1)(x_NF)[:, 0]


def features(images_uint8: np.ndarray) -> np.ndarray:
  """N×H×W×C uint8 → N×F float32: each side averaged down by the factor that brings it ≤ 32."""
  x = np.asarray(images_uint8, np.float32) / 255.0
  n, h, w, c = x.shape
  factor = math.ceil(max(h, w) / MAX_SIDE)
  h, w = h // factor * factor, w // factor * factor
  x = x[:, :h, :w].reshape(n, h // factor, factor, w // factor, factor, c).mean((2, 4))
  return x.reshape(n, -1)


@jax.jit
def _fit_and_score(x_train, y_train, x_test, key):
  """Train the classifier on (x_train, y_train) with minibatches from ``key``; logits of x_test."""
  model = Classifier()
  init_key, batch_key = jax.random.split(key)
  params = model.init(init_key, x_train[:1])["params"]
  tx = optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)

  def loss(params, x, y):
    return optax.sigmoid_binary_cross_entropy(model.apply({"params": params}, x), y).mean()

  def step(carry, key):
    params, opt_state = carry
    rows = jax.random.choice(key, len(x_train), (min(BATCH, len(x_train)),), replace=False)
    grads = jax.grad(loss)(params, x_train[rows], y_train[rows])
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(batch_key, STEPS))
  return model.apply({"params": params}, x_test)


def two_sample_auc(a_uint8: np.ndarray, b_uint8: np.ndarray, key: jax.Array) -> float:
  """Held-out ROC AUC of a classifier telling images ``a`` (label 0) from ``b`` (label 1).

  Both sets need at least 4 images of the same shape.
  """
  from sklearn.metrics import roc_auc_score  # slow to import; only needed here

  if min(len(a_uint8), len(b_uint8)) < 4:
    raise ValueError("A two-sample test needs at least 4 images in each set.")
  x = features(np.concatenate([a_uint8, b_uint8]))
  y = np.concatenate([np.zeros(len(a_uint8)), np.ones(len(b_uint8))]).astype(np.float32)
  x = (x - x.mean(0)) / (x.std(0) + 1e-3)  # pixels that never change stay at 0
  order_key, *fold_keys = jax.random.split(key, 3)
  # Each set is halved on its own, so both halves hold the two labels in the same proportion.
  fold = np.empty(len(y), np.int32)
  for label in (0, 1):
    rows = np.flatnonzero(y == label)
    rows = rows[np.asarray(jax.random.permutation(jax.random.fold_in(order_key, label), len(rows)))]
    fold[rows] = np.arange(len(rows)) % 2
  scores = np.empty(len(y), np.float32)
  for f, fold_key in enumerate(fold_keys):
    train, test = fold != f, fold == f
    scores[test] = np.asarray(_fit_and_score(x[train], y[train], x[test], fold_key))
  return float(roc_auc_score(y, scores))
