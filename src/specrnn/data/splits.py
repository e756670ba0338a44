"""Train/val/test assignment: stratified by label, group-aware (no group in two splits), seeded.

Test rows are never re-labelled as val: validation is carved from training rows only.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ..errors import SpecrnnError
from .manifest import Manifest


def codes(values: list[str]) -> tuple[list[str], np.ndarray]:
    """(sorted distinct values, each value's index among them): strings turned into integers once, so the
    splitting below is array work (np.asarray of a million strings costs a tenth of a second each time)."""
    names = sorted(set(values))
    index = {v: i for i, v in enumerate(names)}
    return names, np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values))


def _stratified(lab: np.ndarray, idx: np.ndarray, frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split `idx` into (rest, held) with about `frac` of each class (label codes) held out; a class of one stays in rest."""
    held, rest = [], []
    lab = lab[idx]
    for c in np.unique(lab):
        members = rng.permutation(idx[lab == c])
        k = int(round(frac * len(members)))
        k = min(max(k, 1 if frac > 0 and len(members) >= 3 else 0), len(members) - 1)
        held += members[:k].tolist()
        rest += members[k:].tolist()
    return np.sort(rest), np.sort(held)


def _grouped(lab: np.ndarray, grp: np.ndarray, idx: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole groups, about `frac` of the rows, keeping label proportions: groups in a seeded order, the
    largest first, each held out when that brings the held-out class counts closer to `frac` of every class's
    (one small vector step per group, so 5,000 groups of a million rows take a fraction of a second)."""
    g_names, g = np.unique(grp[idx], return_inverse=True)
    if len(g_names) < 2:
        raise SpecrnnError(f"a group-aware split needs at least 2 groups; the data has {len(g_names)}")
    c = np.unique(lab[idx], return_inverse=True)[1]
    counts = np.bincount(g * (c.max() + 1) + c, minlength=len(g_names) * (c.max() + 1)).reshape(len(g_names), -1)
    target = frac * counts.sum(0)
    order = np.random.default_rng(seed).permutation(len(g_names))
    order = order[np.argsort(-counts[order].sum(1), kind="stable")]
    held_groups, held = np.zeros(len(g_names), bool), np.zeros(counts.shape[1])
    for k in order:
        if ((held + counts[k] - target) ** 2).sum() < ((held - target) ** 2).sum():
            held += counts[k]
            held_groups[k] = True
    if not held_groups.any():  # frac too small for any group: the smallest one
        held_groups[order[-1]] = True
    if held_groups.all():
        held_groups[order[-1]] = False
    mask = held_groups[g]
    return _keep_classes(lab, grp, idx[~mask], idx[mask])


def _keep_classes(lab: np.ndarray, grp: np.ndarray, rest: np.ndarray, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move back to `rest` the groups holding a class that would otherwise have no row left in `rest`
    (a class found in one group only must be learnt, not only tested)."""
    missing = np.setdiff1d(lab[held], lab[rest])
    if not len(missing):
        return rest, held
    back = np.isin(grp[held], grp[held][np.isin(lab[held], missing)])
    return np.sort(np.concatenate([rest, held[back]])), held[~back]


def _hold_out(lab: np.ndarray, grp: np.ndarray | None, idx: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if frac <= 0:
        return idx, idx[:0]
    if grp is not None:
        return _grouped(lab, grp, idx, frac, seed)
    return _stratified(lab, idx, frac, np.random.default_rng(seed))


def check_validation_groups(left: set, where: str) -> None:
    """Group-aware validation takes whole groups: the groups `left` for training and validation must be two or more."""
    if len(left) < 2:
        raise SpecrnnError(f"{where}, {len(left)} group left for training and validation, and validation takes whole "
                           "groups; with few groups set data.group_val=false (validation rows from the training groups)")


def assign_splits(man: Manifest, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                  warn: Callable[[str], None] | None = None, group_val: bool = True, stratify: bool = True) -> Manifest:
    """Return a copy with every row in train, val or test.

    - no split column: stratified (group-aware) test_fraction test, val_fraction val, rest train;
    - train (+test) but no val: val carved from train only;
    - all three present: kept as given.
    Test never shares a group with train or val. `group_val=False` draws val rows from the training groups
    (stratified by label): every group is learnt from, but validation then measures seen groups.
    A class too small to place in every split stays in train; `warn` (e.g. print) is told which.
    `stratify=False` ignores the labels (sequence labels, where nearly every label is unique).
    """
    n = len(man)
    labelled = man
    if not stratify:
        man = dataclasses.replace(man, labels=[""] * n)
    lab, grp = codes(man.labels)[1], None if man.groups is None else codes(man.groups)[1]
    splits = list(man.splits) if man.splits is not None else None
    if splits is None:
        all_idx = np.arange(n)
        rest, test = _hold_out(lab, grp, all_idx, test_fraction, seed)
        splits = ["train"] * n
        for i in test:
            splits[i] = "test"
    train_idx = np.array([i for i, s in enumerate(splits) if s == "train"], dtype=int)
    if not len(train_idx):
        raise SpecrnnError(f"{man.source or 'data'}: no training rows")
    if "val" not in splits:
        # val_fraction is of the whole data when we made the test split, of the train rows when it was given
        frac = val_fraction / (1 - test_fraction) if man.splits is None and test_fraction < 1 else val_fraction
        if group_val:
            if man.groups is not None:
                check_validation_groups(set(grp[train_idx].tolist()), f"{man.source or 'data'}: after the test split")
            _, val = _hold_out(lab, grp, train_idx, frac, seed + 1)
        else:
            _, val = _stratified(lab, train_idx, frac, np.random.default_rng(seed + 1))
        for i in val:
            splits[i] = "val"
    out = labelled.select(list(range(n)))
    out.splits = splits
    check_no_leak(out, ignore_val=not group_val)
    notes = small_class_notes(out) if warn is not None and stratify else []
    for note in notes[:5]:
        warn(f"warning: {note}")  # type: ignore[misc]
    if len(notes) > 5:
        warn(f"warning: ... and {len(notes) - 5} more class(es) missing from val or test")  # type: ignore[misc]
    return out


def small_class_notes(man: Manifest) -> list[str]:
    """One line per class that has training rows but no validation or no test row."""
    assert man.splits is not None
    where: dict[str, dict[str, int]] = {}
    for lab, s in zip(man.labels, man.splits):
        where.setdefault(lab, {}).setdefault(s, 0)
        where[lab][s] += 1
    notes = []
    used = set(man.splits)  # a split nobody has (e.g. no test rows in `tune`) is not missing for any class
    for lab in sorted(where):
        counts = where[lab]
        absent = [s for s in ("val", "test") if s not in counts and s in used]
        if "train" in counts and absent:
            notes.append(f"class '{lab}' has {sum(counts.values())} example(s): none in {' or '.join(absent)}, "
                         f"so its {' and '.join(absent)} figures are missing")
    return notes


def check_no_leak(man: Manifest, ignore_val: bool = False) -> None:
    """No group may appear in two splits (raises); `ignore_val` lets train and val share groups (never test)."""
    if man.groups is None or man.splits is None:
        return
    merged = ["train" if x == "val" else x for x in man.splits] if ignore_val else man.splits
    shared = dataclasses.replace(man, splits=merged).groups_in_several_splits()
    if shared:
        raise SpecrnnError(f"group(s) {', '.join(shared[:10])} appear in more than one split: results would leak")
