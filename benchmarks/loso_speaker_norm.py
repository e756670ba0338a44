"""Experiment (not a feature yet): FSDD leave-one-speaker-out with per-speaker cepstral mean normalisation.

The speaker-independent config normalises each 0.35-0.57 s clip by its own mean and variance (`normalize:
utterance`), which also removes part of the word itself. Kaldi-style per-speaker CMN instead subtracts the mean
MFCC vector of all of a speaker's clips (their unlabelled audio; for the held-out speaker, its own test clips),
leaving within-speaker differences between words intact. Here it is applied to the features before training (the
model then normalises with global training statistics), against the same config with global statistics alone.

python -m benchmarks.loso_speaker_norm --variant speaker_cmn|speaker_cmvn|global [--folds theo,lucas] [--seed 0]
Writes benchmarks/out/loso_speaker_norm-VARIANT-seedN-FOLDS.json.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from .common import OUT, ROOT, SHARED

SPEAKERS = ["theo", "lucas", "george", "jackson", "nicolas", "yweweler"]


def speaker_of(path: str) -> str:
    return re.match(r"\d_([a-z]+)_\d+\.wav$", Path(path).name).group(1)


def speaker_cmn(compute, variance: bool = False):
    """Wrap compute_features: subtract each speaker's mean feature vector over all of its frames (and divide by its
    standard deviation with `variance`)."""
    def wrapped(paths, *args, **kwargs):
        feats, errors = compute(paths, *args, **kwargs)
        if kwargs.get("desc", "features") != "features":
            return feats, errors
        by: dict[str, list[int]] = {}
        for i, p in enumerate(paths):
            if feats[i] is not None:
                by.setdefault(speaker_of(p), []).append(i)
        for rows in by.values():
            frames = np.concatenate([feats[i] for i in rows]).astype(np.float64)
            mean, std = frames.mean(0), (frames.std(0) + 1e-5 if variance else 1.0)
            for i in rows:
                feats[i] = ((feats[i] - mean) / std).astype(np.float32)
        return feats, errors
    return wrapped


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=["speaker_cmn", "speaker_cmvn", "global"], required=True)
    ap.add_argument("--folds", default=",".join(SPEAKERS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/loso_speaker_norm"))
    a = ap.parse_args()
    import specrnn.pipeline as P

    if a.variant.startswith("speaker"):
        P.compute_features = speaker_cmn(P.compute_features, variance=a.variant == "speaker_cmvn")
    files = sorted((SHARED / "fsdd" / "recordings").glob("*.wav"))
    result = {"variant": a.variant, "seed": a.seed, "folds": {}}
    for held in a.folds.split(","):
        csv = a.work / f"{held}.csv"
        csv.parent.mkdir(parents=True, exist_ok=True)
        rows = ["path,label,group,split"] + [f"{f},{f.name[0]},{speaker_of(str(f))},{'test' if speaker_of(str(f)) == held else 'train'}"
                                             for f in files]
        csv.write_text("\n".join(rows) + "\n")
        m = P.train(str(csv), a.work / f"{a.variant}-{held}-{a.seed}", str(ROOT / "configs" / "fsdd-speaker-independent.yaml"),
                    [f"seed={a.seed}", "model.normalize=global"], overwrite=True, log=lambda *x, **k: None)
        result["folds"][held] = {"test_accuracy": m["test"]["accuracy"], "val_accuracy": m["val"]["accuracy"],
                                 "best_epoch": m["best_epoch"], "train_seconds": m["train_seconds"]}
        print(a.variant, held, result["folds"][held], flush=True)
    out = OUT / f"loso_speaker_norm-{a.variant}-seed{a.seed}-{'-'.join(a.folds.split(','))}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
