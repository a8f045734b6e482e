"""The grain loader with worker processes, hosts and device prefetch: same data, exact state.

Image ``i`` of the generated ``.npy`` is filled with the value ``i``, so each
batch says which images it holds.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import jax
import numpy as np
import pytest

from vae_jax.config import base_config
from vae_jax.data.dataset import build_dataset, load_images
from vae_jax.data.pipeline import ShuffledBatches, train_iterator
from vae_jax.parallel import DevicePrefetch

N, SIZE, BATCH = 60, 4, 7


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  folder = tmp_path_factory.mktemp("data")
  np.save(
    folder / "indexed.npy",
    np.broadcast_to(np.arange(N, dtype=np.uint8)[:, None, None, None], (N, 6, 6, 1)),
  )
  config = base_config()
  config.data.source = f"npz:{folder / 'indexed.npy'}"
  config.data.image_size, config.data.channels, config.data.val_fraction = SIZE, 1, 0.1
  config.data.cache_dir = str(folder / "cache")
  return build_dataset(config)


def _ids(batch) -> list[int]:
  batch = np.asarray(batch)
  assert np.all(batch == batch[:, :1, :1, :1])
  return batch[:, 0, 0, 0].astype(int).tolist()


def _take(iterator, n: int) -> list[list[int]]:
  return [_ids(b) for b in itertools.islice(iterator, n)]


def test_shuffled_batches_are_pure_functions_of_their_index():
  plan = ShuffledBatches(np.arange(100, 110), batch_size=4, seed=3)
  stream = np.concatenate([plan[k] for k in range(10)])  # 40 indices = 4 epochs of 10
  for epoch in range(4):
    assert sorted(stream[epoch * 10 : (epoch + 1) * 10]) == list(range(100, 110))
  np.testing.assert_array_equal(plan[7], ShuffledBatches(np.arange(100, 110), 4, 3)[7])
  assert stream[:10].tolist() != stream[10:20].tolist()


def test_worker_processes_deliver_the_same_stream_and_state(dataset):
  expected = _take(train_iterator(dataset, BATCH, seed=5), 30)  # 30 batches ≈ 4 epochs of 54
  workers = train_iterator(dataset, BATCH, seed=5, worker_count=2)
  try:
    got = _take(workers, 11)
    state = workers.get_state()
    got += _take(workers, 19)
  finally:
    workers.close()
  assert got == expected
  assert state == {"next_batch": 11}

  resumed = train_iterator(dataset, BATCH, seed=5, worker_count=2)
  resumed.set_state(state)
  try:
    assert _take(resumed, 19) == expected[11:]
  finally:
    resumed.close()
  other_layout = train_iterator(
    dataset, BATCH, seed=5, worker_count=0
  )  # resume with another worker count
  other_layout.set_state(state)
  assert _take(other_layout, 19) == expected[11:]


def test_each_process_reads_its_own_shard(dataset):
  shards = [train_iterator(dataset, 6, seed=1, shard=(i, 3)) for i in range(3)]
  per_epoch = len(dataset.train_indices) // 3 // 2  # batches of 2 per process
  seen = [set(itertools.chain.from_iterable(_take(it, per_epoch))) for it in shards]
  assert all(len(s) == 2 * per_epoch for s in seen)  # one epoch: every local image once
  assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
  assert set.union(*seen) <= set(dataset.train_indices.tolist())
  with pytest.raises(ValueError, match="divisible by the 4 processes"):
    train_iterator(dataset, 6, seed=1, shard=(0, 4))


def test_device_prefetch_keeps_the_state_of_the_batch_it_hands_out_next(dataset):
  expected = _take(train_iterator(dataset, BATCH, seed=2), 12)
  prefetched = DevicePrefetch(train_iterator(dataset, BATCH, seed=2), size=3)
  first = [next(prefetched) for _ in range(5)]
  assert all(isinstance(b, jax.Array) for b in first)
  assert [_ids(b) for b in first] == expected[:5]
  state = prefetched.get_state()
  assert state == {"next_batch": 5}  # although 8 batches have been read
  again = DevicePrefetch(train_iterator(dataset, BATCH, seed=2), size=3)
  again.set_state(state)
  assert _take(again, 7) == expected[5:]


def test_cached_images_are_not_preprocessed_twice(tmp_path):
  # crop_size 8 then resize to 4: applying it again to a 4×4 cached image would fail.
  np.save(
    tmp_path / "x.npy", np.random.default_rng(0).integers(0, 256, (12, 10, 10, 3), dtype=np.uint8)
  )
  config = base_config()
  config.data.source = f"npz:{tmp_path / 'x.npy'}"
  config.data.image_size, config.data.channels, config.data.crop_size = 4, 3, 8
  config.data.cache_dir = str(tmp_path / "cache")
  ds = build_dataset(config)
  assert ds.source.preprocessed_with == ds.preprocess
  assert load_images(ds.val, ds.preprocess).shape == (len(ds.val_indices), 4, 4, 3)
  assert next(train_iterator(ds, 4, seed=0)).shape == (4, 4, 4, 3)


def test_grain_workers_leave_ctrl_c_to_the_trainer():
  """A terminal's Ctrl-C reaches the workers too; they ignore it while the trainer saves, stops."""
  probe = (
    "import signal; from vae_jax.data.pipeline import _init_worker; _init_worker(0, 1); "
    "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
  )
  result = subprocess.run(
    [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
  )
  assert result.stdout.strip() == "True", result.stderr[-2000:]
