"""The defaults on non-speech sets built from what Debian ships:

- drum one-shots from Hydrogen's drum kits (`apt-get install hydrogen-drumkits hydrogen-data`), labelled by
  instrument kind (kick, snare, hi-hat, tom, cymbal, clap), grouped by kit so no fold has one kit on both sides
  (a new kit is a new room, microphones and drums);
- pitched instrument notes rendered by FluidSynth from two General MIDI sound fonts (`apt-get install fluidsynth
  fluid-soundfont-gm timgm6mb-soundfont`), labelled by instrument family (piano, organ, guitar, bass, strings,
  brass, reed, pipe), grouped by GM program, so every test note is played by an instrument never heard in training.

`specrnn cv DATA --folds 5` with no config (the recipe's choices, group-aware folds) against the defaults suite's
seed-style baseline (librosa log-mels, 2 x 128 LSTM at the last real frame) trained on each fold's same rows.
python -m benchmarks.nonspeech [--quick] [--resume]  (--resume: keep the defaults' finished folds of an earlier run
with the same settings, e.g. after the baseline changed; their wall time is then not measured)
"""
from __future__ import annotations

import csv
import re
import shutil
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


SOUND_FONTS = [Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), Path("/usr/share/sounds/sf2/TimGM6mb.sf2")]
# GM families (program // 8) kept: distinct sounds, each with eight programs
FAMILIES = {0: "piano", 2: "organ", 3: "guitar", 4: "bass", 5: "strings", 7: "brass", 8: "reed", 9: "pipe"}


def midi_notes(program: int, pitches: list[int], note_s: float = 1.0, slot_s: float = 1.5, velocity: int = 100) -> bytes:
    """A one-track Standard MIDI File: `program`, then each pitch held `note_s` at the start of its `slot_s` slot."""
    def var(n: int) -> bytes:  # MIDI variable-length quantity
        out = [n & 0x7F]
        while n > 127:
            n >>= 7
            out.append(0x80 | (n & 0x7F))
        return bytes(reversed(out))

    tps = 960  # ticks per second at the default tempo (120 bpm, 480 ticks a beat)
    ev = var(0) + bytes([0xC0, program])
    rest = 0
    for p in pitches:
        ev += var(rest) + bytes([0x90, p, velocity]) + var(int(note_s * tps)) + bytes([0x80, p, 0])
        rest = int((slot_s - note_s) * tps)
    ev += var(rest) + b"\xff\x2f\x00"
    return (b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + (480).to_bytes(2, "big")
            + b"MTrk" + len(ev).to_bytes(4, "big") + ev)


def instrument_manifest(out: Path, fonts: list[Path] = SOUND_FONTS, rate: int = 16000, slot_s: float = 1.5) -> Path:
    """Render 9 notes of each program of FAMILIES with each sound font (FluidSynth), one WAV a note under out/,
    and write out/manifest.csv (path,label,group,font): label the family, group the program. Deterministic."""
    import subprocess

    import numpy as np
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for font in fonts:
        for fam, label in FAMILIES.items():
            for program in range(8 * fam, 8 * fam + 8):
                pitches = list(range(28, 53, 3)) if label == "bass" else list(range(48, 73, 3))
                mid, wav = out / "tmp.mid", out / "tmp.wav"
                mid.write_bytes(midi_notes(program, pitches, slot_s=slot_s))
                subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.8", "-r", str(rate), "-F", str(wav), str(font), str(mid)],
                               check=True, capture_output=True)
                audio, sr = sf.read(wav, dtype="float32", always_2d=True)
                audio = audio.mean(1)
                n = int(slot_s * sr)
                for k, pitch in enumerate(pitches):
                    clip = audio[k * n : (k + 1) * n]
                    if len(clip) < n // 2 or np.abs(clip).max() < 1e-4:  # a program this font leaves silent
                        continue
                    name = out / f"{font.stem}_{program:03d}_{pitch}.wav"
                    sf.write(name, clip, sr)
                    rows.append((str(name), label, f"program{program:03d}", font.stem))
    for f in (out / "tmp.mid", out / "tmp.wav"):
        f.unlink(missing_ok=True)
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group", "font"])
        w.writerows(rows)
    return out / "manifest.csv"


