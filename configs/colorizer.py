"""Colourise grey faces: grey 30×30 (optionally a trained VAE's reconstruction) → RGB 30×30.

The default model is a small U-Net (~0.1 M parameters) that keeps the input's
luminance and predicts colour; ``--config.model.name=stacknn`` trains the
reference's 90 M-parameter "StackNN" instead.

Run:
  python bin/train.py --config configs/colorizer.py \
      --config.data.source=folder:../shared/data/anime_faces_30/small
  # colour what a VAE produces, as the reference did:
  python bin/train.py --config configs/colorizer.py --config.colorizer.vae_workdir=runs/faces_conv
  python bin/sample.py --workdir runs/faces_conv --kind colorize --colorizer runs/colorizer
Presets: ``:smoke`` (seconds, for tests).

Expect (anime_faces_30/small, 940 train / 104 held-out faces, 2 shared CPU cores):
held-out colour PSNR 22.2 dB after ~700 steps (4 min), against 20.8 dB for the
grey input itself; it plateaus there (colour from grey alone is ambiguous, and
MSE learns warm average tints). StackNN reaches 13.7 dB in the same 4 minutes
(67 steps): benchmarks/colorizer_compare.py.
"""

import ml_collections

from vae_jax.config import base_config, smoke, with_preset


def _smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  smoke(c)
  c.model.features = (4, 8)
  return c


def get_config(arg=None):
  c = base_config()
  c.task = "colorizer"
  c.data.source = "synthetic:faces"
  c.data.image_size = 30
  c.data.channels = 3  # the RGB targets; the grey inputs are derived from them in the train step
  c.data.hflip = True

  c.model = ml_collections.ConfigDict()
  c.model.name = "conv"  # conv | stacknn (the reference, ~90 M parameters)
  c.model.features = (16, 32, 64)  # conv: channels per U-Net level, full resolution first

  c.loss = ml_collections.ConfigDict()
  c.loss.luminance_weight = (
    1.0  # × MSE(0.30 R + 0.59 G + 0.11 B, grey input); the reference: equal weights
  )

  c.colorizer = ml_collections.ConfigDict()
  c.colorizer.vae_workdir = ""  # a grey VAE run: train on its reconstructions of the grey images
  c.colorizer.input_noise = 0.02  # σ of the Gaussian noise on the grey input ([0, 1] scale)

  c.opt.learning_rate = 3e-3
  c.train.steps = 1500
  c.train.batch_size = 64
  return with_preset(c, arg, {"smoke": _smoke})
