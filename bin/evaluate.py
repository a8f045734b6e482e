#!/usr/bin/env python
"""Score a trained VAE: python bin/evaluate.py --workdir W [--data SOURCE] [--samples N].

Prints one JSON object on stdout (progress goes to stderr), e.g.
  python bin/evaluate.py --workdir runs/faces_mlp --data folder:~/my_faces --iw_samples 100
  python bin/evaluate.py --workdir runs/faces_mlp --samples 500 --baseline
"""

import json

from absl import app, flags

from vae_jax.cli import parse_flags_or_explain, run_or_explain, setup_logging
from vae_jax.evaluation import evaluate_workdir

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir to restore (latest checkpoint).")
_DATA = flags.DEFINE_string(
  "data",
  None,
  "Score this source's images instead (folder:PATH, npz:PATH, ...; the first --max_images).",
)
_SPLIT = flags.DEFINE_enum(
  "split", "val", ["val", "train"], "The run's split to score (without --data)."
)
_IW_SAMPLES = flags.DEFINE_integer(
  "iw_samples",
  None,
  "K of the importance-weighted bound (1 gives the ELBO; default: the largest of 1, 2, 5, ..., 100 "
  "that the model's size and the number of images afford in about half a minute of CPU).",
)
_MAX_IMAGES = flags.DEFINE_integer("max_images", 2000, "Score at most this many images.")
_SAMPLES = flags.DEFINE_integer(
  "samples",
  0,
  "Also test how real the samples look: a classifier told to tell N decoded draws of each sampler "
  "(gmm, prior) from decoded posterior draws of N scored images; its held-out ROC AUC (0.5: "
  "indistinguishable) goes to 'realism'. 0: off.",
)
_BASELINE = flags.DEFINE_bool(
  "baseline",
  False,
  "Also fit PCA-k and probabilistic PCA-k (k the latent size) on the run's training split and "
  "score them on the same images ('baseline': PSNR and bits/dim).",
)


def main(argv):
  del argv
  setup_logging()
  result = run_or_explain(
    lambda: evaluate_workdir(
      _WORKDIR.value,
      _DATA.value,
      _SPLIT.value,
      _IW_SAMPLES.value,
      _MAX_IMAGES.value,
      samples=_SAMPLES.value,
      with_baseline=_BASELINE.value,
    )
  )
  print(json.dumps(result))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main, flags_parser=parse_flags_or_explain)
