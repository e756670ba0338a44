"""Sharded feature store: a data set's features in a few large memory-mapped files, not one file per clip.

Under `<cache>/store/<feature settings>/` each shard is two files: `NAME.f32`, every clip's (T, F) frames back to
back in float32, and `NAME.json`, its index (file keys, frame offsets and lengths, F, the data's CRC32). The data
is written first and the index last, each to a temp file renamed into place, so a shard without an index is an
interrupted write and is ignored: extraction killed half-way keeps every shard it finished and a rerun computes
only the rest. Shards have unique names, so processes filling one store side by side (cv's folds) never clash.

Reading maps the shards (np.memmap, copy-on-write): a clip's features are a view whose pages the OS reads when
a batch touches them, so a data set larger than memory trains out of the page cache, not the heap. A shard's CRC
is checked the first time this process uses it; a corrupt shard is deleted and its clips are computed again.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
import zlib
from pathlib import Path

import numpy as np

from ..config import FeatureConfig

VERSION = 2  # 1: one cache file per clip (data/cache.py, replaced by this store)
SHARD_CLIPS = 4096  # clips per shard (at most; SHARD_BYTES also ends one)
SHARD_BYTES = 512 << 20


def default_cache_dir() -> Path:
    return Path(os.environ.get("SPECRNN_CACHE") or Path.home() / ".cache" / "specrnn")


def settings_key(cfg: FeatureConfig) -> str:
    blob = json.dumps({"v": VERSION, **cfg.model_dump()}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def file_key(path: str) -> str | None:
    """A file's identity: absolute path, modification time and size (an edited file gets a new key)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return hashlib.sha1(f"{os.path.abspath(path)}|{st.st_mtime_ns}|{st.st_size}".encode()).hexdigest()


def _crc(path: Path, block: int = 64 << 20) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(block):
            crc = zlib.crc32(chunk, crc)
    return crc


class FeatureStore:
    """Get and add (T, F) float32 features by file key, for one set of feature settings."""

    def __init__(self, root: str | Path | None, cfg: FeatureConfig, shard_clips: int = SHARD_CLIPS,
                 shard_bytes: int = SHARD_BYTES):
        self.dir = Path(root or default_cache_dir()) / "store" / settings_key(cfg)
        self.n_features, self.shard_clips, self.shard_bytes = cfg.n_features, shard_clips, shard_bytes
        self.index: dict[str, tuple[str, int, int]] = {}  # key -> (shard, frame offset, frames)
        self.maps: dict[str, np.ndarray] = {}  # shard -> its frames (F columns), mapped once checked
        self.corrupt: list[str] = []
        self._pending: list[tuple[str, np.ndarray]] = []
        self._pending_bytes = 0
        self._read_indexes()

    def _read_indexes(self) -> None:
        for idx in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []:
            try:
                meta = json.loads(idx.read_text())
                keys, offsets, lengths = meta["keys"], meta["offsets"], meta["lengths"]
                if meta["n_features"] != self.n_features or not len(keys) == len(offsets) == len(lengths):
                    raise ValueError("index does not match these settings")
            except (OSError, ValueError, KeyError, TypeError) as e:
                self._drop(idx.stem, f"unreadable index ({e})")
                continue
            for k, o, n in zip(keys, offsets, lengths):
                self.index.setdefault(k, (idx.stem, int(o), int(n)))

    def _drop(self, shard: str, why: str) -> None:
        """Delete a corrupt shard and forget its clips (they are computed again)."""
        self.corrupt.append(shard)
        print(f"specrnn: warning: feature store {self.dir / shard}: {why}; its clips are computed again", file=sys.stderr)
        for ext in (".json", ".f32"):
            (self.dir / f"{shard}{ext}").unlink(missing_ok=True)
        self.index = {k: v for k, v in self.index.items() if v[0] != shard}
        self.maps.pop(shard, None)

    def _map(self, shard: str) -> np.ndarray | None:
        """The shard's frames, checked against its CRC the first time; None if it was corrupt (then dropped)."""
        if shard in self.maps:
            return self.maps[shard]
        data = self.dir / f"{shard}.f32"
        try:
            meta = json.loads((self.dir / f"{shard}.json").read_text())
            frames = int(sum(meta["lengths"]))
            if data.stat().st_size != frames * self.n_features * 4:
                raise ValueError(f"{data.stat().st_size} bytes where the index says {frames * self.n_features * 4}")
            if _crc(data) != meta["crc"]:
                raise ValueError("checksum mismatch")
        except (OSError, ValueError, KeyError) as e:
            self._drop(shard, str(e))
            return None
        shape = (frames, self.n_features)
        # a plain ndarray over the map: a clip's slice is then a small view object (np.memmap slices carry more)
        self.maps[shard] = np.memmap(data, np.float32, "c", shape=shape).view(np.ndarray) if frames else np.zeros(shape, np.float32)
        return self.maps[shard]

    def get(self, key: str | None) -> np.ndarray | None:
        """The features stored for a file key (a view into its mapped shard), or None."""
        where = self.index.get(key) if key else None
        if where is None:
            return None
        frames = self._map(where[0])
        return None if frames is None else frames[where[1] : where[1] + where[2]]

    def add(self, key: str | None, features: np.ndarray) -> None:
        """Queue features for the next shard; a full queue is written out (`flush` writes the rest)."""
        if key is None or key in self.index:
            return
        f = np.ascontiguousarray(features, dtype=np.float32)
        self._pending.append((key, f))
        self._pending_bytes += f.nbytes
        if len(self._pending) >= self.shard_clips or self._pending_bytes >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the queued features as one shard: data, then its index (each atomically)."""
        if not self._pending:
            return
        from ..files import atomic_write_bytes, atomic_write_text

        pending, self._pending, self._pending_bytes = self._pending, [], 0
        name = f"shard-{uuid.uuid4().hex[:16]}"
        lengths = [int(f.shape[0]) for _, f in pending]
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
        crc = 0
        for _, f in pending:
            crc = zlib.crc32(memoryview(f).cast("B"), crc)
        try:  # the clips are written one by one: no second copy of the shard in memory
            atomic_write_bytes(self.dir / f"{name}.f32", (memoryview(f).cast("B") for _, f in pending), durable=False)
            atomic_write_text(self.dir / f"{name}.json", json.dumps(
                {"version": VERSION, "n_features": self.n_features, "crc": crc, "keys": [k for k, _ in pending],
                 "offsets": offsets, "lengths": lengths}))
        except OSError as e:  # a read-only or full disk costs speed, not the run
            print(f"specrnn: warning: cannot write the feature store {self.dir} ({e}); features stay in memory",
                  file=sys.stderr)
            return
        for (k, _), o, n in zip(pending, offsets, lengths):
            self.index.setdefault(k, (name, o, n))
