#!/usr/bin/env python
"""Score a trained VAE: python bin/evaluate.py --workdir W [--data SOURCE] [--iw_samples K].

Prints one JSON object on stdout (progress goes to stderr), e.g.
  python bin/evaluate.py --workdir runs/faces_mlp --data folder:~/my_faces --iw_samples 100
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
  "iw_samples", 100, "K of the importance-weighted bound (1 gives the ELBO)."
)
_MAX_IMAGES = flags.DEFINE_integer("max_images", 2000, "Score at most this many images.")


def main(argv):
  del argv
  setup_logging()
  result = run_or_explain(
    lambda: evaluate_workdir(
      _WORKDIR.value, _DATA.value, _SPLIT.value, _IW_SAMPLES.value, _MAX_IMAGES.value
    )
  )
  print(json.dumps(result))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main, flags_parser=parse_flags_or_explain)
