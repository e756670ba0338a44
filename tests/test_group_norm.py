"""Per-speaker normalisation (model.normalize: group): each group's (speaker's) mean features are removed before the
model, the same way in training, evaluate, cv's seed ensemble, report, predict (after enrolment) and streaming."""
from __future__ import annotations

import json

import numpy as np
import pytest

import specrnn
from specrnn.data.dataset import model_input_set, subtract_group_means
from specrnn.data.manifest import Manifest, load_manifest
from specrnn.errors import SpecrnnError
from specrnn.features import group_means

from .conftest import onnx_export_skip_reason, speakers_manifest, tone, write
from .test_bad_inputs import main_cli, run_cli

TINY = ["model.hidden=16", "model.layers=1", "train.batch_size=16", "train.max_epochs=3", "data.group_val=false",
        "model.normalize=group", "model.bidirectional=false", "model.pooling=mean"]
GAINS = {"spk0": 1.0, "spk1": 0.1, "spk2": 3.0, "spk3": 0.5}  # each speaker's own level: what the group mean removes


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """48 low/high clips from 4 speakers at different levels (float WAV, so a gain is exact), with a group column,
    and a per-speaker model trained on them."""
    root = tmp_path_factory.mktemp("speakers")
    manifest = speakers_manifest(root, GAINS, subtype="FLOAT")
    out = tmp_path_factory.mktemp("runs") / "group"
    metrics = specrnn.train(manifest, out=out, overrides=TINY, log=None)
    return root, out, metrics


def test_group_means_count_every_real_frame_once_and_need_a_group_column():
    a, b, c = np.ones((2, 3), np.float32), np.full((6, 3), 5.0, np.float32), np.full((4, 3), -2.0, np.float32)
    means = group_means([a, b, None, c], ["x", "x", "x", "y"])  # None: an unusable file
    np.testing.assert_allclose(means["x"], np.full(3, (2 * 1 + 6 * 5) / 8))
    np.testing.assert_allclose(means["y"], np.full(3, -2.0))
    man = Manifest(["a", "b", "c", "d"], ["l"] * 4, groups=["x", "x", "x", "y"])
    out = subtract_group_means(man, [a, b, None, c])
    assert out[2] is None and np.allclose(out[3], 0) and np.allclose(out[0], 1 - 4)
    with pytest.raises(SpecrnnError, match="data.csv: no 'group' column"):
        subtract_group_means(Manifest(["a"], ["l"], source="data.csv"), [a])
    with pytest.raises(SpecrnnError, match="1 row\\(s\\) without a group"):
        subtract_group_means(Manifest(["a", "b"], ["l", "l"], groups=["x", ""]), [a, a])
    with pytest.raises(SpecrnnError, match="no mean features for group"):
        subtract_group_means(man, [a, b, None, c], {"x": means["x"]})


def test_evaluate_and_the_cv_ensemble_see_the_features_training_saw(grouped):
    root, out, metrics = grouped
    again = specrnn.evaluate(out)  # the run's own test split, group means over all of split.csv as in training
    assert again["accuracy"] == metrics["test"]["accuracy"] and again["confusion_matrix"] == metrics["test"]["confusion_matrix"]
    from specrnn.experiments.cv import fold_test_probabilities

    probs, targets = fold_test_probabilities([out], out / "split.csv")
    assert np.mean(probs.argmax(1) == targets) == pytest.approx(metrics["test"]["accuracy"])


