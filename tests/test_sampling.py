"""Sample grids of a tiny run: shapes, determinism, interpolation ends, traversal, manifold."""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from conftest import ROOT
from PIL import Image

from vae_jax import images, sampling
from vae_jax.data.dataset import run_images
from vae_jax.inference import open_run
from vae_jax.trainer import Checkpointer, create_train_state

H, W, C = 30, 30, 1  # faces_mlp:smoke images
LATENT = 10


@pytest.fixture(scope="module")
def trained(smoke_vae):
  """The shared smoke run of faces_mlp, restored the way bin/sample.py restores it."""
  workdir, state = smoke_vae
  run = open_run(workdir)
  subset, preprocess = run_images(run.config)
  x = np.stack([preprocess(subset[i]) for i in range(6)])
  return workdir, state, run, x


def test_load_run_restores_the_final_parameters(trained):
  _, state, run, _ = trained
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(run.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert run.config.model.latent_dim == LATENT


def test_load_run_without_checkpoint_says_what_to_do(trained, tmp_path):
  workdir = trained[0]
  (tmp_path / "config.json").write_text((workdir / "config.json").read_text())
  with pytest.raises(FileNotFoundError, match="train first"):
    open_run(tmp_path)


def test_load_run_reads_parameters_whatever_the_optimiser_state(trained, tmp_path):
  """A checkpoint whose optimiser state has another layout (an earlier version's) still samples."""
  workdir, state, _run, _ = trained
  (tmp_path / "config.json").write_text((workdir / "config.json").read_text())
  other = create_train_state(lambda _: state.params, optax.sgd(0.1), jax.random.key(0))
  ckpt = Checkpointer(tmp_path / "checkpoints")
  ckpt.save(7, other)
  ckpt.wait()
  ckpt.close()
  restored = open_run(tmp_path).params
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(restored), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_load_run_from_a_url_says_to_use_a_filesystem_path():
  with pytest.raises(ValueError, match="gcsfuse"):
    open_run("gs://bucket/runs/galaxy")


def test_recon_rows_alternate_inputs_and_reconstructions(trained):
  _, _, run, x = trained
  tiles = sampling.recon_tiles(run, x[:5], ncol=4)
  assert tiles.shape == (4, 4, H, W, C) and tiles.dtype == np.uint8
  np.testing.assert_array_equal(tiles[0], x[:4])
  np.testing.assert_array_equal(tiles[2, 0], x[4])
  expected = run.reconstruct(x[:5])
  np.testing.assert_array_equal(tiles[1], expected[:4])
  np.testing.assert_array_equal(tiles[3, 0], expected[4])
  assert (tiles[2:, 1:] == 255).all()  # blank padding after the last image


def test_prior_grid_shape_determinism_and_temperature(trained):
  run = trained[2]
  a = sampling.prior_tiles(run, jax.random.key(0), 3)
  assert a.shape == (3, 3, H, W, C)
  np.testing.assert_array_equal(a, sampling.prior_tiles(run, jax.random.key(0), 3))
  assert not np.array_equal(a, sampling.prior_tiles(run, jax.random.key(1), 3))
  cold = sampling.prior_tiles(run, jax.random.key(0), 2, temperature=0.0)  # every draw is z = 0
  np.testing.assert_array_equal(
    cold, np.broadcast_to(run.decode(np.zeros((1, LATENT))), cold.shape)
  )


@pytest.mark.parametrize("spherical", [False, True])
def test_interpolation_ends_are_the_reconstructions_of_the_inputs(trained, spherical):
  _, _, run, x = trained
  tiles = sampling.interp_tiles(run, x[:2], x[2:4], spherical)
  assert tiles.shape == (2, 2 + 2 + sampling.INTERIOR_POINTS, H, W, C)
  np.testing.assert_array_equal(tiles[:, 0], x[:2])
  np.testing.assert_array_equal(tiles[:, -1], x[2:4])
  np.testing.assert_array_equal(tiles[:, 1], run.reconstruct(x[:2]))
  np.testing.assert_array_equal(tiles[:, -2], run.reconstruct(x[2:4]))


def test_interpolate_linear_and_spherical_paths():
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal(5), rng.standard_normal(5)
  b *= np.linalg.norm(a) / np.linalg.norm(b)
  for spherical in (False, True):
    path = sampling.interpolate(a, b, 9, spherical)
    assert path.shape == (9, 5)
    np.testing.assert_allclose(path[0], a, rtol=1e-6)
    np.testing.assert_allclose(path[-1], b, rtol=1e-6)
  np.testing.assert_allclose(sampling.interpolate(a, b, 9)[4], (a + b) / 2, rtol=1e-6)
  slerp = sampling.interpolate(a, b, 9, spherical=True)
  np.testing.assert_allclose(
    np.linalg.norm(slerp, axis=1), np.linalg.norm(a), rtol=1e-5
  )  # stays on the sphere
  angles = np.arccos(np.clip(slerp[:-1] @ b / np.linalg.norm(a) ** 2, -1, 1))
  np.testing.assert_allclose(
    np.diff(angles), np.diff(angles)[0], rtol=1e-4
  )  # at constant angular speed
  np.testing.assert_allclose(
    sampling.interpolate(a, 2 * a, 3, spherical=True)[1], 1.5 * a, rtol=1e-6
  )


def test_traverse_codes_move_one_dimension_per_row():
  base = np.arange(4, dtype=np.float32)
  codes = sampling.traverse_codes(base, steps=5, radius=3.0)
  assert codes.shape == (4, 5, 4)
  for d in range(4):
    others = np.delete(codes[d], d, axis=1)
    np.testing.assert_array_equal(others, np.broadcast_to(np.delete(base, d), others.shape))
    np.testing.assert_allclose(codes[d, :, d], base[d] + np.array([-3, -1.5, 0, 1.5, 3]))


def test_traverse_tiles_centre_column_is_the_reconstruction(trained):
  _, _, run, x = trained
  tiles = sampling.traverse_tiles(run, x[0], steps=5)
  assert tiles.shape == (LATENT, 5, H, W, C)
  recon = run.reconstruct(x[:1])[0]
  np.testing.assert_array_equal(tiles[:, 2], np.broadcast_to(recon, tiles[:, 2].shape))


def test_manifold_codes_and_tiles(trained):
  run = trained[2]
  codes = sampling.manifold_codes(LATENT, (3, 7), 4)
  assert codes.shape == (4, 4, LATENT)
  assert np.all(np.delete(codes, [3, 7], axis=2) == 0)
  np.testing.assert_allclose(codes[:, 0, 3], codes[0, :, 7])  # same values on both axes
  assert codes[0, 0, 3] == pytest.approx(-1.6448536, abs=1e-5)  # the 5% Gaussian quantile
  np.testing.assert_allclose(codes[:, :, 3], codes[:, ::-1, 3])  # rows move z3 only
  assert sampling.manifold_tiles(run, (3, 7), 4).shape == (4, 4, H, W, C)
  with pytest.raises(ValueError, match="two different dimensions"):
    sampling.manifold_codes(LATENT, (2, 2), 4)


def test_largest_kl_dims():
  assert sampling.largest_kl_dims(np.array([0.1, 3.0, 0.5, 2.0])) == (1, 3)


def test_picture_labels_rows_and_keeps_the_grid(trained):
  tiles = sampling.recon_tiles(trained[2], trained[3][:4], ncol=4)
  plain = images.layout(tiles)
  np.testing.assert_array_equal(plain, images.make_grid(tiles.reshape((-1, H, W, C)), 4))
  labelled = images.layout(tiles, row_labels=["z0  KL 1.00", "z1", "z2", "z3"], caption="hello")
  assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] > plain.shape[1]
  label_w, caption_h = labelled.shape[1] - plain.shape[1], labelled.shape[0] - plain.shape[0]
  np.testing.assert_array_equal(labelled[caption_h:, label_w:], plain)
  assert (labelled[caption_h:, :label_w] < 128).any()  # text drawn in the label column