def _fold_rows(fold_csv: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(path, label) train and test rows of one cross-validation fold (its data.csv)."""
    with open(fold_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    return ([(r["path"], r["label"]) for r in rows if r["split"] != "test"],
            [(r["path"], r["label"]) for r in rows if r["split"] == "test"])


def _compare(res: dict, name: str, what: str, csv_path: Path, out: Path, folds: int, quick: bool,
             resume: bool = False) -> None:
    """Cross-validate the defaults on csv_path's group-disjoint folds and the baseline on the same folds' rows."""
    import json

    import specrnn

    from .common import figure, table
    from .defaults import baseline

    resumed = resume and any(out.glob("fold-*/seed-*/metrics.json"))
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    lines: list[str] = []
    cv = specrnn.cv(csv_path, out, overrides=["train.max_epochs=2"] if quick else [], folds=folds,
                    log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    wall = time.perf_counter() - t0
    fold_runs = [json.loads(p.read_text()) for p in sorted(out.glob("fold-*/seed-*/metrics.json"))]
    secs = statistics.mean(r["train_seconds"] for r in fold_runs)
    t1, cache = time.perf_counter(), {}  # each file's baseline features once, for every fold
    bases = [baseline(*_fold_rows(f), epochs=2 if quick else 20, cache=cache) for f in sorted(out.glob("fold-*/data.csv"))]
    base_s = (time.perf_counter() - t1) / len(bases)  # per fold, the features' one pass shared out
    base_acc = statistics.mean(b["accuracy"] for b in bases)
    acc = cv.accuracy_mean
    res["figures"].append(figure(f"{name} ({what}), {folds} folds (mean): test accuracy, defaults (no config)", acc, "fraction",
                                 "seed-style LSTM at the last real frame, same folds", base_acc, target=">= baseline + 5 points",
                                 met=acc >= base_acc + 0.05,
                                 note=f"training {secs:.0f} s a fold (baseline {base_s:.0f} s); std {100 * cv.accuracy_std:.1f} "
                                      f"points over folds; " + ("the defaults' folds resumed from an earlier run (wall not measured)"
                                                                if resumed else f"{wall:.0f} s wall for the defaults' folds")))
    per_fold = [[i + 1, f"{100 * r['test']['accuracy']:.1f}%", f"{100 * b['accuracy']:.1f}%", r["test"]["n"]]
                for i, (r, b) in enumerate(zip(fold_runs, bases))]
    res["tables"].append(table(f"{name}, per fold", ["fold", "defaults", "baseline", "test clips"], per_fold))
    chose = [x.removeprefix("recipe: ") for x in lines if x.startswith("recipe:")]
    res["notes"].append(f"{name}: the recipe chose: " + ("; ".join(chose) if chose else "nothing beyond the defaults"))


def main(argv=None) -> dict:
    import csv as csv_

    from .common import OUT, finish, load_str, start

    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    quick = a.quick
    res = start("nonspeech", quick)
    runs = OUT / ("quick" if quick else "") / "runs"
    folds = 2 if quick else 5
    if HYDROGEN_KITS.is_dir():
        csv_path = drum_manifest(runs / "drums.csv")
        with open(csv_path, newline="") as f:
            rows = list(csv_.DictReader(f))
        _compare(res, "drum one-shots", f"Hydrogen's kits: {len(rows)} clips, {len({r['group'] for r in rows})} kits, "
                 f"{len({r['label'] for r in rows})} kinds; kit-disjoint", csv_path, runs / "nonspeech-drums", folds, quick, a.resume)
    else:
        res["notes"].append(f"drums skipped: no kits under {HYDROGEN_KITS} (apt-get install hydrogen-drumkits hydrogen-data)")
    fonts = [f for f in SOUND_FONTS if f.is_file()]
    if fonts and shutil.which("fluidsynth"):
        csv_path = instrument_manifest(runs / "instruments", fonts)
        with open(csv_path, newline="") as f:
            rows = list(csv_.DictReader(f))
        _compare(res, "instrument notes", f"FluidSynth, {len(fonts)} GM sound fonts: {len(rows)} notes, "
                 f"{len({r['label'] for r in rows})} families, {len({r['group'] for r in rows})} programs; program-disjoint",
                 csv_path, runs / "nonspeech-instruments", folds, quick, a.resume)
    else:
        res["notes"].append("instruments skipped: needs fluidsynth and the GM sound fonts "
                            "(apt-get install fluidsynth fluid-soundfont-gm timgm6mb-soundfont)")
    res["notes"].append(f"Load: {load_str()}.")
    print(finish(res, quick))
    return res


if __name__ == "__main__":
    main()
