#!/usr/bin/env python
"""PCA baseline: held-out PSNR of a k-component PCA fitted on a config's training split.

The VAE's reconstruction PSNR means little without this yardstick: a linear
code of the same size as the latent. Same split, preprocessing and PSNR
definitions as training: ``*_psnr_db`` the mean over images of per-image
PSNR on [0, 1], ``*_pooled_psnr_db`` the PSNR of the mean squared error.

  python benchmarks/pca_baseline.py --config configs/faces_mlp.py \
      --config.data.source=folder:../shared/data/anime_faces_30/small

``--subspaces=K`` adds a second yardstick, for what a piecewise-linear code
of the same size can gain over PCA (generously counted): K local k-component PCAs
(k-subspaces clustering of the training split), each image coded by the one
that reconstructs it best — k numbers plus a free choice among K subspaces.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vae_jax.data.pipeline import build_dataset, load_images  # noqa: E402
from vae_jax.losses import psnr_of_mse  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_K = flags.DEFINE_integer("components", None, "PCA components (default: the config's latent_dim).")
_SUBSPACES = flags.DEFINE_integer(
    "subspaces", 0, "Also fit this many local PCAs (k-subspaces) and report their best-of PSNR (0: off).")


def _flat(images: np.ndarray) -> np.ndarray:
  return images.reshape(len(images), -1).astype(np.float64) / 255.0


def _fit_pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Mean and top-k principal directions (rows) of the flat images x."""
  mean = x.mean(0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  return mean, vt[:k]


def _project(x: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
  return (x - mean) @ basis.T @ basis + mean


def _psnr(recon: np.ndarray, x: np.ndarray, pooled: bool = False) -> float:
  """PSNR (dB) of reconstructions clipped to [0, 1] as decoded images are: the mean of per-image PSNRs
  (training's ``psnr_db``), or with ``pooled`` the PSNR of the mean squared error (``pooled_psnr_db``)."""
  mse = np.mean((np.clip(recon, 0.0, 1.0) - x) ** 2, axis=1)
  return float(psnr_of_mse(np.mean(mse)) if pooled else np.mean(psnr_of_mse(mse)))


def pca_psnr(train: np.ndarray, val: np.ndarray, k: int, pooled: bool = False) -> float:
  """PSNR (dB, per-image mean or ``pooled``) of val images projected on the top-k principal components of train."""
  mean, basis = _fit_pca(_flat(train), k)
  y = _flat(val)
  return _psnr(_project(y, mean, basis), y, pooled)


def local_pca_psnr(train: np.ndarray, val: np.ndarray, k: int, subspaces: int, iterations: int = 15,
                   seed: int = 0) -> tuple[float, float]:
  """(train, val) mean PSNR of k-subspaces: each image projected on the best of `subspaces` local k-PCAs.

  Lloyd iterations from a random assignment: fit one PCA per cluster, reassign every training image to
  the subspace that reconstructs it best. A cluster left with fewer than 2k images is refitted as the
  global PCA (too few images to fit k directions).
  """
  x, y = _flat(train), _flat(val)
  labels = np.random.default_rng(seed).integers(0, subspaces, len(x))
  for _ in range(iterations):
    fits = [_fit_pca(x[labels == c] if np.sum(labels == c) >= 2 * k else x, k) for c in range(subspaces)]
    recon_x = np.stack([_project(x, *fit) for fit in fits])
    labels = np.argmin(np.sum((recon_x - x) ** 2, axis=2), axis=0)
  recon_y = np.stack([_project(y, *fit) for fit in fits])
  best_y = np.argmin(np.sum((recon_y - y) ** 2, axis=2), axis=0)
  return (_psnr(recon_x[labels, np.arange(len(x))], x),
          _psnr(recon_y[best_y, np.arange(len(y))], y))


def main(argv):
  del argv
  config = _CONFIG.value
  k = _K.value or config.model.latent_dim
  ds = build_dataset(config)
  train = load_images(ds.train, ds.preprocess, desc="train images")
  val = load_images(ds.val, ds.preprocess, desc="val images")
  y = _flat(val)
  mean, basis = _fit_pca(_flat(train), k)
  recon = {"pca": _project(y, mean, basis), "mean_image": np.broadcast_to(mean, y.shape)}
  result = {"source": config.data.source, "n_train": len(train), "n_val": len(val), "components": k}
  for name, r in recon.items():
    result[f"{name}_psnr_db"] = _psnr(r, y)
    result[f"{name}_pooled_psnr_db"] = _psnr(r, y, pooled=True)
  if _SUBSPACES.value:
    train_db, val_db = local_pca_psnr(train, val, k, _SUBSPACES.value)
    result.update(subspaces=_SUBSPACES.value, local_pca_train_psnr_db=train_db, local_pca_psnr_db=val_db)
  print(json.dumps(result))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