def test_predict_needs_enrolment_and_a_speakers_level_then_does_not_matter(grouped, tmp_path):
    root, out, _ = grouped
    p = specrnn.load(out, device="cpu")
    files = sorted((root / "spk1").glob("*.wav"))
    with pytest.raises(SpecrnnError, match="enrol the speaker first"):
        p.predict(files)
    # enrolled with all of spk1's clips: the same probabilities as the run's own (group-normalised) features
    man = load_manifest(out / "split.csv")
    fs = model_input_set(man, p.cfg, p.classes, None)
    rows = [i for i, path in enumerate(fs.paths) if "spk1" in path]
    enrolled = p.enroll(root / "spk1").predict([fs.paths[i] for i in rows])  # a folder enrols its audio files
    expected = p.probabilities(p.logits_from_features([fs.features[i] for i in rows]))
    got = np.array([[q.probabilities[c] for c in p.classes] for q in enrolled])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # the same speaker recorded 20 dB quieter: its raw features move, its predictions do not
    quiet = [write(tmp_path / f.name, _read(f) * 0.1, subtype="FLOAT") for f in files]
    raw, raw_quiet = p.extractor.extract([_read(f) for f in files]), p.extractor.extract([_read(f) for f in quiet])
    assert np.abs(raw[0][:, 0] - raw_quiet[0][:, 0]).min() > 1.0
    quiet_probs = p.enroll(quiet).predict(quiet)
    np.testing.assert_allclose([[q.probabilities[c] for c in p.classes] for q in quiet_probs],
                               [[q.probabilities[c] for c in p.classes] for q in p.enroll(files).predict(files)], atol=1e-4)


def _read(path):
    import soundfile as sf

    return sf.read(str(path), dtype="float32")[0]


def test_a_stream_subtracts_the_enrolled_mean(grouped):
    root, out, _ = grouped
    p = specrnn.load(out, device="cpu")
    with pytest.raises(SpecrnnError, match="enrol the speaker first"):
        p.stream()
    files = sorted((root / "spk2").glob("*.wav"))[:3]
    p.enroll(sorted((root / "spk2").glob("*.wav")))
    offline = p.predict(files)
    for f, q in zip(files, offline):
        s = p.stream()
        wave = _read(f)
        for start in range(0, len(wave), 1600):
            s.push_audio(wave[start : start + 1600])
        s.finish()
        np.testing.assert_allclose(s.probabilities(), [q.probabilities[c] for c in p.classes], atol=1e-4)


def test_cli_enrols_from_enroll_or_the_files_and_refuses_what_it_cannot_do(grouped, tmp_path, capsys):
    root, out, _ = grouped
    spk3 = root / "spk3"
    r = run_cli("predict", out, spk3 / "3.wav", spk3 / "7.wav", "--enroll", spk3, "--json")
    assert r.returncode == 0, r.stderr
    with_folder = json_probs(r.stdout)
    # the CLI's own default device (the GPU where there is one): the same arithmetic, so the same probabilities
    expected = specrnn.load(out).enroll(sorted(spk3.glob("*.wav"))).predict([spk3 / "3.wav", spk3 / "7.wav"])
    np.testing.assert_allclose(with_folder, [[t["probability"] for t in sorted(q.to_dict()["top"], key=lambda t: t["label"])]
                                             for q in expected], atol=1e-5)
    # --enroll takes several paths at once (a shell glob), FILES before it
    r = run_cli("predict", out, spk3 / "3.wav", spk3 / "7.wav", "--enroll", *sorted(spk3.glob("*.wav")), "--json")
    assert r.returncode == 0 and json_probs(r.stdout) == with_folder and len(json.loads(r.stdout)) == 2, r.stderr
    # no --enroll: the usable files to predict enrol the speaker, and it says how many; an unusable one is named
    (tmp_path / "notaudio.wav").write_text("not audio")
    r = run_cli("predict", out, spk3, tmp_path / "notaudio.wav", "--json")
    assert r.returncode == 1 and "no --enroll was given, so the 12 usable file(s) of the 13" in r.stderr, r.stderr
    assert [d.get("error") is not None for d in json.loads(r.stdout)] == [False] * 12 + [True]
    r = run_cli("predict", out, tmp_path / "missing.wav", "--json")  # nothing to enrol: the file's own error
    assert r.returncode == 1 and json.loads(r.stdout) == [{"path": str(tmp_path / "missing.wav"), "error": "file not found"}]
    rc, _, err = main_cli(capsys, "predict", out, spk3 / "3.wav", "--enroll", tmp_path / "missing.wav")
    assert rc != 0 and "missing.wav" in err and "Traceback" not in err
    rc, _, err = main_cli(capsys, "train", root / "m.csv", "--out", tmp_path / "x", "--set", "model.normalize=group",
                          "--set", "train.max_epochs=1", "--set", "data.group_val=false", "--set", "model.bidirectional=true")
    assert rc == 0  # the manifest has groups
    tones = tmp_path / "tones"
    for i in range(8):
        write(tones / ("low" if i % 2 else "high") / f"{i}.wav", tone(300 if i % 2 else 3000, 0.3, seed=i))
    rc, _, err = main_cli(capsys, "train", tones, "--out", tmp_path / "y", "--set", "model.normalize=group")
    assert rc != 0 and "no 'group' column" in err and "Traceback" not in err
    assert not (tmp_path / "y").exists()  # refused before a run folder is made
    rc, _, err = main_cli(capsys, "cv", tones, "--out", tmp_path / "cv", "--folds", "2", "--set", "model.normalize=group")
    assert rc != 0 and "no 'group' column" in err and not (tmp_path / "cv").exists()
    two = tmp_path / "two.csv"  # two speakers, one the test speaker: validation cannot take a whole one
    rows = (root / "m.csv").read_text().splitlines()
    two.write_text("\n".join([rows[0] + ",split"] + [f"{root}/{r},{'test' if r.endswith('spk0') else 'train'}"
                                                     for r in rows[1:] if r.endswith(("spk0", "spk1"))]) + "\n")
    rc, _, err = main_cli(capsys, "train", two, "--out", tmp_path / "z", "--set", "model.normalize=group")
    assert rc != 0 and "1 group left for training and validation" in err and "data.group_val=false" in err
    rc, _, err = main_cli(capsys, "predict", tmp_path / "x", spk3 / "3.wav", "--enroll", spk3)
    assert rc == 0, err
    # a bidirectional model cannot stream: refused before enrolment reads anything (the missing file is never opened)
    rc, _, err = main_cli(capsys, "predict", tmp_path / "x", spk3 / "3.wav", "--stream", "--enroll", tmp_path / "missing.wav")
    assert rc != 0 and "is bidirectional" in err and "missing.wav" not in err, err
    # a model without per-speaker normalisation has nothing to enrol
    rc, _, err = main_cli(capsys, "train", root / "m.csv", "--out", tmp_path / "plain", "--set", "train.max_epochs=1",
                          "--set", "model.hidden=8", "--set", "data.group_val=false")
    assert rc == 0, err
    rc, _, err = main_cli(capsys, "predict", tmp_path / "plain", spk3 / "3.wav", "--enroll", spk3)
    assert rc != 0 and "needs no enrolment" in err


