"""The defaults on non-speech sets built from what Debian ships: drum one-shots from Hydrogen's drum kits
(`apt-get install hydrogen-drumkits hydrogen-data`), labelled by instrument kind (kick, snare, hi-hat, tom, cymbal,
clap), grouped by kit so no fold has one kit on both sides (a new kit is a new room, microphones and drums).
`specrnn cv DATA --folds 5` with no config (the recipe's choices, group-aware folds) against the defaults suite's
seed-style baseline (librosa log-mels, packed 2 x 128 LSTM) trained on each fold's same rows.
python -m benchmarks.nonspeech [--quick]
"""
from __future__ import annotations

import csv
import re
import statistics
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HYDROGEN_KITS = Path("/usr/share/hydrogen/data/drumkits")

# instrument name -> kind, first match wins ("Hi-Hat" before "tom"; "bass drum" is a kick)
DRUM_KINDS = [("hihat", r"\bhat\b|\bhh\b|hi-?hat"), ("kick", r"kick|bass ?drum|\bbd\b"), ("snare", r"snare"),
              ("tom", r"\btom"), ("cymbal", r"crash|ride|splash|china|cymbal"), ("clap", r"clap")]


def drum_kind(name: str) -> str | None:
    """The kind of a kit's instrument from its name (None: not one of DRUM_KINDS, e.g. cowbell, conga)."""
    low = name.lower()
    return next((kind for kind, pattern in DRUM_KINDS if re.search(pattern, low)), None)


def drum_rows(kits: Path = HYDROGEN_KITS) -> list[tuple[str, str, str]]:
    """(path, kind, kit) for every sample layer of every instrument of every kit's drumkit.xml."""
    rows = []
    for xml in sorted(kits.glob("*/drumkit.xml")):
        root = ET.parse(xml).getroot()
        ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
        for inst in root.iter(ns + "instrument"):
            kind = drum_kind(inst.findtext(ns + "name") or "")
            if kind is None:
                continue
            for f in inst.iter(ns + "filename"):
                path = xml.parent / (f.text or "").strip()
                if f.text and path.is_file():
                    rows.append((str(path), kind, xml.parent.name))
    return rows


def drum_manifest(out: Path, kits: Path = HYDROGEN_KITS) -> Path:
    """A manifest (path,label,group) of drum_rows: group is the kit. Returns its path."""
    rows = sorted(set(drum_rows(kits)))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group"])
        w.writerows(rows)
    return out


def _fold_rows(fold_csv: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(path, label) train and test rows of one cross-validation fold (its data.csv)."""
    with open(fold_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    return ([(r["path"], r["label"]) for r in rows if r["split"] != "test"],
            [(r["path"], r["label"]) for r in rows if r["split"] == "test"])


def main(argv=None) -> dict:
    import shutil

    import specrnn

    from .common import OUT, figure, finish, load_str, quick_flag, start, table
    from .defaults import baseline

    quick = quick_flag(argv)
    res = start("nonspeech", quick)
    runs = OUT / ("quick" if quick else "") / "runs"
    if not HYDROGEN_KITS.is_dir():
        res["notes"].append(f"skipped: no drum kits under {HYDROGEN_KITS} (apt-get install hydrogen-drumkits hydrogen-data)")
        print(finish(res, quick))
        return res
    csv_path = drum_manifest(runs / "drums.csv")
    rows = sorted(set(drum_rows()))  # a sample two instruments share is one clip
    out = runs / "nonspeech-drums"
    shutil.rmtree(out, ignore_errors=True)
    folds = 2 if quick else 5
    t0 = time.perf_counter()
    lines: list[str] = []
    cv = specrnn.cv(csv_path, out, overrides=["train.max_epochs=2"] if quick else [], folds=folds,
                    log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    wall = time.perf_counter() - t0
    import json

    fold_runs = [json.loads(p.read_text()) for p in sorted(out.glob("fold-*/seed-*/metrics.json"))]
    secs = statistics.mean(r["train_seconds"] for r in fold_runs)
    t1, cache = time.perf_counter(), {}  # each file's baseline features once, for every fold
    bases = [baseline(*_fold_rows(f), epochs=2 if quick else 20, cache=cache) for f in sorted(out.glob("fold-*/data.csv"))]
    base_wall = time.perf_counter() - t1
    base_acc = statistics.mean(b["accuracy"] for b in bases)
    base_s = base_wall / len(bases)  # per fold, the features' one pass shared out
    acc = cv.accuracy_mean
    kits = sorted({k for _, _, k in rows})
    name = f"drum one-shots (Hydrogen kits: {len(rows)} clips, {len(kits)} kits, 6 kinds), {folds} kit-disjoint folds (mean)"
    res["figures"].append(figure(f"{name}: test accuracy, defaults (no config)", acc, "fraction",
                                 "seed-style LSTM with packing, same folds", base_acc, target=">= baseline + 5 points",
                                 met=acc >= base_acc + 0.05,
                                 note=f"training {secs:.0f} s a fold (baseline {base_s:.0f} s); std {100 * cv.accuracy_std:.1f} points; {wall:.0f} s wall"))
    per_fold = [[i + 1, f"{100 * r['test']['accuracy']:.1f}%", f"{100 * b['accuracy']:.1f}%", r["test"]["n"]]
                for i, (r, b) in enumerate(zip(fold_runs, bases))]
    res["tables"].append(table("Drum one-shots, per kit-disjoint fold", ["fold", "defaults", "baseline", "test clips"], per_fold))
    chose = [x.removeprefix("recipe: ") for x in lines if x.startswith("recipe:")]
    res["notes"].append("The recipe chose: " + ("; ".join(chose) if chose else "(no lines logged)"))
    res["notes"].append(f"Load: {load_str()}.")
    print(finish(res, quick))
    return res


if __name__ == "__main__":
    main()
