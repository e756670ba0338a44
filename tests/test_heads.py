"""Heads through the whole pipeline: multi-label (sigmoid + BCE, labels 'a;b') and frame-level outputs
trained on clip labels."""
import csv

import numpy as np
import pytest

import specrnn

from .conftest import tone, write

TINY = ["model.hidden=16", "model.layers=1", "train.batch_size=16", "train.patience=50", "train.max_epochs=8"]


@pytest.fixture(scope="module")
def mixtures(tmp_path_factory):
    """Clips holding a low tone, a high tone, or both: a multi-label task."""
    root = tmp_path_factory.mktemp("mix")
    rng = np.random.default_rng(0)
    rows = [["path", "label"]]
    for i in range(90):
        kind = ["low", "high", "low;high"][i % 3]
        dur = rng.uniform(0.3, 0.7)
        y = np.zeros(int(dur * 16000), dtype=np.float32)
        if "low" in kind:
            y += tone(rng.uniform(200, 400), dur, seed=i)
        if "high" in kind:
            y += tone(rng.uniform(2500, 4000), dur, seed=i + 1000)
        write(root / f"{i}.wav", y)
        rows.append([f"{i}.wav", kind])
    with open(root / "m.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root / "m.csv"


def test_multilabel_sigmoid_head(mixtures, tmp_path):
    m = specrnn.train(mixtures, out=tmp_path / "run", overrides=TINY + ["task.kind=multilabel"], log=lambda *a: None)
    assert m["test"]["classes"] == ["high", "low"] and "mAP" in m["test"]
    assert m["test"]["mAP"] > 0.9 and m["test"]["accuracy"] > 0.8
    both = [r["path"] for r in csv.DictReader(open(mixtures)) if r["label"] == "low;high"][:3]
    preds = specrnn.load(tmp_path / "run").predict([mixtures.parent / p for p in both])
    assert sum(p.label == "high;low" for p in preds) >= 2
    assert all(p.probabilities["low"] > 0.5 and 0 <= p.probabilities["high"] <= 1 for p in preds[:1])


def test_frame_head_trains_on_clip_labels(tone_folder, tmp_path):
    m = specrnn.train(tone_folder, out=tmp_path / "run", overrides=TINY + ["model.head=frame"], log=lambda *a: None)
    assert m["test"]["accuracy"] >= 0.8
    pred = specrnn.load(tmp_path / "run").predict([next(tone_folder.rglob("*.wav"))])[0]
    assert abs(sum(pred.probabilities.values()) - 1) < 1e-5
