"""Speaker-adversarial training (train.adversary): the encoder receives the reversed gradient of a group
classifier that reads the pooled embedding; the saved model is the plain classifier."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from specrnn.config import load_config
from specrnn.models import build_model
from specrnn.files import load_model_file
from specrnn.tasks import ClassificationTask
from specrnn.training.module import LitClassifier

from .conftest import low_high_clip, speakers_manifest
from .test_bad_inputs import TINY, run_cli
from .test_robustness import assert_same_run, killed_at


def _lit(adversary: float, head: str = "clip") -> LitClassifier:
    cfg = load_config(None, [f"train.adversary={adversary}", "model.hidden=8", "model.layers=1", f"model.head={head}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 6, 3)
    return LitClassifier(model, ClassificationTask(["a", "b", "c"]), cfg, steps_per_epoch=10, n_groups=4)


def test_encoder_gets_the_task_gradient_minus_the_scaled_adversary_gradient(monkeypatch):
    lit = _lit(0.5).eval()  # no dropout: both passes see the same network
    monkeypatch.setattr(LitClassifier, "reversal_scale", lambda self: 0.7)
    g = torch.Generator().manual_seed(1)
    batch = {"features": torch.randn(5, 9, 6, generator=g), "lengths": torch.tensor([9, 7, 4, 9, 2]),
             "targets": torch.tensor([0, 1, 2, 1, 0]), "groups": torch.tensor([0, 1, 2, 3, 1])}
    x = batch["features"]
    x[1, 7:] = x[2, 4:] = x[4, 2:] = 0  # padding is zero
    encoder = list(lit.model.encoder.parameters())
    lit.training_step(batch, 0).backward()
    got = [p.grad.clone() for p in encoder]
    adv_got = [p.grad.clone() for p in lit.adversary.parameters()]

    lit.zero_grad()
    emb = lit.model.embed(batch["features"], batch["lengths"])
    task = lit.task.loss(lit.model.head(emb), batch["targets"])
    adv = torch.nn.functional.cross_entropy(lit.adversary(emb), batch["groups"])
    g_task = torch.autograd.grad(task, encoder, retain_graph=True)
    g_adv = torch.autograd.grad(adv, encoder + list(lit.adversary.parameters()))
    for p_got, t, a in zip(got, g_task, g_adv):
        torch.testing.assert_close(p_got, t - 0.7 * a)
    # the adversary itself learns to find the group: its own gradient is not reversed
    for p_got, a in zip(adv_got, g_adv[len(encoder):]):
        torch.testing.assert_close(p_got, a)


def test_reversal_ramps_from_zero_to_the_configured_weight(monkeypatch):
    lit = _lit(0.8)
    lit.cfg.train.max_epochs = 1  # 10 steps in all

    def at(step: int) -> float:
        monkeypatch.setattr(LitClassifier, "global_step", property(lambda self: step))
        return lit.reversal_scale()

    assert at(0) == 0.0
    assert at(10) == pytest.approx(0.8 * (2 / (1 + np.exp(-10)) - 1))
    assert 0 < at(2) < at(5) < at(10) <= 0.8


def test_frame_heads_and_data_without_groups_are_refused(tmp_path):
    with pytest.raises(Exception, match="train.adversary needs a clip head"):
        _lit(0.5, head="frame")
    rng = np.random.default_rng(0)
    rows = [["path", "label"]] + [[f"{i}.wav", low_high_clip(tmp_path / f"{i}.wav", i, rng)] for i in range(20)]
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    r = run_cli("train", tmp_path / "m.csv", "--out", tmp_path / "run", *TINY, "--max-epochs", "1", "--set", "train.adversary=0.5")
    assert r.returncode != 0 and "train.adversary needs a 'group' column" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """48 low/high clips from 4 speakers, as a manifest with a group column."""
    return speakers_manifest(tmp_path_factory.mktemp("grouped"))


ARGS = [*TINY, "--max-epochs", "3", "--set", "train.adversary=0.5", "--set", "data.group_val=false"]


def test_training_with_an_adversary_saves_the_plain_model(grouped, tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", grouped, "--out", out, *ARGS)
    assert r.returncode == 0, r.stdout + r.stderr
    state, meta = load_model_file(out)
    assert not any(k.startswith("adversary") for k in state) and meta["config"]["train"]["adversary"] == 0.5
    r = run_cli("predict", out, grouped.parent / "spk0" / "0.wav")
    assert r.returncode == 0, r.stdout + r.stderr
    # killed after epoch 1 and resumed: the adversary's weights come back from the checkpoint, and the run
    # ends exactly where the uninterrupted one did
    killed = tmp_path / "killed"
    killed_at("val:1", "train", grouped, "--out", killed, *ARGS)
    r = run_cli("train", "--resume", "--out", killed)
    assert r.returncode == 0, r.stdout + r.stderr
    assert any(k.startswith("adversary") for k in torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    assert_same_run(out, killed, epochs=3)
