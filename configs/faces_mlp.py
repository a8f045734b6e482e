"""The seed's MLP VAE on 30×30 grey anime faces, latent 10.

Run (embedded cartoon faces, no download):
  python bin/train.py --config configs/faces_mlp.py
On the reference's own 1044 faces:
  python bin/train.py --config configs/faces_mlp.py --workdir runs/faces_mlp_small \
      --config.data.source=folder:../shared/data/anime_faces_30/small
On thousands of faces, e.g. the 5000 of anime_faces_96, less weight decay and the discretised
logistic pay (BENCHMARKS.md):
  python bin/train.py --config configs/faces_mlp.py:many_faces --workdir runs/faces_5000 \
      --config.data.source=folder:../shared/data/anime_faces_96/faces
Presets: ``:many_faces`` (weight decay 0.3, the logistic: the best bits/dim, 0.2 dB below the
sharpest PSNR), ``:many_faces_sharp`` (weight decay 0.3, one learned σ: the sharpest),
``:smoke`` (seconds, for tests).
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
  # One learned σ: the fixed σ = 0.1 (25 levels) was far below the error reached (~36 levels on real
  # faces), which cost bits/dim without changing the reconstructions. A scale per pixel (logistic)
  # gives fewer bits/dim still, but on the embedded cartoons it spends the model on their flat
  # backgrounds and loses the eyes (BENCHMARKS.md).
  c.loss.likelihood = "gaussian_learned"

  c.train.steps = 5000
  c.train.batch_size = 100
  c.train.eval_every = 1000
  c.train.ckpt_every = 1000

  def tiny(c):
    c.model.encoder_hidden = (32, 16)
    c.model.decoder_hidden = (16, 32)
    return smoke(c)

  def many_faces_sharp(c):
    c.opt.weight_decay = 0.3
    return c

  def many_faces(c):
    c.loss.likelihood = "logistic"  # 0.2 bits/dim below PPCA-10, for 0.2 dB of PSNR
    return many_faces_sharp(c)

  return with_preset(
    c, arg, {"many_faces": many_faces, "many_faces_sharp": many_faces_sharp, "smoke": tiny}
  )
