"""Length-bucketed batching and the sharded feature store."""
import numpy as np

from specrnn.config import FeatureConfig
from specrnn.data.batching import BucketBatchSampler, padding_fraction
from specrnn.data.dataset import compute_features
from specrnn.data.store import FeatureStore, file_key

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


def _mapped(a: np.ndarray) -> bool:
    """True for a view (no data of its own) into a memory-mapped shard."""
    base = a
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    return not a.flags.owndata and base is not None


def _paths(root, n=3):
    return [str(write(root / f"{i}.wav", tone(300 + 50 * i, 0.3 + 0.05 * i))) for i in range(n)]


def test_store_round_trip_gives_views_of_the_shards_equal_to_fresh_features(tmp_path):
    paths = _paths(tmp_path, 5)
    cfg = FeatureConfig()
    fresh, _ = compute_features(paths, cfg, use_cache=False)
    first, errors = compute_features(paths, cfg, str(tmp_path / "c"))
    again, _ = compute_features(paths, cfg, str(tmp_path / "c"))
    assert not errors and all(_mapped(f) for f in again)
    for a, b, c in zip(fresh, first, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    store = FeatureStore(str(tmp_path / "c"), cfg)
    assert len(list(store.dir.glob("*.f32"))) == 1 and len(store.index) == 5  # one shard, not a file per clip


def test_a_corrupt_shard_is_detected_and_rebuilt(tmp_path, capsys):
    paths = _paths(tmp_path)
    cfg = FeatureConfig()
    first = [np.array(f) for f in compute_features(paths, cfg, str(tmp_path / "c"))[0]]  # copies: views see the damage
    (shard,) = FeatureStore(str(tmp_path / "c"), cfg).dir.glob("*.f32")
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # flip a byte inside the frames
    shard.write_bytes(bytes(blob))
    capsys.readouterr()
    again, errors = compute_features(paths, cfg, str(tmp_path / "c"))
    assert not errors and "checksum mismatch; its clips are computed again" in capsys.readouterr().err
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not shard.exists() and len(FeatureStore(str(tmp_path / "c"), cfg).index) == 3  # rebuilt in a new shard


def test_extraction_killed_half_way_keeps_its_shards_and_resumes(tmp_path):
    """A process killed after writing some shards: the rerun reads those and computes only the rest."""
    import subprocess
    import sys

    paths = _paths(tmp_path, 6)
    code = ("import os, sys; from specrnn.config import FeatureConfig\n"
            "from specrnn.data.dataset import compute_features\n"
            "from specrnn.data.store import FeatureStore, file_key\n"
            "cfg, paths = FeatureConfig(), sys.argv[2:]\n"
            "store = FeatureStore(sys.argv[1], cfg, shard_clips=2)\n"
            "feats, _ = compute_features(paths, cfg, use_cache=False)\n"
            "for p, f in zip(paths[:5], feats):\n    store.add(file_key(p), f)\n"  # shards of 2: the 5th waits
            "os._exit(9)\n")  # dies before the last shard is written
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c"), *paths], capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    store = FeatureStore(str(tmp_path / "c"), FeatureConfig())
    assert len(store.index) == 4 and len(list(store.dir.glob("*.json"))) == 2
    written = {p.name for p in store.dir.iterdir()}
    feats, _ = compute_features(paths, FeatureConfig(), str(tmp_path / "c"))
    fresh, _ = compute_features(paths, FeatureConfig(), use_cache=False)
    for a, b in zip(fresh, feats):
        np.testing.assert_array_equal(a, b)
    store = FeatureStore(str(tmp_path / "c"), FeatureConfig())
    assert len(store.index) == 6 and written < {p.name for p in store.dir.iterdir()}  # old shards kept, one added


def test_an_interrupted_shard_write_is_ignored(tmp_path):
    paths = _paths(tmp_path)
    store = FeatureStore(str(tmp_path / "c"), FeatureConfig())
    store.dir.mkdir(parents=True)
    (store.dir / "shard-dead.f32").write_bytes(b"\0" * 100)  # data written, index never: a write cut short
    feats, errors = compute_features(paths, FeatureConfig(), str(tmp_path / "c"))
    assert not errors and len(FeatureStore(str(tmp_path / "c"), FeatureConfig()).index) == 3


def test_store_key_follows_file_content_and_settings(tmp_path):
    p = str(write(tmp_path / "a.wav", tone(300, 0.3)))
    assert FeatureStore(str(tmp_path), FeatureConfig()).dir != FeatureStore(str(tmp_path), FeatureConfig(n_mels=40)).dir
    k = file_key(p)
    import os
    import time

    time.sleep(0.01)
    write(tmp_path / "a.wav", tone(900, 0.4))
    os.utime(p)
    assert file_key(p) != k


def test_extraction_in_worker_processes_equals_one_process_and_fills_the_store(tmp_path):
    from specrnn.data.dataset import extraction_workers

    paths = _paths(tmp_path, 4) + [str(tmp_path / "missing.wav")]
    one, e1 = compute_features(paths, FeatureConfig(), use_cache=False, workers=0)
    two, e2 = compute_features(paths, FeatureConfig(), str(tmp_path / "c"), workers=2)
    assert [str(e) for e in e1] == [str(e) for e in e2] and len(e1) == 1 and one[-1] is None is two[-1]
    for a, b in zip(one[:-1], two[:-1]):
        np.testing.assert_array_equal(a, b)
    assert len(FeatureStore(str(tmp_path / "c"), FeatureConfig()).index) == 4
    assert extraction_workers(100_000, cores=16) == 16 and extraction_workers(100, cores=16) == 0
    assert extraction_workers(100_000, "cuda", cores=16) == 0 and extraction_workers(100_000, cores=2) == 0


def test_training_reads_views_of_the_store_and_steps_per_epoch_bounds_an_epoch(tmp_path):
    """Bounded memory: the prepared sets hold views into the mapped shards (no frame copied into the heap), and
    train.steps_per_epoch caps an epoch's batches for data too large to pass over between validations."""
    import torch

    import specrnn
    from specrnn.config import load_config
    from specrnn.data.manifest import load_manifest
    from specrnn.training.prepare import prepare_data

    from .conftest import write_tone_folder

    root = write_tone_folder(tmp_path / "tones")
    cfg = load_config(None, [f"data.cache_dir={tmp_path / 'cache'}"])
    prepare_data(load_manifest(root), cfg, log=lambda *a: None)  # fills the store
    prep = prepare_data(load_manifest(root), cfg, log=lambda *a: None)
    feats = [f for s in prep.sets.values() for f in s.features]
    assert len(feats) == 48 and all(_mapped(f) for f in feats)
    sets = [f"data.cache_dir={tmp_path / 'cache'}", "train.batch_size=4", "train.steps_per_epoch=3", "train.max_epochs=2",
            "model.hidden=8"]
    specrnn.train(root, out=tmp_path / "run", overrides=sets, log=None)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6  # 2 epochs x 3 steps, where a full epoch holds about 10 batches of 4
