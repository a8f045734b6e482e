#!/usr/bin/env python
"""Explore a trained VAE in the browser: python bin/explore.py --workdir W [--colorizer W2].

Starts a local web server (127.0.0.1:8000 by default), prints its URL and
serves until Ctrl-C: a slider per latent dimension, a 2-D latent plane,
prior draws, the gallery of held-out images (or --data), your own pictures
(drop or upload them), interpolation and traversal strips, colourised faces
with --colorizer. The page's HTTP API is described in the README.
"""

from absl import app, flags

from vae_jax.cli import parse_flags_or_explain, run_or_explain, setup_logging
from vae_jax.explorer.server import make_explorer, serve

_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Training workdir of a VAE (its newest checkpoint)."
)
_COLORIZER = flags.DEFINE_string(
  "colorizer", None, "Workdir of a colouriser (configs/colorizer.py) for grey faces."
)
_DATA = flags.DEFINE_string(
  "data", None, "The gallery's images from this source (folder:PATH, …) instead of held-out ones."
)
_HOST = flags.DEFINE_string(
  "host", "127.0.0.1", "Address to listen on; 0.0.0.0 lets anyone who reaches the port use it."
)
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on (0: any free one).")
_OPEN = flags.DEFINE_bool("open", False, "Open the page in the default browser.")


def main(argv):
  del argv
  setup_logging()

  def start():
    explorer = make_explorer(_WORKDIR.value, _COLORIZER.value, _DATA.value)
    return serve(explorer, _HOST.value, _PORT.value, _OPEN.value)

  server = run_or_explain(start)
  print(f"Exploring {_WORKDIR.value} at {server.url} (Ctrl-C stops)", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    print("Stopped.")
  finally:
    server.server_close()


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main, flags_parser=parse_flags_or_explain)
