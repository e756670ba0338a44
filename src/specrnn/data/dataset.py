"""A manifest's audio -> cached features in memory, with label indices and the list of unusable files."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from ..audio import load_many
from ..config import FeatureConfig
from ..errors import AudioError, SpecrnnError
from .heap import extraction_heap, trim, use_extraction_heap
from .store import FeatureStore, file_key
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


CHUNK = 512  # files decoded and extracted together (bounds memory)
PARALLEL_MIN = 2048  # from this many files to compute, CPU extraction runs in worker processes


def extraction_workers(n_files: int, device: str = "cpu", cores: int | None = None) -> int:
    """Worker processes for CPU extraction: one per core for large jobs on 4 or more cores (spawning one costs ~2 s:
    torch's import), none on a GPU (one process keeps it busy) or for small jobs. On 2 cores one process with two
    torch threads was as fast (6,000 1-s clips: 1.4-2.2 s in one process, 2.3 s in two workers)."""
    import os

    cores = cores or os.cpu_count() or 1
    if str(device).startswith("cuda") or n_files < PARALLEL_MIN or cores < 4:
        return 0
    return min(cores, n_files // CHUNK)


def _extract_chunk(paths: list[str], cfg: FeatureConfig, device: str = "cpu", extractor=None, threads: int = 2):
    """Decode + resample + extract one chunk: features (None for unusable files) and the errors."""
    trim()  # the last chunk's waves and temporaries are free: their pages go back to the OS
    if extractor is None:
        from ..features import FeatureExtractor

        extractor = FeatureExtractor(cfg).to(device)
    waves = load_many(paths, cfg.sample_rate, cfg.max_seconds, cfg.crop, threads=threads)
    good = [k for k, w in enumerate(waves) if not isinstance(w, AudioError)]
    feats = extractor.extract([waves[k] for k in good])
    out: list[np.ndarray | None] = [None] * len(paths)
    for k, f in zip(good, feats):
        out[k] = f
    return out, [w for w in waves if isinstance(w, AudioError)]


def _worker_start() -> None:
    import torch

    torch.set_num_threads(1)  # one core per worker process
    use_extraction_heap()


def _chunks(paths: list[str], todo: list[int], cfg: FeatureConfig, device: str, workers: int):
    """(rows, features, errors) per chunk of `todo`, in order; in worker processes when `workers` > 1."""
    parts = [todo[s : s + CHUNK] for s in range(0, len(todo), CHUNK)]
    if workers <= 1:
        from ..features import FeatureExtractor

        extractor = FeatureExtractor(cfg).to(device)
        for rows in parts:
            yield rows, *_extract_chunk([paths[i] for i in rows], cfg, device, extractor)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start) as pool:
        futures = [pool.submit(_extract_chunk, [paths[i] for i in rows], cfg, "cpu", None, 1) for rows in parts]
        for rows, fut in zip(parts, futures):
            yield rows, *fut.result()


def compute_features(
    paths: list[str], cfg: FeatureConfig, cache_dir: str | None = None, device: str = "cpu", use_cache: bool = True,
    desc: str = "features", workers: int | None = None,
) -> tuple[list[np.ndarray | None], list[AudioError]]:
    """Features for each path (None where the file is unusable) and the errors. With the store (`use_cache`) the
    features are views into its memory-mapped shards: read from disk as batches touch them, not held in memory.
    `workers`: extraction processes (None: `extraction_workers`); each finished chunk goes to the store at once."""
    store = FeatureStore(cache_dir, cfg) if use_cache else None
    keys = [file_key(p) for p in paths] if store else []
    out: list[np.ndarray | None] = [store.get(k) for k in keys] if store else [None] * len(paths)
    todo = [i for i, f in enumerate(out) if f is None]
    errors: list[AudioError] = []
    if todo:
        with extraction_heap():
            _extract_into(out, paths, todo, keys, store, cfg, device, workers, desc, errors)
    return out, errors


def _extract_into(out: list, paths: list[str], todo: list[int], keys: list, store: FeatureStore | None,
                  cfg: FeatureConfig, device: str, workers: int | None, desc: str, errors: list) -> None:
    """Extract the rows `todo` into `out` (and the store), chunk by chunk; their errors are appended to `errors`."""
    update, close = _progress(len(todo), desc)
    workers = extraction_workers(len(todo), device) if workers is None else workers
    unmapped: list[int] = []  # computed, held in memory until their shard is written
    for rows, feats, errs in _chunks(paths, todo, cfg, device, workers):
        errors += errs
        good = [(i, f) for i, f in zip(rows, feats) if f is not None]
        for i, f in good:
            out[i] = f
            if store:
                store.add(keys[i], f)
        unmapped += [i for i, _ in good]
        if store and unmapped and keys[unmapped[-1]] in store.index:  # a shard was written: use its views
            unmapped = _mapped(out, unmapped, keys, store)
        if update:
            update(len(rows))
    if store:
        store.flush()
        _mapped(out, unmapped, keys, store)
    close()


def _mapped(out: list, rows: list[int], keys: list, store: FeatureStore) -> list[int]:
    """Swap in-memory features for their store views where written; the rows still in memory."""
    left = []
    for i in rows:
        view = store.get(keys[i]) if keys[i] in store.index else None
        if view is None:
            left.append(i)
        else:
            out[i] = view
    return left


def subtract_group_means(man: Manifest, feats: list[np.ndarray | None], means: dict[str, np.ndarray] | None = None
                         ) -> list[np.ndarray | None]:
    """For `model.normalize: group`: each row's features minus its group's (speaker's) mean, the means taken from
    these rows' audio unless given. Labels are never read: a held-out speaker's unlabelled clips enrol it."""
    from ..features import group_means

    groups = _groups(man)
    means = group_means(feats, groups) if means is None else means
    missing = sorted({g for f, g in zip(feats, groups) if f is not None and g not in means})
    if missing:
        raise SpecrnnError(f"{man.source or 'the data'}: no mean features for group(s) {', '.join(missing[:5])}")
    return [None if f is None else f - means[g] for f, g in zip(feats, groups)]


def _groups(man: Manifest) -> list[str]:
    if not man.groups or any(g == "" for g in man.groups):
        blank = f"{sum(g == '' for g in man.groups)} row(s) without a group" if man.groups else "no 'group' column"
        others = f"; its other columns: {', '.join(man.extra)}" if man.extra else ""
        raise SpecrnnError(
            f"{man.source or 'the data'}: {blank}{others}. Per-speaker normalisation (model.normalize: group) subtracts "
            "each group's (speaker's) mean features, so every row needs a group: a CSV manifest with a 'group' column "
            "(a folder of class folders has none), e.g. specrnn manifest DIR --pattern '{label}_{group}_{take}.wav'")
    return man.groups


def check_groups(man: Manifest, cfg) -> None:
    """Before any work or output: a `model.normalize: group` config needs every row's group."""
    if cfg.model.normalize == "group":
        _groups(man)


def manifest_group_means(man: Manifest, cfg: FeatureConfig, cache_dir: str | None = None, device: str = "cpu"
                         ) -> dict[str, np.ndarray]:
    """Each group's mean features over all of its rows' usable audio (cached features)."""
    from ..features import group_means

    groups = _groups(man)
    feats, _ = compute_features(man.paths, cfg, cache_dir, device, desc="group means")
    return group_means(feats, groups)


def build_feature_set(
    man: Manifest, cfg: FeatureConfig, classes: list[str], cache_dir: str | None = None, device: str = "cpu",
    desc: str = "features", kind: str = "single", group_means: dict[str, np.ndarray] | None = None,
) -> FeatureSet:
    """Features of every row; rows whose file is unusable are dropped and reported in `errors`. `kind`: the
    labels' kind (tasks.label_kind). With `group_means` (model.normalize: group) each row's group mean is
    subtracted."""
    from ..tasks import encode, label_names

    unknown = sorted(set(label_names(man.labels, kind)) - set(classes))
    if unknown:
        raise SpecrnnError(
            f"label(s) {', '.join(map(repr, unknown))} in {man.source or 'the data'} were never seen in training "
            f"(the model knows: {', '.join(classes)})"
        )
    feats, errors = compute_features(man.paths, cfg, cache_dir, device, desc=desc)
    if group_means is not None:
        feats = subtract_group_means(man, feats, group_means)
    keep = [i for i, f in enumerate(feats) if f is not None]
    return FeatureSet(
        [feats[i] for i in keep],  # type: ignore[misc]
        encode([man.labels[i] for i in keep], classes, kind),
        [man.paths[i] for i in keep],
        errors,
    )


def model_input_set(man: Manifest, cfg, classes: list[str], split: str | None = None, desc: str = "features",
                    kind: str = "single") -> FeatureSet:
    """The rows of `split` (all rows when None) as a trained model (its `Config`) takes them: features, minus each
    row's group mean for a `model.normalize: group` model, taken over all of the manifest's rows of that group as
    in training."""
    group = cfg.model.normalize == "group"
    means = manifest_group_means(man, cfg.features, cfg.data.cache_dir) if group else None
    rows = man.where_split(split) if split is not None else man
    return build_feature_set(rows, cfg.features, classes, cfg.data.cache_dir, desc=desc, kind=kind, group_means=means)
