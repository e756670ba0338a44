"""Labelled audio as one table: folder-per-class, CSV manifest or file-name pattern -> `Manifest`.

Columns: path (absolute), label, and optionally split (train/val/test), group (e.g. speaker) and fold.
"""
from __future__ import annotations

import contextlib
import csv
import gc
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..audio import AUDIO_EXTENSIONS
from ..errors import SpecrnnError

SPLITS = ("train", "val", "test")


@dataclass
class Manifest:
    """Rows of labelled audio files; `extra` keeps any other column (e.g. a file-name field)."""

    paths: list[str]
    labels: list[str]
    splits: list[str] | None = None
    groups: list[str] | None = None
    folds: list[str] | None = None
    extra: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""
    unmatched: list[str] = field(default_factory=list)  # files a name pattern did not match (not a column)

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, index: list[int]) -> "Manifest":
        pick = lambda col: None if col is None else [col[i] for i in index]  # noqa: E731
        return Manifest(pick(self.paths), pick(self.labels), pick(self.splits), pick(self.groups), pick(self.folds),
                        {k: pick(v) for k, v in self.extra.items()}, self.source)

    def where_split(self, name: str) -> "Manifest":
        if self.splits is None:
            raise SpecrnnError(f"{self.source or 'data'} has no split column; cannot select split '{name}'")
        return self.select([i for i, s in enumerate(self.splits) if s == name])

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def groups_in_several_splits(self) -> list[str]:
        """Groups with rows in more than one split (a leak `train` refuses), sorted; [] without groups or splits."""
        import numpy as np

        if not self.groups or not self.splits:
            return []
        names, g = np.unique(self.groups, return_inverse=True)
        kinds, s = np.unique(self.splits, return_inverse=True)
        pairs = np.unique(g * len(kinds) + s)  # the (group, split) pairs present: a group in two splits has two
        return [str(names[i]) for i in np.flatnonzero(np.bincount(pairs // len(kinds), minlength=len(names)) > 1)]

    def columns(self) -> dict[str, list[str]]:
        cols = {"path": self.paths, "label": self.labels}
        for name in ("split", "group", "fold"):
            value = getattr(self, name + "s")
            if value is not None:
                cols[name] = value
        cols.update(self.extra)
        return cols

    def to_csv(self, path: str | Path, relative_to: str | Path | None = None) -> None:
        """Write atomically; paths relative to `relative_to` (e.g. the CSV's folder) when given."""
        from ..files import atomic_write_text

        cols = self.columns()
        if relative_to is not None:
            base = Path(relative_to).resolve()
            cols["path"] = [os.path.relpath(p, base) for p in cols["path"]]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(list(cols))
        w.writerows(zip(*cols.values()))
        atomic_write_text(path, buf.getvalue())


def is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def expand_audio_paths(paths: list[str | Path]) -> list[str]:
    """Each folder among `paths` becomes the audio files below it (sorted); files stay as given."""
    out = []
    for p in paths:
        if str(p) == "":
            raise SpecrnnError("an empty path was given where a file or folder was expected")
        if os.path.isdir(p):
            found = walk_audio(Path(p))
            if not found:
                raise SpecrnnError(f"{p}: no audio files in this folder")
            out += [str(f) for f in found]
        else:
            out.append(str(p))
    return out


def walk_audio(root: Path) -> list[Path]:
    """Audio files below `root`, sorted; follows symlinked folders once (a symlink loop is not followed twice)."""
    found: list[Path] = []
    seen: set[str] = set()

    def unreadable(e: OSError) -> None:
        raise SpecrnnError(f"{e.filename}: cannot list this folder ({e.strerror or e})")

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        found.extend(Path(dirpath) / f for f in sorted(filenames) if is_audio(Path(f)))
    return found


def from_folder(root: str | Path) -> Manifest:
    """One sub-folder per class; files at any depth below it. Empty class folders are an error."""
    root = Path(root)
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise SpecrnnError(f"{root}: no class sub-folders (expected DATA/<label>/*.wav) and not a CSV manifest")
    paths, labels, empty = [], [], []
    owner: dict[str, str] = {}
    clash: list[str] = []
    for d in classes:
        files = walk_audio(d)
        if not files:
            empty.append(d.name)
        for f in files:
            target = f.resolve()
            real = str(target if target.exists() else f.absolute())  # a broken link keeps its own name (reported)
            if real in owner:  # reached twice through a symbolic link
                if owner[real] != d.name:
                    clash.append(f"{real} (in '{owner[real]}' and '{d.name}')")
                continue
            owner[real] = d.name
            paths.append(real)
            labels.append(d.name)
    if empty:
        raise SpecrnnError(f"{root}: class folder(s) with no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}): "
                           f"{', '.join(empty)}; remove them or add audio")
    if clash:
        raise SpecrnnError(f"{root}: {len(clash)} file(s) reachable from two class folders (symbolic links?), so their "
                           f"label is ambiguous: {'; '.join(clash[:5])}")
    return Manifest(paths, labels, source=str(root))


def absolute_paths(paths: list[str], base: Path) -> list[str]:
    """Each path made absolute under `base` and normalised (links kept as named); string tests first, so a
    million clean relative paths cost a concatenation each rather than three os.path calls."""
    if os.sep != "/" or os.altsep:
        return [os.path.normpath(os.path.join(base, x)) for x in paths]
    prefix = str(base).rstrip("/") + "/"
    out = [x if x[:1] == "/" else prefix + x for x in paths]
    norm = os.path.normpath
    return [norm(x) if "/." in x or "//" in x or x[-1:] == "/" else x for x in out]


@contextlib.contextmanager
def gc_paused():
    """The cyclic garbage collector off while millions of small lists and strings are built (no cycles among
    them): its passes over the growing heap cost more than parsing a large manifest."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        was and gc.enable()


@gc_paused()
def from_csv(csv_path: str | Path) -> Manifest:
    """CSV with `path` and `label` (+ optional split, group, fold); relative paths resolve under the CSV's folder."""
    csv_path = Path(csv_path)
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecrnnError(f"{csv_path}: cannot read manifest ({e})") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if "".join(r).strip()]  # blank rows dropped
    if not rows:
        raise SpecrnnError(f"{csv_path}: empty manifest")
    header = [h.strip().lower() for h in rows[0]]
    for col in ("path", "label"):
        if col not in header:
            raise SpecrnnError(f"{csv_path}: missing column '{col}' (columns: {', '.join(header)})")
    if len(set(header)) != len(header):
        raise SpecrnnError(f"{csv_path}: duplicate column names in header")
    # column-wise, so a million rows load in seconds: the per-row checks only run to name a line when one fails
    body = rows[1:]
    if set(map(len, body)) - {len(header)}:
        n, row = next((n, r) for n, r in enumerate(body, start=2) if len(r) != len(header))
        raise SpecrnnError(f"{csv_path}, line {n}: {len(row)} fields, header has {len(header)} (quote fields with commas)")
    cols = {h: list(map(str.strip, col)) for h, col in zip(header, zip(*body))} if body else {h: [] for h in header}
    if not all(cols["path"]) or not all(cols["label"]):
        n = next(i for i, (p_, l_) in enumerate(zip(cols["path"], cols["label"]), start=2) if not p_ or not l_)
        raise SpecrnnError(f"{csv_path}, line {n}: empty path or label")
    cols["path"] = absolute_paths(cols["path"], csv_path.resolve().parent)
    if len(set(cols["path"])) != len(cols["path"]):
        seen: dict[str, int] = {}
        for n, x in enumerate(cols["path"], start=2):
            if x in seen:
                raise SpecrnnError(f"{csv_path}, line {n}: duplicate row for {x} (first on line {seen[x]})")
            seen[x] = n
    if "split" in cols:
        cols["split"] = [x.lower() for x in cols["split"]]
        unknown = set(cols["split"]) - set(SPLITS)
        if unknown:
            n = next(i for i, x in enumerate(cols["split"], start=2) if x in unknown)
            raise SpecrnnError(f"{csv_path}, line {n}: unknown split '{cols['split'][n - 2]}' (use train, val or test)")
    if not cols["path"]:
        raise SpecrnnError(f"{csv_path}: manifest has a header but no rows")
    return Manifest(
        cols.pop("path"),
        cols.pop("label"),
        cols.pop("split", None),
        cols.pop("group", None),
        cols.pop("fold", None),
        cols,
        source=str(csv_path),
    )


def load_manifest(data: str | Path) -> Manifest:
    """A CSV file or a folder-per-class tree."""
    data = Path(data)
    if not data.exists():
        raise SpecrnnError(f"{data}: no such file or folder")
    if data.is_file():
        if data.suffix.lower() != ".csv":
            raise SpecrnnError(f"{data}: DATA must be a folder with one sub-folder per class, or a .csv manifest")
        return from_csv(data)
    return from_folder(data)


def split_difference(split_csv: str | Path, man: Manifest) -> str | None:
    """How `man` (rows with splits) differs from a run's split.csv, or None when both hold the same rows."""
    old = from_csv(split_csv)
    a = list(zip(old.paths, old.labels, old.splits or [""] * len(old)))
    b = list(zip(man.paths, man.labels, man.splits or [""] * len(man)))
    if a == b:
        return None
    added, removed = sorted(set(b) - set(a)), sorted(set(a) - set(b))
    first = (removed or added)[0]
    return (f"{len(added)} row(s) new or changed, {len(removed)} gone or changed since the run started, e.g. "
            f"{first[0]} ({first[1]}, {first[2]})") if added or removed else "the rows are in another order"


# ---------------------------------------------------------------- file-name patterns
def pattern_regex(pattern: str) -> re.Pattern:
    """'{label}_{group}_{take}.wav' -> a regex with one named group per field. A field never holds '/'; where '_'
    separates fields within a name, no field of that name holds '_' (so '{label}_{take}.wav' does not match
    '0_george_0.wav'), while '{label}/*' keeps 'dog_bark' whole. '{_}' and '*' match anything within a name; a field
    named twice ('{label}/{label}_{take}.wav') must hold the same text both times. The pattern starts where a file
    name (or, with '/' in it, a folder) starts, so it matches whole names only."""
    field = r"(\{[A-Za-z_][A-Za-z0-9_]*\})"
    segments, seen = [], set()
    for segment in pattern.split("/"):
        parts = re.split(field, segment)
        chars = "[^/_]+?" if "_" in "".join(parts[::2]) else "[^/]+?"  # parts[::2]: the text between fields
        rx = ""
        for part in parts:
            if part == "{_}":
                rx += "[^/]*?"
            elif part.startswith("{") and part.endswith("}"):  # a field used again must hold the same text
                name = part[1:-1]
                rx += f"(?P={name})" if name in seen else f"(?P<{name}>{chars})"
                seen.add(name)
            else:
                rx += "[^/]*?".join(re.escape(piece) for piece in part.split("*"))
        segments.append(rx)
    return re.compile(r"(?:^|/)" + "/".join(segments) + r"$")


RULE = re.compile(r"^\s*(\w+)\s*(<=|>=|==|!=|<|>| in )\s*(.+?)\s*=\s*(train|val|test)\s*$")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _rule_matches(value: str, op: str, target: str) -> bool:
    if op.strip() == "in":
        return value in [t.strip() for t in target.split(",")]
    try:
        a, b = float(value), float(target)
    except ValueError:
        a, b = value, target  # type: ignore[assignment]
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[op]


def from_pattern(root: str | Path, pattern: str, split_rules: list[str] | None = None) -> Manifest:
    """Label (and group, fold, split, any field) from file names; `split_rules` like 'take<5=test', first match wins."""
    root = Path(root)
    if not root.is_dir():
        raise SpecrnnError(f"{root}: {'not a folder' if root.exists() else 'no such folder'}")
    rx = pattern_regex(pattern)
    if "label" not in rx.groupindex:
        raise SpecrnnError(f"pattern '{pattern}' has no {{label}} field")
    rules = []
    for r in split_rules or []:
        m = RULE.match(r)
        if not m or m.group(1) not in rx.groupindex:
            raise SpecrnnError(f"bad split rule '{r}': expected FIELD OP VALUE=SPLIT with a field of the pattern, e.g. 'take<5=test'")
        if m.group(2) in ("<", "<=", ">", ">=") and not _is_number(m.group(3)):
            raise SpecrnnError(f"bad split rule '{r}': '{m.group(2)}' compares numbers, and '{m.group(3)}' is not one "
                               "(use == or 'in' for text, e.g. 'speaker in george,lucas=test')")
        rules.append(m.groups())
    fields = [f for f in rx.groupindex if f not in ("label", "path")]
    cols: dict[str, list[str]] = {"path": [], "label": [], **{f: [] for f in fields}}
    unmatched = []
    for f in walk_audio(root):
        m = rx.search(f.relative_to(root).as_posix())
        if not m:
            unmatched.append(f.relative_to(root).as_posix())
            continue
        cols["path"].append(str(f.resolve()))
        for k, v in m.groupdict().items():
            cols[k].append(v)
    if not cols["path"]:
        raise SpecrnnError(f"{root}: no audio file name matches pattern '{pattern}'")
    if rules:
        split = []
        for i in range(len(cols["path"])):
            for field_, op, target, name in rules:
                if _rule_matches(cols[field_][i], op, target):
                    split.append(name)
                    break
            else:
                split.append("train")
        cols["split"] = split
    man = Manifest(
        cols.pop("path"), cols.pop("label"), cols.pop("split", None), cols.pop("group", None), cols.pop("fold", None), cols,
        source=str(root), unmatched=unmatched,
    )
    return man