@pytest.mark.parametrize(
  "kind", sorted(set(sampling.KINDS) - {"colorize"})
)  # colorize: tests/test_colorizer.py
def test_each_kind_writes_the_same_png_for_the_same_seed(trained, kind, tmp_path):
  workdir = trained[0]
  options = sampling.options(kind, n=3)
  first = sampling.write_samples(workdir, options, tmp_path / "a.png", seed=5)
  second = sampling.write_samples(workdir, options, tmp_path / "b.png", seed=5)
  a, b = np.asarray(Image.open(first)), np.asarray(Image.open(second))
  assert a.ndim == 3 and a.shape[-1] == 3 and a.shape[0] > H * images.default_scale(H)
  np.testing.assert_array_equal(a, b)
  if kind in ("recon", "prior", "interp"):
    other = sampling.write_samples(workdir, options, tmp_path / "c.png", seed=6)
    assert not np.array_equal(a, np.asarray(Image.open(other)))


def test_tilde_in_workdir_and_out_means_home(trained, tmp_path, monkeypatch):
  workdir = trained[0]
  monkeypatch.setenv("HOME", str(workdir.parent))
  monkeypatch.chdir(tmp_path)  # a literal ./~ would appear here
  default = sampling.write_samples(f"~/{workdir.name}", sampling.Prior(side=2))
  assert default == workdir / "samples" / "prior.png" and default.is_file()
  assert (
    sampling.write_samples(workdir, sampling.Prior(), "~/out/prior.png")
    == workdir.parent / "out" / "prior.png"
  )
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", sorted(sampling.KINDS))
@pytest.mark.parametrize("bad", [{"n": 0}, {"n": -2}, {"temperature": -1.0}])
def test_a_picture_of_no_size_or_negative_temperature_is_a_clear_error(kind, bad):
  if "temperature" in bad and kind not in ("prior", "colorize"):
    pytest.skip("only prior draws have a temperature")
  with pytest.raises(ValueError, match="at least"):
    sampling.options(kind, **bad)


def test_unknown_kind_is_a_clear_error(trained):
  with pytest.raises(ValueError, match="Unknown sample kind"):
    sampling.options("nope")


def test_command_line_writes_the_default_path(trained):
  workdir = trained[0]
  cmd = [
    sys.executable,
    str(ROOT / "bin" / "sample.py"),
    f"--workdir={workdir}",
    "--kind=manifold",
    "--n=3",
    "--dims=1,4",
  ]
  done = subprocess.run(cmd, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]
  path = workdir / "samples" / "manifold.png"
  assert done.stdout.strip() == str(path) and path.exists()