def json_probs(stdout: str) -> list[list[float]]:
    return [[t["probability"] for t in sorted(d["top"], key=lambda t: t["label"])] for d in json.loads(stdout)]


def test_report_shows_mistakes_on_group_normalised_features(grouped):
    _, out, _ = grouped
    r = run_cli("report", out)
    assert r.returncode == 0, r.stderr
    text = (out / "report.html").read_text()
    assert "test clips are wrong" in text or "No mistakes" in text
    assert "unlabelled test clips set that speaker's own mean" in text


def test_onnx_export_is_one_enrolled_speakers_model(grouped, tmp_path, capsys):
    if onnx_export_skip_reason():
        pytest.skip(onnx_export_skip_reason())
    from specrnn.export import OnnxStreamingClassifier

    root, out, _ = grouped
    rc, _, err = main_cli(capsys, "export", out, "--out", tmp_path / "m.onnx", "--streaming")
    assert rc != 0 and "--enroll" in err and not (tmp_path / "m.onnx").exists()
    spk2 = root / "spk2"
    rc, stdout, err = main_cli(capsys, "export", out, "--out", tmp_path / "m.onnx", "--streaming", "--enroll", spk2)
    assert rc == 0 and "enrolled from 12 clip(s)" in stdout, err
    from specrnn.export import metadata, session

    assert metadata(session(tmp_path / "m.onnx"))["enrolled_clips"] == "12"
    files = sorted(spk2.glob("*.wav"))[:3]
    expected = specrnn.load(out, device="cpu").enroll(sorted(spk2.glob("*.wav"))).predict(files)
    for f, q in zip(files, expected):
        s = OnnxStreamingClassifier(tmp_path / "m.onnx")
        s.push_audio(_read(f))
        s.finish()
        np.testing.assert_allclose(s.probabilities(), [q.probabilities[c] for c in q.probabilities], atol=1e-4)
