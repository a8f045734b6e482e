#!/usr/bin/env python
"""PCA baseline: held-out PSNR of a k-component PCA fitted on a config's training split.

The VAE's reconstruction PSNR means little without this yardstick: a linear
code of the same size as the latent. Same split, preprocessing and PSNR
definition (mean over images of per-image PSNR on [0, 1]) as training.

  python benchmarks/pca_baseline.py --config configs/faces_mlp.py \
      --config.data.source=folder:../shared/data/anime_faces_30/small
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vae_jax.data.pipeline import build_dataset, load_images  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_K = flags.DEFINE_integer("components", None, "PCA components (default: the config's latent_dim).")


def pca_psnr(train: np.ndarray, val: np.ndarray, k: int) -> float:
  """Mean per-image PSNR (dB) of val images projected on the top-k principal components of train."""
  x = train.reshape(len(train), -1).astype(np.float64) / 255.0
  y = val.reshape(len(val), -1).astype(np.float64) / 255.0
  mean = x.mean(0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  basis = vt[:k]
  recon = np.clip((y - mean) @ basis.T @ basis + mean, 0.0, 1.0)
  mse = np.mean((recon - y) ** 2, axis=1)
  return float(np.mean(-10.0 * np.log10(np.maximum(mse, 1e-10))))


def main(argv):
  del argv
  config = _CONFIG.value
  k = _K.value or config.model.latent_dim
  ds = build_dataset(config)
  train = load_images(ds.train, ds.preprocess, desc="train images")
  val = load_images(ds.val, ds.preprocess, desc="val images")
  result = {
      "source": config.data.source,
      "n_train": len(train),
      "n_val": len(val),
      "components": k,
      "pca_psnr_db": pca_psnr(train, val, k),
      "mean_image_psnr_db": pca_psnr(train, val, 0),
  }
  print(json.dumps(result))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
