"""Split, seeded shuffling, exact resumption and eager loading of the data pipeline.

The source is a small ``.npz`` whose image ``i`` is filled with the value ``i``,
so every batch says which source images it holds, even after resizing.
"""

from __future__ import annotations

import itertools
import json

import jax
import numpy as np
import pytest

from vae_jax.config import base_config
from vae_jax.data.dataset import build_dataset, load_images, split_indices
from vae_jax.data.pipeline import DeviceBatches, train_iterator

NUM_IMAGES, IMAGE_SIZE = 50, 4
BATCH = 6  # does not divide the 40 training images: batches straddle epochs


# The three ways images reach the iterator: decoded once into the cache (already preprocessed),
# preprocessed batch by batch (no cache), and an array already of the output shape (used as it is).
@pytest.fixture(
  scope="module",
  params=[(6, True), (6, False), (IMAGE_SIZE, True)],
  ids=["cached", "uncached", "as-is"],
)
def dataset(request, tmp_path_factory):
  source_size, use_cache = request.param
  folder = tmp_path_factory.mktemp("data")
  images = np.broadcast_to(
    np.arange(NUM_IMAGES, dtype=np.uint8)[:, None, None, None],
    (NUM_IMAGES, source_size, source_size, 1),
  )
  np.savez(folder / "indexed.npz", images=images)
  config = base_config()
  config.data.source = f"npz:{folder / 'indexed.npz'}"
  config.data.image_size = IMAGE_SIZE
  config.data.channels = 1
  config.data.val_fraction = 0.2
  config.data.cache = use_cache
  config.data.cache_dir = str(folder / "cache")
  return build_dataset(config)


def _indices(batch: np.ndarray) -> list[int]:
  """Source index of every image of a batch (each image is constant)."""
  assert np.all(batch == batch[:, :1, :1, :1])
  return batch[:, 0, 0, 0].astype(int).tolist()


def _take(iterator, n: int) -> list[np.ndarray]:
  return [np.asarray(b) for b in itertools.islice(iterator, n)]


# --- Train/validation split ----------------------------------------------------------------------


@pytest.mark.parametrize(
  "n, fraction, n_val", [(100, 0.1, 10), (7, 0.01, 1), (50, 0.0, 0), (9, 0.5, 4)]
)
def test_split_is_deterministic_disjoint_covering_and_sized(n, fraction, n_val):
  train, val = split_indices(n, fraction, seed=3)
  train2, val2 = split_indices(n, fraction, seed=3)
  np.testing.assert_array_equal(train, train2)
  np.testing.assert_array_equal(val, val2)
  assert len(val) == n_val and len(train) == n - n_val
  assert not set(train.tolist()) & set(val.tolist())
  assert sorted(train.tolist() + val.tolist()) == list(range(n))
  assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)  # sorted


def test_split_depends_on_the_seed():
  splits = {tuple(split_indices(100, 0.1, seed)[1].tolist()) for seed in range(5)}
  assert len(splits) == 5


@pytest.mark.parametrize("n, fraction", [(10, 1.0), (10, -0.1), (1, 0.5)])
def test_split_rejects_impossible_requests(n, fraction):
  with pytest.raises(ValueError, match=r"val_fraction|nothing left"):
    split_indices(n, fraction, seed=0)


def test_dataset_views_follow_the_split(dataset):
  assert dataset.image_shape == (IMAGE_SIZE, IMAGE_SIZE, 1)
  assert len(dataset.train) == 40 and len(dataset.val) == 10
  for view, indices in ((dataset.train, dataset.train_indices), (dataset.val, dataset.val_indices)):
    for i in (0, len(view) - 1):
      assert int(view[i][0, 0, 0]) == indices[i]


# --- Training stream -----------------------------------------------------------------------------


def test_batches_have_the_image_shape_and_dtype(dataset):
  (batch,) = _take(train_iterator(dataset, BATCH, seed=0), 1)
  assert batch.shape == (BATCH, IMAGE_SIZE, IMAGE_SIZE, 1)
  assert batch.dtype == np.uint8
  assert set(_indices(batch)) <= set(dataset.train_indices.tolist())


