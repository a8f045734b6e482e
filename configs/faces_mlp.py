"""The seed's MLP VAE on 30×30 grey anime faces, latent 10.

Run (embedded cartoon faces, no download):
  python bin/train.py --config configs/faces_mlp.py
On the reference's own 1044 faces:
  python bin/train.py --config configs/faces_mlp.py --workdir runs/faces_mlp_small \
      --config.data.source=folder:../shared/data/anime_faces_30/small
On thousands of faces, e.g. the 5000 of anime_faces_96, less weight decay pays (BENCHMARKS.md):
  python bin/train.py --config configs/faces_mlp.py:many_faces --workdir runs/faces_5000 \
      --config.data.source=folder:../shared/data/anime_faces_96/faces
Presets: ``:many_faces`` (weight decay 0.3), ``:smoke`` (seconds, for tests).
"""

from vae_jax.config import base_config, smoke, with_preset


def get_config(arg=None):
  c = base_config()
  c.data.source = "synthetic:faces"
  c.data.image_size = 30
  c.data.channels = 1
  # The reference's 940 training faces are memorised by this 1 M-parameter MLP within a few hundred
  # epochs; mirror images, ±1 px shifts, ±5° tilts, ±5 % zoom and weight decay keep it generalising.
  c.data.hflip = True
  c.data.max_shift = 1.0
  c.data.max_rotation = 5.0
  c.data.max_zoom = 0.05

  c.model.name = "mlp"
  c.model.latent_dim = 10
  c.model.encoder_hidden = (512, 96, 25)
  c.model.decoder_hidden = (25, 96, 512)
  c.model.output_activation = "sigmoid"

  c.opt.weight_decay = 1.0

  c.train.steps = 5000
  c.train.batch_size = 100
  c.train.eval_every = 1000
  c.train.ckpt_every = 1000

  def tiny(c):
    c.model.encoder_hidden = (32, 16)
    c.model.decoder_hidden = (16, 32)
    return smoke(c)

  def many_faces(c):
    c.opt.weight_decay = 0.3
    return c

  return with_preset(c, arg, {"many_faces": many_faces, "smoke": tiny})
