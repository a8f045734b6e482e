#!/usr/bin/env python
"""Draw pictures from a trained VAE: python bin/sample.py --workdir W --kind KIND.

Kinds: recon, prior, interp, traverse, manifold, and colorize (with --colorizer W2).

Writes W/samples/<kind>.png (or --out) and prints its path. The same --seed
gives the same picture.
"""

from absl import app, flags

from vae_jax.cli import parse_flags_or_explain, run_or_explain, setup_logging
from vae_jax.sampling import KINDS, options, write_samples

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir to restore (latest checkpoint).")
_KIND = flags.DEFINE_enum("kind", None, list(KINDS), "Which picture to draw.")
_OUT = flags.DEFINE_string("out", None, "PNG to write (default: WORKDIR/samples/KIND.png).")
_N = flags.DEFINE_integer(
  "n",
  None,
  "The picture's size: recon images (24), prior and manifold grid side (8, 12), interp pairs (6), "
  "traverse steps (11), colorize faces (24).",
)
_SEED = flags.DEFINE_integer("seed", 0, "Picks the images and the prior draws.")
_TEMPERATURE = flags.DEFINE_float(
  "temperature", 1.0, "prior, colorize: scales the spread of the latent draws (1: as fitted)."
)
_SAMPLER = flags.DEFINE_enum(
  "sampler",
  "gmm",
  ["gmm", "prior"],
  "prior, colorize: where codes come from: gmm, a Gaussian mixture fitted to the training "
  "images' codes (fitted once on runs that lack one), or prior, N(0, I).",
)
_DATA = flags.DEFINE_string(
  "data", None, "Take images from this source (folder:PATH, npz:PATH, ...) instead."
)
_SPLIT = flags.DEFINE_enum(
  "split", "val", ["val", "train"], "The run's split to take images from (without --data)."
)
_SLERP = flags.DEFINE_bool("slerp", False, "interp: spherical instead of linear interpolation.")
_DIMS = flags.DEFINE_list(
  "dims", None, "manifold: two latent dimensions i,j (default: the two with largest KL)."
)
_COLORIZER = flags.DEFINE_string(
  "colorizer", None, "colorize: workdir of a colouriser (configs/colorizer.py)."
)


def main(argv):
  del argv
  setup_logging()

  def sample():
    kind = options(
      _KIND.value,
      _N.value,
      temperature=_TEMPERATURE.value,
      sampler=_SAMPLER.value,
      spherical=_SLERP.value,
      dims=tuple(int(d) for d in _DIMS.value) if _DIMS.value else None,
      colorizer=_COLORIZER.value,
    )
    return write_samples(_WORKDIR.value, kind, _OUT.value, _SEED.value, _DATA.value, _SPLIT.value)

  print(run_or_explain(sample))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "kind"])
  app.run(main, flags_parser=parse_flags_or_explain)
