"""The evaluation report: its numbers agree with training's, the bound holds, any source works."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from vae_jax import evaluation
from vae_jax.data.report import NoUsableImagesError
from vae_jax.data.synthetic import FACE_FACTORS
from vae_jax.evaluation import evaluate_workdir
from vae_jax.inference import open_run

KEYS = (
  "n_images",
  "neg_elbo_nats",
  "bits_per_dim",
  "iwae_nll_nats",
  "psnr_db",
  "pooled_psnr_db",
  "mse",
  "ssim",
  "active_units",
  "kl_per_dim",
)


@pytest.fixture(scope="module")
def workdir(smoke_vae):
  return smoke_vae[0]


@pytest.fixture(scope="module")
def report(workdir):
  return evaluate_workdir(workdir, iw_samples=20)


def test_report_agrees_with_the_training_loops_validation(workdir, report):
  logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  last_val = [r for r in logged if r["split"] == "val"][-1]
  assert all(k in report for k in KEYS)
  assert report["n_images"] == 12  # 48 smoke images, a quarter held out
  for k in ("neg_elbo_nats", "bits_per_dim", "psnr_db", "pooled_psnr_db"):
    assert report[k] == pytest.approx(last_val[k], rel=1e-4), k
  # Pooled: the PSNR of the split's mean squared error; by Jensen's inequality it is at most the
  # mean per-image PSNR.
  assert report["pooled_psnr_db"] == pytest.approx(-10 * np.log10(report["mse"]), rel=1e-6)
  assert report["pooled_psnr_db"] <= report["psnr_db"] + 1e-6
  np.testing.assert_allclose(report["kl_per_dim"], last_val["kl_per_dim"], rtol=1e-3, atol=1e-3)
  assert report["bits_per_dim"] == pytest.approx(report["neg_elbo_nats"] / (30 * 30 * np.log(2)))
  assert 0 <= report["active_units"] <= 10 and -1 < report["ssim"] <= 1
  json.dumps(report)


def test_importance_weighting_tightens_the_bound(workdir, report):
  """K = 1 estimates −ELBO (one draw each, roughly); K = 20 is a tighter (lower) NLL bound."""
  single = evaluate_workdir(workdir, iw_samples=1)
  assert single["iwae_nll_nats"] == pytest.approx(single["neg_elbo_nats"], rel=0.01)
  assert report["iwae_nll_nats"] < single["iwae_nll_nats"]
  assert report["iwae_nll_nats"] < report["neg_elbo_nats"]


def test_synthetic_source_reports_factors_and_mig(report):
  factors = report["factors"]
  assert set(factors["per_factor"]) == set(FACE_FACTORS)
  assert 0.0 <= factors["mig"] <= 1.0 and factors["n_images"] == 12
  for row in factors["per_factor"].values():
    assert len(row["nmi_per_dim"]) == len(row["corr_per_dim"]) == 10
    assert row["nmi"] == max(row["nmi_per_dim"]) and row["best_dim"] == row["nmi_per_dim"].index(
      row["nmi"]
    )


def test_any_folder_is_scored_with_the_runs_preprocessing(workdir, tmp_path, monkeypatch):
  """Through the decode cache, as training reads folders: an unreadable file is skipped."""
  monkeypatch.setenv("VAE_JAX_CACHE_DIR", str(tmp_path / "cache"))
  folder = tmp_path / "pictures"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(5):  # RGB and of another size: the run wants 30×30 grey
    Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(folder / f"{i}.png")
  (folder / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  result = evaluate_workdir(workdir, data=f"folder:{folder}", iw_samples=2, max_images=4)
  assert result["n_images"] == 4 and result["source"] == f"folder:{folder}"
  assert "factors" not in result and "split" not in result
  assert (
    evaluate_workdir(workdir, data=f"folder:{folder}", iw_samples=2, max_images=None)["n_images"]
    == 5
  )
  assert any((tmp_path / "cache").iterdir())


def test_a_folder_of_only_unusable_files_is_a_clear_error(workdir, tmp_path, monkeypatch):
  monkeypatch.setenv("VAE_JAX_CACHE_DIR", str(tmp_path / "cache"))
  (tmp_path / "a.png").write_bytes(b"not an image")
  with pytest.raises(NoUsableImagesError, match="No usable images"):
    evaluate_workdir(workdir, data=f"folder:{tmp_path}", iw_samples=2)


def test_command_line_prints_one_json_object(workdir):
  cmd = [
    sys.executable,
    str(ROOT / "bin" / "evaluate.py"),
    f"--workdir={workdir}",
    "--split=train",
    "--samples=16",
    "--baseline",
  ]
  done = subprocess.run(cmd, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.loads(done.stdout)
  assert result["n_images"] == 36 and result["split"] == "train"
  # The smoke model is tiny: its default K is the largest.
  assert result["iw_samples"] == 100 and "chosen for this model's cost" in done.stderr
  realism = result["realism"]
  assert realism["n_images"] == 16 and set(realism["auc"]) == {"gmm", "prior"}
  assert all(0.0 <= auc <= 1.0 for auc in realism["auc"].values())
  baseline = result["baseline"]
  assert baseline["components"] == 10 and 0 < baseline["ppca_bits_per_dim"] < 8
  assert baseline["ppca_noise_levels"] > 0 and np.isfinite(baseline["pca_psnr_db"])


def test_the_default_k_fits_the_budget_of_the_model_and_images(workdir):
  run = open_run(workdir)
  ks = [evaluation.default_iw_samples(run, n) for n in (10, 10**4, 10**5, 10**6, 10**9)]
  assert ks[0] == 100 and ks[-1] == 1 and ks == sorted(ks, reverse=True) and len(set(ks)) > 2
  assert set(ks) <= {1, 2, 5, 10, 20, 50, 100}


def test_bad_arguments_are_clear_errors(workdir):
  with pytest.raises(ValueError, match="iw_samples"):
    evaluate_workdir(workdir, iw_samples=0)
  with pytest.raises(ValueError, match="split"):
    evaluate_workdir(workdir, split="test")
  with pytest.raises(ValueError, match="max_images must be at least 1"):
    evaluate_workdir(workdir, max_images=0)
  with pytest.raises(ValueError, match="samples must be at least 0"):
    evaluate_workdir(workdir, samples=-1)
