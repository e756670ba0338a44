"""The automatic recipe (specrnn.recipe): each rule, the profile it reads, the printed choices, --set winning,
and class weights for imbalanced data."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from specrnn import recipe
from specrnn.config import load_config
from specrnn.data.manifest import load_manifest
from specrnn.recipe import DataProfile, as_config, choose

from .conftest import tone, write


def P(seconds=0.5, rate=16000, clips=1000, counts=None, kind="classification", groups=0) -> DataProfile:
    return DataProfile(clips, counts or {"a": 500, "b": 500}, groups, kind, [seconds] * 11, [rate] * 11)


def keys(choices) -> dict:
    return {c.key: c.value for c in choices}


def test_short_speech_like_clips_keep_the_defaults():
    assert choose(P(0.5, 8000)) == []


def test_token_sequences_get_ctc_on_whole_clips_at_their_own_rate():
    got = keys(choose(P(6.0, 8000, 600, {"yes": 240, "no": 240}, "ctc")))
    assert got["task.kind"] == "ctc" and got["features.max_seconds"] is None
    assert got["features.sample_rate"] == 8000 and got["features.hop_length"] == 80 and got["features.win_length"] == 200
    assert "model.frontend" not in got  # the event recipe is for classes, not sequences
    assert got["train.batch_size"] == 8 and got["train.max_epochs"] == got["train.patience"] == 40  # off the plateau
    assert got["model.normalize"] == "frame" and got["model.stack"] == 4
    assert "augment.pause_crop" not in got  # 600 clips: enough sequences (the cut hurts connected digits)
    small = keys(choose(P(6.0, 8000, 60, {"yes": 1, "no": 1}, "ctc")))
    assert small["train.max_epochs"] == small["train.patience"] == 100  # 60 clips: few steps an epoch, more epochs
    assert small["augment.pause_crop"] == 1.0  # and cut at pauses, so 60 sequences are not learnt by heart
    assert keys(choose(P(6.0, 8000, 60, {"yes": 1, "no": 1}, "ctc")))["train.batch_size"] == 4  # few clips: smaller
    assert load_config(as_config(choose(P(6.0, 8000, 60, {"yes": 1, "no": 1}, "ctc")))).task.kind == "ctc"


def test_multilabel_labels():
    assert keys(choose(P(kind="multilabel"))) == {"task.kind": "multilabel"}  # 1000 clips: nothing else


def test_long_clips_get_the_event_recipe_equal_to_configs_esc10():
    from .conftest import ROOT

    got = load_config(as_config(choose(P(5.0, 44100, 400, {str(i): 40 for i in range(10)})))).to_dict()  # ESC-10's size
    assert got == load_config(str(ROOT / "configs" / "esc10.yaml")).to_dict()
    assert "features.sample_rate" not in keys(choose(P(5.0, 16000)))  # 16 kHz recordings are not upsampled
    assert "model.frontend" not in keys(choose(P(recipe.LONG_S - 0.1)))


def test_short_clips_recorded_at_44_1_khz_are_sound_events_at_22_05_khz():
    got = keys(choose(P(1.0, 44100)))  # drum one-shots, sound effects: not speech, whatever their length
    assert got["model.frontend"]["type"] == "cnn" and got["model.pooling"] == "attention" and got["augment"]["mixup"] == 0.3
    assert got["features.sample_rate"] == 22050 and got["features.hop_length"] == 441
    assert "model.frontend" not in keys(choose(P(1.0, 16000)))  # keywords, digits: the streaming defaults
    assert "model.frontend" not in keys(choose(P(1.0, 48000, kind="ctc")))  # token sequences stay CTC
    assert any("recorded at 44100 Hz" in c.why for c in choose(P(1.0, 44100)))


def test_very_short_clips_get_finer_frames():
    got = keys(choose(P(0.04)))
    assert got["features.hop_length"] == 80 and got["features.n_fft"] == 256 and got["features.win_length"] == 256
    assert load_config(as_config(choose(P(0.04)))).features.hop_length == 80
    hifi = keys(choose(P(0.04, 44100)))  # the same 16 ms and 5 ms at the events' 22.05 kHz
    assert (hifi["features.win_length"], hifi["features.hop_length"], hifi["features.n_fft"]) == (353, 110, 512)
    cfg = load_config(as_config(choose(P(0.04, 44100)))).features
    assert cfg.sample_rate == 22050 and cfg.hop_length == 110


def test_clips_over_30_s_are_read_in_their_middle():
    p = P(10.0)
    p.seconds = [10.0] * 10 + [95.0]
    assert keys(choose(p))["features.crop"] == "center"
    assert "features.crop" not in keys(choose(P(10.0)))


def test_imbalanced_classes_weight_the_loss():
    assert keys(choose(P(counts={"a": 900, "b": 100})))["train.class_weights"] == "balanced"
    assert "train.class_weights" not in keys(choose(P(counts={"a": 550, "b": 450})))


def test_balance_weights_classes_by_their_inverse_share():
    from specrnn.tasks import ClassificationTask

    task = ClassificationTask(["a", "b"])
    w = task.balance(np.array([0] * 9 + [1]))
    assert torch.allclose(w, torch.tensor([10 / 18, 10 / 2]))
    logits, targets = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    plain = ClassificationTask(["a", "b"]).loss(logits, targets)
    weighted = task.loss(logits, targets)
    expect = (w[0] * torch.nn.functional.cross_entropy(logits[:1], targets[:1]) +
              w[1] * torch.nn.functional.cross_entropy(logits[1:], targets[1:])) / w.sum()
    assert torch.allclose(weighted, expect) and not torch.allclose(weighted, plain)


def _folder(root, per_class: dict[str, int], seconds: float = 0.4):
    rng = np.random.default_rng(0)
    for label, n in per_class.items():
        f = 300 if label == "low" else 3000
        for i in range(n):
            write(root / label / f"{label}_{i}.wav", tone(f * rng.uniform(0.8, 1.2), seconds, seed=i))
    return root


def test_few_clips_get_smaller_batches():
    assert keys(choose(P(clips=60)))["train.batch_size"] == 4
    assert keys(choose(P(clips=200)))["train.batch_size"] == 12
    assert "train.batch_size" not in keys(choose(P(clips=300)))


def test_profile_reads_labels_durations_and_rates(tmp_path):
    rows = [["path", "label"]]
    for i in range(6):
        write(tmp_path / f"{i}.wav", tone(440, 1.0 + i, sr=8000), sr=8000)
        rows.append([f"{i}.wav", "yes no" if i % 2 else "no no yes"])
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    p = recipe.profile(load_manifest(tmp_path / "m.csv"))
    assert p.label_type == "ctc" and p.counts == {"yes": 6, "no": 9} and p.rate == 8000
    assert p.median_seconds == pytest.approx(3.5) and p.clips == 6


def test_train_prints_the_choices_writes_them_in_config_yaml_and_set_wins(tmp_path, capsys):
    from specrnn.cli import main

    data = _folder(tmp_path / "d", {"low": 30, "high": 6}, seconds=0.05)  # imbalanced, very short clips
    run = tmp_path / "run"
    args = ["train", str(data), "--out", str(run), "--max-epochs", "2", "--set", "model.hidden=8", "--set", "model.layers=1",
            "--set", "features.hop_length=160", "--set", "data.val_fraction=0.2", "--set", "data.test_fraction=0.2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "recipe: 36 clips, 2 classes" in out
    assert "recipe: train.class_weights = 'balanced'" in out and "class weights (train.class_weights: balanced)" in out
    assert "recipe: features.hop_length = 80 (--set wins)" in out
    text = (run / "config.yaml").read_text()
    assert text.startswith("# recipe: 36 clips") and "# recipe: features.n_fft = 256" in text
    cfg = load_config(str(run / "config.yaml"))
    assert cfg.features.hop_length == 160 and cfg.features.n_fft == 256 and cfg.train.class_weights == "balanced"


def test_a_given_config_turns_the_recipe_off(tmp_path, capsys):
    from specrnn.cli import main

    data = _folder(tmp_path / "d", {"low": 30, "high": 6})
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "--config", "gru", "--max-epochs", "1",
                 "--set", "model.hidden=8", "--set", "model.layers=1"]) == 0
    assert "recipe:" not in capsys.readouterr().out
    assert load_config(str(tmp_path / "run" / "config.yaml")).train.class_weights == "none"
