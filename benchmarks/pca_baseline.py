#!/usr/bin/env python
"""PCA and PPCA baselines: held-out PSNR of PCA-k and bits/dim of probabilistic PCA-k.

The VAE's reconstruction PSNR and bits/dim mean little without these
yardsticks: a linear code of the same size as the latent, fitted in closed
form on the config's training split (``vae_jax.baselines``). Same split,
preprocessing and definitions as training: ``*_psnr_db`` the mean over
images of per-image PSNR on [0, 1], ``*_pooled_psnr_db`` the PSNR of the
mean squared error, ``ppca_bits_per_dim`` the probability of the integer
pixels. ``bin/evaluate.py --baseline`` prints the same for a run.

  python benchmarks/pca_baseline.py --config configs/faces_mlp.py \\
      --config.data.source=folder:../shared/data/anime_faces_30/small

``--subspaces=K`` adds a second yardstick, for what a piecewise-linear code
of the same size can gain over PCA (generously counted): K local k-component PCAs
(k-subspaces clustering of the training split), each image coded by the one
that reconstructs it best — k numbers plus a free choice among K subspaces.
"""

import json

import numpy as np
import tqdm
from absl import app, flags
from ml_collections import config_flags

from vae_jax import baselines
from vae_jax.data.dataset import build_dataset, load_images
from vae_jax.losses import psnr_of_mse

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_K = flags.DEFINE_integer("components", None, "PCA components (default: the config's latent_dim).")
_SUBSPACES = flags.DEFINE_integer(
  "subspaces",
  0,
  "Also fit this many local PCAs (k-subspaces) and report their best-of PSNR (0: off).",
)


def _db(mse: np.ndarray, pooled: bool = False) -> float:
  """PSNR (dB) from per-image MSEs: the mean of per-image PSNRs (training's ``psnr_db``), or with
  ``pooled`` the PSNR of the mean squared error (``pooled_psnr_db``)."""
  return float(psnr_of_mse(np.mean(mse)) if pooled else np.mean(psnr_of_mse(mse)))


def pca_psnr(train: np.ndarray, val: np.ndarray, k: int, pooled: bool = False) -> float:
  """PSNR (per-image mean, or ``pooled``) of val images projected on train's top-k components."""
  scores = baselines.psnr(baselines.fit_pca(train, k), val)
  return scores["pooled_psnr_db" if pooled else "psnr_db"]


def _residual_energy(x: np.ndarray, pca: baselines.PCA) -> np.ndarray:
  """Per-image squared error of projecting x on a PCA's subspace, projections unformed."""
  d = x - pca.mean
  return np.sum(d * d, axis=1) - np.sum((d @ pca.basis.T) ** 2, axis=1)


def _best_of(x: np.ndarray, fits: list) -> tuple[np.ndarray, np.ndarray]:
  """(the best subspace of each image, the clipped per-image MSE of its reconstruction there)."""
  best = np.argmin(np.stack([_residual_energy(x, fit) for fit in fits]), axis=0)
  mse = np.empty(len(x))
  for c, fit in enumerate(fits):
    rows = x[best == c]
    recon = (rows - fit.mean) @ fit.basis.T @ fit.basis + fit.mean
    mse[best == c] = np.mean((np.clip(recon, 0.0, 1.0) - rows) ** 2, axis=1)
  return best, mse


def local_pca_psnr(
  train: np.ndarray, val: np.ndarray, k: int, subspaces: int, iterations: int = 15, seed: int = 0
) -> dict[str, float]:
  """Train and val PSNR (per-image mean and pooled) of k-subspaces.

  Each image is projected on the best of `subspaces` local k-PCAs.

  Lloyd iterations from a random assignment: fit one PCA per cluster, reassign every training image
  to the subspace that reconstructs it best. A cluster left with fewer than 2k images is refitted as
  the global PCA (too few images to fit k directions). One subspace's residuals in memory at a time,
  so 256×256 RGB splits fit.
  """
  x, y = baselines.flat(train), baselines.flat(val)
  labels = np.random.default_rng(seed).integers(0, subspaces, len(x))
  for _ in tqdm.trange(iterations, desc=f"{subspaces} subspaces", unit="iteration", leave=False):
    fits = [
      baselines.fit_pca_flat(x[labels == c] if np.sum(labels == c) >= 2 * k else x, k)
      for c in range(subspaces)
    ]
    labels, train_mse = _best_of(x, fits)
  _, val_mse = _best_of(y, fits)
  return {
    "local_pca_psnr_db": _db(val_mse),
    "local_pca_pooled_psnr_db": _db(val_mse, pooled=True),
    "local_pca_train_psnr_db": _db(train_mse),
    "local_pca_train_pooled_psnr_db": _db(train_mse, pooled=True),
  }


def main(argv):
  del argv
  config = _CONFIG.value
  k = _K.value or config.model.latent_dim
  ds = build_dataset(config)
  train = load_images(ds.train, ds.preprocess, desc="train images")
  val = load_images(ds.val, ds.preprocess, desc="val images")
  result = {"source": config.data.source, "n_train": len(train), "n_val": len(val)}
  result.update(baselines.report(train, val, k))
  mean_mse = np.mean((baselines.flat(train).mean(0) - baselines.flat(val)) ** 2, axis=1)
  result["mean_image_psnr_db"] = _db(mean_mse)
  result["mean_image_pooled_psnr_db"] = _db(mean_mse, pooled=True)
  if _SUBSPACES.value:
    result.update(subspaces=_SUBSPACES.value, **local_pca_psnr(train, val, k, _SUBSPACES.value))
  print(json.dumps(result))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