def test_the_seed_decides_the_order(dataset):
  a = _take(train_iterator(dataset, BATCH, seed=0), 8)
  b = _take(train_iterator(dataset, BATCH, seed=0), 8)
  c = _take(train_iterator(dataset, BATCH, seed=1), 8)
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x, y)
  assert [_indices(x) for x in a] != [_indices(x) for x in c]


def test_each_epoch_is_a_fresh_permutation_of_the_training_split(dataset):
  n_train = len(dataset.train_indices)
  epochs = 3
  batches = _take(
    train_iterator(dataset, BATCH, seed=0), epochs * n_train // BATCH
  )  # 20 batches = 3 epochs
  stream = list(itertools.chain.from_iterable(_indices(b) for b in batches))
  assert len(stream) == epochs * n_train
  orders = [stream[e * n_train : (e + 1) * n_train] for e in range(epochs)]
  for order in orders:
    assert sorted(order) == dataset.train_indices.tolist()
  assert orders[0] != orders[1] and orders[1] != orders[2] and orders[0] != orders[2]
  assert orders[0] != sorted(orders[0])  # actually shuffled


def test_get_state_set_state_resumes_the_exact_stream(dataset):
  iterator = train_iterator(dataset, BATCH, seed=4)
  _take(iterator, 5)
  state = iterator.get_state()
  json.dumps(state)  # small and serialisable: it goes into every checkpoint
  expected = _take(iterator, 10)  # crosses the first epoch boundary (after 40 / 6 batches)

  resumed = train_iterator(dataset, BATCH, seed=4)
  resumed.set_state(state)
  for x, y in zip(_take(resumed, 10), expected, strict=True):
    np.testing.assert_array_equal(x, y)


def test_batch_larger_than_the_training_split_raises_suggesting_one_that_fits(dataset):
  with pytest.raises(
    ValueError, match="batch_size=41 is larger than the 40 training images"
  ) as error:
    train_iterator(dataset, 41, seed=0)
  suggested = int(str(error.value).rsplit("--config.train.batch_size=", 1)[1].rstrip("."))
  assert next(iter(train_iterator(dataset, suggested, seed=0))).shape[0] == suggested


# --- The split held on the device ----------------------------------------------------------------


def test_device_batches_are_the_host_pipelines_batches_with_the_same_state(dataset):
  on_device = jax.device_put(load_images(dataset.train, dataset.preprocess))
  host = train_iterator(dataset, BATCH, seed=4)
  device = DeviceBatches(on_device, BATCH, seed=4)
  for rows, y in zip(itertools.islice(device, 12), _take(host, 12), strict=True):  # 2 epochs
    np.testing.assert_array_equal(rows.gather(), y)
  assert device.get_state() == host.get_state() == {"next_batch": 12}
  stacked = DeviceBatches(on_device, BATCH, seed=4, stack=3)
  stacked.set_state({"next_batch": 6})  # a checkpoint of either path resumes the other
  host.set_state({"next_batch": 6})
  np.testing.assert_array_equal(next(stacked).gather(), np.stack(_take(host, 3)))
  assert stacked.get_state() == {"next_batch": 9}
  with pytest.raises(ValueError, match="batch_size=41 is larger than the 40 training images"):
    DeviceBatches(on_device, 41, seed=0)


# --- Eager loading (evaluation sets, picture grids) ----------------------------------------------


def test_load_images_preprocesses_in_order(dataset):
  images = load_images(dataset.val, dataset.preprocess)
  assert images.shape == (10, IMAGE_SIZE, IMAGE_SIZE, 1) and images.dtype == np.uint8
  assert _indices(images) == dataset.val_indices.tolist()
  limited = load_images(dataset.train, dataset.preprocess, limit=3)
  assert limited.shape == (3, IMAGE_SIZE, IMAGE_SIZE, 1)
  assert _indices(limited) == dataset.train_indices[:3].tolist()
  assert load_images(dataset.val, dataset.preprocess, limit=1000).shape[0] == 10
