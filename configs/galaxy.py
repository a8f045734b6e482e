"""The seed's fully convolutional galaxy VAE: 256×256×3, latent 4, tanh output.

Four stride-2 convolutions (as space-to-depth + dense, see vae_jax/models/fcn.py),
channels 16-32-64-128, a dense bottleneck to 4 latents, four ×2 upsamplings
(the two coarsest as kernel-4 stride-2 transposed convolutions, written as
2×2 sub-pixel convolutions, so neighbouring blocks overlap), and a learned
prior (vae_jax/models/vae.py): without overlapping upsamplings and the
learned prior, prior samples were patchworks of 16×16 blocks instead of
galaxies.

Run (embedded procedural galaxies, no download):
  python bin/train.py --config configs/galaxy.py
On Galaxy Zoo photographs (424×424: the centre 256×256 is kept at native resolution):
  python bin/train.py --config configs/galaxy.py --workdir runs/galaxy_zoo \
      --config.data.source=folder:../shared/data/galaxy_zoo/train
On a quiet 2-core CPU this trains at about 70 images/s: the default 2400
steps of 16 images take about 10 minutes (the run prints its own estimate
after the first steps). Presets: ``:sharp`` (one fixed σ instead of the logistic's scale per
pixel: the higher PSNR, the worse bits/dim), ``:smoke`` (seconds, 32×32, for tests).
"""

from vae_jax.config import base_config, smoke, with_preset


def get_config(arg=None):
  c = base_config()
  c.data.source = "synthetic:galaxies"
  c.data.image_size = 256
  c.data.channels = 3
  c.data.crop_size = 256
  c.data.hflip = True
  c.data.synthetic.num_images = 2000
  c.data.synthetic.image_size = 256

  c.model.name = "fcn"
  c.model.latent_dim = 4
  c.model.channels = (16, 32, 64, 128)
  c.model.mix = 0
  # Overlapping upsamplings at 16→32→64 (k4 s2) for smooth samples (alternatives in BENCHMARKS.md).
  c.model.up_neighbourhoods = (2, 2, 1, 1)
  c.model.learned_prior = True
  c.model.output_activation = "tanh"

  # A scale for every pixel (the discretised logistic): most pixels are dark sky with a noise of a
  # few levels, which one σ for the whole image cannot express. A whole bit/dim below PPCA-4, for
  # about 0.3 dB of PSNR against one fixed σ (the :sharp preset; BENCHMARKS.md).
  c.loss.likelihood = "logistic"
  # The best held-out PSNR within the time budget among the rates tried (BENCHMARKS.md).
  c.opt.learning_rate = 3e-3

  c.train.steps = 2400
  c.train.batch_size = 16
  # Judged by a moving average of the parameters, whose held-out score rises smoothly where the
  # latest parameters' jumps between evaluations at this learning rate.
  c.train.ema_decay = 0.99
  c.train.log_every = 25
  c.train.eval_every = 250
  c.train.ckpt_every = 250
  c.train.eval_batch_size = 32
  c.train.max_eval_images = 200

  def tiny(c):
    c.data.image_size = c.data.synthetic.image_size = 32
    c.data.crop_size = 0
    c.model.channels = (4, 8, 8, 8)
    return smoke(c)

  def sharp(c):
    c.loss.likelihood = "gaussian"
    c.loss.scale = 0.05  # about the RMSE it reaches: the best bits/dim of the fixed σ tried
    return c

  return with_preset(c, arg, {"sharp": sharp, "smoke": tiny})
