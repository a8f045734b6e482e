"""The run's PRNG keys: the seed's root key split once by purpose.

Training step ``n`` uses ``fold_in(keys["train"], n)``, so no key lives in
the train state and a resumed run draws what an uninterrupted one would;
evaluation and the training grids use the fixed ``eval`` and ``sample``
keys, so numbers and pictures compare across steps and with ``bin/evaluate.py``.
"""

from __future__ import annotations

import jax

PURPOSES = ("init", "train", "eval", "sample")


def split_root_key(seed: int) -> dict[str, jax.Array]:
  """One key per purpose (``PURPOSES``), derived once from the run's seed."""
  return dict(zip(PURPOSES, jax.random.split(jax.random.key(seed), len(PURPOSES)), strict=True))
