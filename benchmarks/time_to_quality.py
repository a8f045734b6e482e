#!/usr/bin/env python
"""Wall time from the training command to a held-out PSNR target, compilation included.

Each run launches ``bin/train.py`` exactly as a user would, in a fresh
workdir under ``--workdir-root``, starts the clock at launch, and watches the
run's ``metrics.jsonl`` for held-out (``split: val``) PSNR. The run stops as
soon as the target is reached, or when its time limit passes. Targets are in
dB, or ``pca:K`` for the held-out PSNR of a K-component PCA fitted on the
same training split (benchmarks/pca_baseline.py). ``--psnr`` picks which
held-out PSNR the target is checked against (training logs both):
``per_image``, the mean of per-image PSNRs (``psnr_db``), or ``pooled``, the
PSNR of the split's mean squared error (``pooled_psnr_db``).

  python benchmarks/time_to_quality.py --workdir-root runs/ttq                    # faces_fast
  python benchmarks/time_to_quality.py --workdir-root runs/ttq --runs faces_fast galaxy
  python benchmarks/time_to_quality.py --workdir-root runs/ttq --runs galaxy --psnr pooled
  python benchmarks/time_to_quality.py --workdir-root runs/ttq --runs faces_fast \\
      --extra=--config.opt.learning_rate=3e-3

Prints one JSON line per run: config, workdir, psnr (the definition), target_psnr_db,
reached_psnr_db (best held-out PSNR seen), seconds (to the target; null if
not reached within the limit), and the step of that evaluation. Each run's
own log (its progress bar and evaluations) is kept in WORKDIR/train.log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


@dataclasses.dataclass(frozen=True)
class Run:
  config: str  # path relative to the repository, optionally with :preset
  overrides: tuple[str, ...]
  target: str  # dB, or "pca:K"
  limit_s: float


# The targets (issue 5): faces fast (beat PCA-10 within 60 s), faces best (17.5 dB in 10 min
# on the 5000 faces), galaxies (27 dB in 15 min). Evaluations are frequent so the target is seen
# soon after it is met.
RUNS = {
  "faces_fast": Run(
    "configs/faces_mlp.py",
    (
      f"--config.data.source=folder:{DATA / 'anime_faces_30' / 'small'}",
      "--config.train.eval_every=200",
      "--config.train.ckpt_every=100000",
    ),
    "pca:10",
    60.0,
  ),
  "faces_best": Run(
    "configs/faces_mlp.py:many_faces",
    (
      f"--config.data.source=folder:{DATA / 'anime_faces_96' / 'faces'}",
      "--config.train.eval_every=1000",
      "--config.train.ckpt_every=1000",
    ),
    "17.5",
    600.0,
  ),
  "galaxy": Run(
    "configs/galaxy.py",
    (
      f"--config.data.source=folder:{DATA / 'galaxy_zoo' / 'train'}",
      "--config.train.eval_every=100",
      "--config.train.ckpt_every=100",
    ),
    "27.0",
    900.0,
  ),
  # The same with one fixed σ instead of the default's scale per pixel (the sharper preset).
  "galaxy_sharp": Run(
    "configs/galaxy.py:sharp",
    (
      f"--config.data.source=folder:{DATA / 'galaxy_zoo' / 'train'}",
      "--config.train.eval_every=100",
      "--config.train.ckpt_every=100",
    ),
    "27.0",
    900.0,
  ),
}


def pca_target(config_path: str, overrides: tuple[str, ...], k: int, pooled: bool) -> float:
  """Held-out PSNR of a k-component PCA on the split and preprocessing the run's config gives.

  ``overrides`` are ``--config.group.field=value`` flags (values converted to the field's type).
  """
  from common import load_config
  from pca_baseline import pca_psnr

  from vae_jax.data.dataset import build_dataset, load_images

  config = load_config(Path(config_path).stem)
  for flag in overrides:
    dotted, value = flag.removeprefix("--config.").split("=", 1)
    *groups, field = dotted.split(".")
    node = config
    for group in groups:
      node = node[group]
    old = node[field]
    node[field] = value.lower() in ("1", "true") if isinstance(old, bool) else type(old)(value)
  dataset = build_dataset(config)
  train = load_images(dataset.train, dataset.preprocess)
  val = load_images(dataset.val, dataset.preprocess, config.train.max_eval_images)
  return pca_psnr(train, val, k, pooled)


PSNR_KEYS = {"per_image": "psnr_db", "pooled": "pooled_psnr_db"}


def val_psnrs(metrics_path: Path, key: str = "psnr_db") -> list[tuple[int, float]]:
  """(step, held-out PSNR ``key``) of every evaluation written so far."""
  if not metrics_path.exists():
    return []
  out = []
  for line in metrics_path.read_text().splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:  # a line being written
      continue
    if record.get("split") == "val" and key in record:
      out.append((record["step"], record[key]))
  return out


def time_run(name: str, run: Run, root: Path, extra: list[str], psnr: str = "per_image") -> dict:
  overrides = run.overrides + tuple(extra)
  config_path = run.config.split(":")[0]
  key = PSNR_KEYS[psnr]
  if run.target.startswith("pca:"):
    data_overrides = tuple(o for o in overrides if o.startswith("--config.data"))
    target = pca_target(config_path, data_overrides, int(run.target[4:]), pooled=psnr == "pooled")
  else:
    target = float(run.target)
  workdir = root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
  workdir.mkdir(parents=True)
  log_path = workdir / "train.log"
  command = [
    sys.executable,
    str(ROOT / "bin" / "train.py"),
    f"--config={ROOT / run.config}",
    f"--workdir={workdir}",
    *overrides,
  ]
  start = time.perf_counter()
  # The run's log (progress bar included) goes to a file: a pipe nobody reads until the end fills at
  # 64 KiB, after a minute or two of progress bar, and then blocks the run.
  with open(log_path, "w") as log:
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
  seconds, step_at, best = None, None, float("-inf")
  try:
    while time.perf_counter() - start < run.limit_s:
      evals = val_psnrs(workdir / "metrics.jsonl", key)
      best = max([best] + [p for _, p in evals])
      hit = [(s, p) for s, p in evals if p >= target]
      if hit:
        seconds, step_at = time.perf_counter() - start, hit[0][0]
        break
      if proc.poll() is not None:
        break
      time.sleep(0.5)
  finally:
    if proc.poll() is None:
      proc.terminate()
    proc.wait()
  if (
    proc.returncode not in (0, None)
    and seconds is None
    and not val_psnrs(workdir / "metrics.jsonl")
  ):
    print(
      f"{name}: bin/train.py failed ({log_path}):\n{log_path.read_text()[-3000:]}", file=sys.stderr
    )
  return {
    "run": name,
    "config": run.config,
    "overrides": list(overrides),
    "workdir": str(workdir),
    "psnr": psnr,
    "target_psnr_db": round(target, 3),
    "reached_psnr_db": round(best, 3) if best > float("-inf") else None,
    "seconds": round(seconds, 1) if seconds is not None else None,
    "step": step_at,
    "limit_s": run.limit_s,
  }


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--workdir-root", required=True, help="Where each run's fresh workdir is created."
  )
  parser.add_argument("--runs", nargs="+", default=["faces_fast"], choices=sorted(RUNS))
  parser.add_argument(
    "--limit-s", type=float, default=None, help="Override every run's time limit."
  )
  parser.add_argument(
    "--extra", action="append", default=[], help="More --config.x=y flags for every run."
  )
  parser.add_argument(
    "--psnr",
    choices=sorted(PSNR_KEYS),
    default="per_image",
    help="Held-out PSNR checked against the target: the mean of per-image PSNRs, or the PSNR "
    "of the mean squared error over the split (pooled).",
  )
  args = parser.parse_args()
  root = Path(args.workdir_root)
  root.mkdir(parents=True, exist_ok=True)
  for name in args.runs:
    run = RUNS[name]
    if args.limit_s is not None:
      run = dataclasses.replace(run, limit_s=args.limit_s)
    print(json.dumps(time_run(name, run, root, args.extra, args.psnr)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
