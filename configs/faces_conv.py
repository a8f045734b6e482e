"""The seed's convolutional VAE on 30×30 grey anime faces, latent 10.

Encoder Conv 1→10 k5 → pool → Conv 10→5 k5 s2 p1 → pool (5×3×3) → heads;
decoder dense → 3×3×5 → ConvT k4 s2 → ConvT k6 s3 → ConvT k4 s1 (30×30).

Run: python bin/train.py --config configs/faces_conv.py
Presets: ``:smoke`` (seconds, for tests).
"""

from vae_jax.config import base_config, smoke, with_preset


def get_config(arg=None):
  c = base_config()
  c.data.source = "synthetic:faces"
  c.data.image_size = 30
  c.data.channels = 1
  c.data.hflip = True

  c.model.name = "conv"
  c.model.latent_dim = 10
  c.model.encoder_channels = (10, 5)
  c.model.encoder_kernels = (5, 5)
  c.model.encoder_strides = (1, 2)
  c.model.encoder_paddings = (0, 1)
  c.model.decoder_channels = (10, 3)  # then the image's channels
  c.model.decoder_kernels = (4, 6, 4)
  c.model.decoder_strides = (2, 3, 1)
  c.model.output_activation = "sigmoid"

  c.train.steps = 3000
  c.train.batch_size = 100
  # Ten steps per compiled call (lax.scan): its step is short enough for the dispatches to show, and
  # the parameters are the same.
  c.train.steps_per_dispatch = 10
  return with_preset(c, arg, {"smoke": smoke})
