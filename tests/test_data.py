"""Length-bucketed batching and the on-disk feature cache."""
import numpy as np

from specrnn.config import FeatureConfig
from specrnn.data.batching import BucketBatchSampler, padding_fraction
from specrnn.data.cache import FeatureCache
from specrnn.data.dataset import compute_features

from .conftest import tone, write


def test_bucket_sampler_covers_everything_once_and_is_reproducible():
    lengths = np.random.default_rng(0).integers(10, 300, size=1000)
    s = BucketBatchSampler(lengths, 32, shuffle=True, seed=1)
    s.set_epoch(3)
    a = list(s)
    assert sorted(i for b in a for i in b) == list(range(1000)) and len(a) == len(s)
    s.set_epoch(3)
    assert list(s) == a
    s.set_epoch(4)
    assert list(s) != a
    plain = BucketBatchSampler(lengths, 32, shuffle=True, bucket=False, seed=1)
    assert padding_fraction(lengths, a) < 0.5 * padding_fraction(lengths, list(plain))


def test_eval_batches_are_sorted_by_length():
    lengths = [5, 1, 9, 3]
    assert list(BucketBatchSampler(lengths, 2, shuffle=False)) == [[1, 3], [0, 2]]


def test_cache_hits_and_rebuilds_a_corrupt_entry(tmp_path):
    paths = [str(write(tmp_path / f"{i}.wav", tone(300 + 50 * i, 0.3))) for i in range(3)]
    cfg = FeatureConfig()
    first, errors = compute_features(paths, cfg, str(tmp_path / "c"))
    assert not errors
    cache = FeatureCache(str(tmp_path / "c"), cfg)
    for p, f in zip(paths, first):
        np.testing.assert_array_equal(cache.get(p), f)
    entry = cache._file(cache.key(paths[1]))
    blob = bytearray(entry.read_bytes())
    blob[-5] ^= 0xFF  # flip a byte inside the array
    entry.write_bytes(bytes(blob))
    assert cache.get(paths[1]) is None and cache.corrupt  # detected by checksum, entry removed
    again, _ = compute_features(paths, cfg, str(tmp_path / "c"))
    np.testing.assert_array_equal(again[1], first[1])
    assert cache.get(paths[1]) is not None


def test_cache_key_follows_file_content_and_settings(tmp_path):
    p = str(write(tmp_path / "a.wav", tone(300, 0.3)))
    c1 = FeatureCache(str(tmp_path), FeatureConfig())
    c2 = FeatureCache(str(tmp_path), FeatureConfig(n_mels=40))
    assert c1.dir != c2.dir
    k = c1.key(p)
    import os
    import time

    time.sleep(0.01)
    write(tmp_path / "a.wav", tone(900, 0.4))
    os.utime(p)
    assert c1.key(p) != k
