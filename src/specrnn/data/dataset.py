"""A manifest's audio -> cached features in memory, with label indices and the list of unusable files."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from ..audio import load_many
from ..config import FeatureConfig
from ..errors import AudioError, SpecrnnError
from .cache import FeatureCache
from .manifest import Manifest


@dataclass
class FeatureSet:
    """Features (list of (T, F) float32), label indices and paths, aligned row by row."""

    features: list[np.ndarray]
    targets: np.ndarray
    paths: list[str]
    errors: list[AudioError] = field(default_factory=list)
    groups: np.ndarray | None = None  # group (speaker) indices, where the manifest has groups

    @property
    def lengths(self) -> np.ndarray:
        return np.array([f.shape[0] for f in self.features], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.features)


def _progress(total: int, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with lightning
        return None, lambda: None
    bar = tqdm(total=total, desc=desc, unit="file", disable=None, file=sys.stderr, leave=False)
    return bar.update, bar.close


def compute_features(
    paths: list[str], cfg: FeatureConfig, cache_dir: str | None = None, device: str = "cpu", use_cache: bool = True,
    desc: str = "features",
) -> tuple[list[np.ndarray | None], list[AudioError]]:
    """Features for each path (None where the file is unusable) and the errors, using and filling the cache."""
    from ..features import FeatureExtractor

    cache = FeatureCache(cache_dir, cfg) if use_cache else None
    out: list[np.ndarray | None] = [cache.get(p) if cache else None for p in paths]
    todo = [i for i, f in enumerate(out) if f is None]
    errors: list[AudioError] = []
    if todo:
        update, close = _progress(len(todo), desc)
        extractor = FeatureExtractor(cfg).to(device)
        chunk = 512  # decode and extract in chunks to bound memory
        for start in range(0, len(todo), chunk):
            idx = todo[start : start + chunk]
            waves = load_many([paths[i] for i in idx], cfg.sample_rate, cfg.max_seconds, cfg.crop)
            good = [(i, w) for i, w in zip(idx, waves) if not isinstance(w, AudioError)]
            errors += [w for w in waves if isinstance(w, AudioError)]
            feats = extractor.extract([w for _, w in good])
            for (i, _), f in zip(good, feats):
                out[i] = f
                if cache:
                    cache.put(paths[i], f)
            if update:
                update(len(idx))
        close()
    return out, errors


def build_feature_set(
    man: Manifest, cfg: FeatureConfig, classes: list[str], cache_dir: str | None = None, device: str = "cpu",
    desc: str = "features", kind: str = "single",
) -> FeatureSet:
    """Features of every row; rows whose file is unusable are dropped and reported in `errors`. `kind`: the
    labels' kind (tasks.label_kind)."""
    from ..tasks import encode, label_names

    unknown = sorted(set(label_names(man.labels, kind)) - set(classes))
    if unknown:
        raise SpecrnnError(
            f"label(s) {', '.join(map(repr, unknown))} in {man.source or 'the data'} were never seen in training "
            f"(the model knows: {', '.join(classes)})"
        )
    feats, errors = compute_features(man.paths, cfg, cache_dir, device, desc=desc)
    keep = [i for i, f in enumerate(feats) if f is not None]
    return FeatureSet(
        [feats[i] for i in keep],  # type: ignore[misc]
        encode([man.labels[i] for i in keep], classes, kind),
        [man.paths[i] for i in keep],
        errors,
    )
