"""Feature cache on disk: one entry per file, keyed by file identity (path, mtime, size) and feature settings.

Entries carry a CRC32, are written atomically (temp file, then rename), and a corrupt entry is rebuilt.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

from ..config import FeatureConfig

MAGIC = b"SRNNFEA1"
VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("SPECRNN_CACHE") or Path.home() / ".cache" / "specrnn")


def settings_key(cfg: FeatureConfig) -> str:
    blob = json.dumps({"v": VERSION, **cfg.model_dump()}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


class FeatureCache:
    """Get/put (T, F) float32 arrays for audio files under `root/features/<settings>/`."""

    def __init__(self, root: str | Path | None, cfg: FeatureConfig):
        self.dir = Path(root or default_cache_dir()) / "features" / settings_key(cfg)
        self.corrupt: list[str] = []

    def key(self, path: str) -> str | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return hashlib.sha1(f"{os.path.abspath(path)}|{st.st_mtime_ns}|{st.st_size}".encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.bin"

    def get(self, path: str) -> np.ndarray | None:
        key = self.key(path)
        if key is None:
            return None
        f = self._file(key)
        try:
            blob = f.read_bytes()
        except OSError:
            return None
        try:
            if blob[:8] != MAGIC:
                raise ValueError("not a feature-cache entry")
            (crc,) = struct.unpack("<I", blob[8:12])
            if zlib.crc32(blob[12:]) != crc:
                raise ValueError("checksum mismatch")
            return np.load(io.BytesIO(blob[12:]), allow_pickle=False)
        except Exception as e:  # truncated, altered or foreign: report, drop, and let the caller recompute it
            self.corrupt.append(str(f))
            print(f"specrnn: warning: {f}: corrupt feature-cache entry for {path} ({e}); rebuilding it", file=sys.stderr)
            f.unlink(missing_ok=True)
            return None

    def put(self, path: str, features: np.ndarray) -> None:
        key = self.key(path)
        if key is None:
            return
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(features, dtype=np.float32), allow_pickle=False)
        payload = buf.getvalue()
        from ..files import atomic_write_bytes

        try:
            atomic_write_bytes(self._file(key), MAGIC + struct.pack("<I", zlib.crc32(payload)) + payload, durable=False)
        except OSError:
            pass  # a read-only or full cache only costs speed
