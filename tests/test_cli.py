"""End to end through the command line: train -> run folder -> evaluate -> predict, on synthesised audio and
on real FSDD recordings; user errors exit non-zero with the file and reason, never a traceback."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import tone, write, write_tone_folder

TINY = ["--set", "model.hidden=16", "--set", "model.layers=1", "--set", "train.batch_size=16", "--set", "train.patience=50"]


def cli(*args, check=True, env=None):
    e = dict(os.environ, **(env or {}))
    r = subprocess.run([sys.executable, "-m", "specrnn", *map(str, args)], capture_output=True, text=True, env=e, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"specrnn {' '.join(map(str, args))} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = write_tone_folder(tmp_path_factory.mktemp("data") / "tones")
    run = tmp_path_factory.mktemp("runs") / "tiny"
    r = cli("train", root, "--out", run, "--max-epochs", 6, *TINY)
    assert "test accuracy" in r.stdout and "run folder" in r.stdout
    return run, root


def test_run_folder_holds_everything(tiny_run):
    run, _ = tiny_run
    for name in ("config.yaml", "model.pt", "metrics.json", "history.csv", "learning_curves.png", "confusion_matrix.png",
                 "split.csv", "run.json", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val", "test", "best_epoch", "parameters"} <= set(metrics)
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and all(r["val_acc"] for r in rows)
    assert metrics["test"]["accuracy"] >= 0.9  # low tones vs high tones: trivially separable


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_trains_with_gradient_clipping(tiny_run, tmp_path, precision):
    """Mixed precision (`auto` on a GPU) once crashed at the first step: Lightning refuses to clip the gradients of
    a fused AdamW. The same check runs on CPU, where Lightning runs 16-mixed as bf16-mixed."""
    _, root = tiny_run
    r = cli("train", root, "--out", tmp_path / "run", "--max-epochs", 2, *TINY, "--set", f"train.precision={precision}",
            "--set", "train.grad_clip=1.0")
    assert "epoch 1/2: train loss" in r.stdout and "epoch 2/2:" in r.stdout  # not a terminal: a line per epoch
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    import torch

    expected = f"cuda:0, {precision}" if torch.cuda.is_available() else "cpu, bf16-mixed"
    assert metrics["hardware"] == expected and metrics["epochs_run"] == 2


def test_evaluate_json(tiny_run, tmp_path):
    run, root = tiny_run
    m = json.loads(cli("evaluate", run, "--json").stdout)
    assert {"accuracy", "macro_f1", "n", "per_class", "confusion_matrix"} <= set(m)
    assert m["n"] == json.loads((run / "metrics.json").read_text())["test"]["n"]
    m_all = json.loads(cli("evaluate", run, root, "--json").stdout)  # a folder has no split column: every file
    assert m_all["n"] == 48 and m_all["split"] is None
    text = cli("evaluate", run, run / "split.csv").stdout  # a CSV with a split column: its test rows, and it says so
    assert "split.csv, test rows" in text
    test_only = tmp_path / "test_only.csv"  # a CSV without the asked split: the error names the splits it has
    test_only.write_text("".join(x for i, x in enumerate((run / "split.csv").read_text().splitlines(True))
                                 if i == 0 or ",test" in x))
    r = cli("evaluate", run, test_only, "--split", "val", check=False)
    assert r.returncode == 2 and "its splits: test;" in r.stderr and "specrnn evaluate RUN --split val" in r.stderr, r.stderr


@pytest.mark.parametrize("args, message", [(["--top-k", "-2"], "must be a whole number above 0"),
                                           (["--top-k", "0"], "must be a whole number above 0"),
                                           (["--top-k", "2.5"], "not a whole number: '2.5'"),
                                           (["--stream", "--chunk-ms", "0"], "must be a number above 0 (finite)"),
                                           (["--stream", "--chunk-ms", "-5"], "must be a number above 0 (finite)"),
                                           (["--stream", "--chunk-ms", "nan"], "must be a number above 0 (finite)"),
                                           (["--stream", "--chunk-ms", "inf"], "must be a number above 0 (finite)")])
def test_predict_rejects_counts_that_mean_nothing(tiny_run, args, message):
    run, root = tiny_run
    r = cli("predict", run, next(root.rglob("*.wav")), *args, check=False)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [["cv", "d.csv", "--out", "o", "--jobs", "0"], ["tune", "d.csv", "--out", "o", "--trials", "-3"],
                                  ["tune", "d.csv", "--out", "o", "--jobs", "-1"]])
def test_cv_and_tune_reject_counts_that_mean_nothing(args):
    r = cli(*args, check=False)
    assert r.returncode == 2 and "must be a whole number above 0" in r.stderr and "Traceback" not in r.stderr


def test_predict_scores_a_clip_the_same_alone_and_in_a_batch(tiny_run):
    run, root = tiny_run
    files = sorted(root.rglob("*.wav"))[:6]
    alone = json.loads(cli("predict", run, files[0], "--json", "--top-k", 2).stdout)[0]
    batch = json.loads(cli("predict", run, *files, "--json", "--top-k", 2).stdout)
    assert batch[0]["path"] == str(files[0])
    for a, b in zip(alone["top"], batch[0]["top"]):
        assert a["label"] == b["label"] and abs(a["probability"] - b["probability"]) < 1e-5
    text = cli("predict", run, files[0]).stdout
    assert alone["label"] in text


def test_predict_does_not_import_the_training_stack(tiny_run):
    run, root = tiny_run
    f = next(root.rglob("*.wav"))
    code = ("import sys; from specrnn.cli import main; rc = main(['predict', sys.argv[1], sys.argv[2]]); "
            "bad = [m for m in ('lightning', 'pytorch_lightning', 'sklearn', 'matplotlib') if m in sys.modules]; "
            "print('IMPORTED', bad); sys.exit(rc or bool(bad))")
    r = subprocess.run([sys.executable, "-c", code, str(run), str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_python_api_mirrors_the_cli(tiny_run):
    import specrnn

    run, root = tiny_run
    preds = specrnn.load(run).predict(sorted(root.rglob("*.wav"))[:3])
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-5 for p in preds)
    assert specrnn.evaluate(run)["n"] == json.loads((run / "metrics.json").read_text())["test"]["n"]


def _bad_folder(tmp_path):
    root = tmp_path / "data"
    for label, f in (("a", 300), ("b", 3000)):
        for i in range(12):
            write(root / label / f"{i}.wav", tone(f + 10 * i, 0.3, seed=i))
    (root / "a" / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    write(root / "b" / "quiet.wav", np.zeros(8000, dtype=np.float32))
    return root


def test_bad_files_stop_training_before_it_starts(tmp_path):
    root = _bad_folder(tmp_path)
    r = cli("train", root, "--out", tmp_path / "run", *TINY, check=False)
    assert r.returncode == 2
    assert "broken.wav" in r.stderr and "quiet.wav" in r.stderr and "silence" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "model.pt").exists()
    # the advice in the message works as given: the same --out, now skipping the bad files
    cli("train", root, "--out", tmp_path / "run", *TINY, "--max-epochs", 1, "--on-error", "skip")
    r = cli("train", root, "--out", tmp_path / "run", *TINY, check=False)  # but a trained run is never overwritten
    assert r.returncode == 2 and "already holds a trained run" in r.stderr


def test_on_error_skip_trains_and_lists_the_bad_files(tmp_path):
    root = _bad_folder(tmp_path)
    cli("train", root, "--out", tmp_path / "run", "--on-error", "skip", "--max-epochs", 1, *TINY)
    with open(tmp_path / "run" / "bad_files.csv") as f:
        bad = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(f)}
    assert set(bad) == {"broken.wav", "quiet.wav"}
    assert (tmp_path / "run" / "model.pt").is_file()


def test_unseen_label_in_evaluation_is_named(tiny_run, tmp_path):
    run, root = tiny_run
    write(tmp_path / "d" / "whistle" / "w.wav", tone(1000))
    write(tmp_path / "d" / "low" / "l.wav", tone(300))
    r = cli("evaluate", run, tmp_path / "d", check=False)
    assert r.returncode == 2 and "'whistle'" in r.stderr and "Traceback" not in r.stderr


def test_predict_notes_a_file_longer_than_the_model_reads(tiny_run, tmp_path):
    run, root = tiny_run
    short = next(root.rglob("*.wav"))
    long = tmp_path / "long.wav"
    write(long, np.tile(tone(300, 1.0, seed=1), 31))  # 31 s; features.max_seconds keeps the first 30
    r = cli("predict", run, short, long)
    assert f"{long} is 31.0 s long; the model read its first 30 s" in r.stderr and str(short) not in r.stderr, r.stderr


def test_predict_reports_a_bad_file_and_still_scores_the_rest(tiny_run, tmp_path):
    run, root = tiny_run
    good = next(root.rglob("*.wav"))
    r = cli("predict", run, good, tmp_path / "missing.wav", check=False)
    assert r.returncode == 1 and "missing.wav: file not found" in r.stderr and str(good) in r.stdout


def test_user_errors_have_no_traceback(tmp_path):
    for args in (["train", tmp_path / "nowhere"], ["evaluate", tmp_path], ["predict", tmp_path, "x.wav"],
                 ["train", "--set", "model.cell=transformer", "--out", tmp_path / "r"], ["train", "--set", "bogus.key=1"],
                 ["train", "--set", "train.max_epochs=0"], ["train", "--set", "model.dropout=1.5"],
                 ["models", "show", "nosuch"]):
        r = cli(*args, check=False)
        assert r.returncode == 2 and r.stderr.startswith("specrnn: error:") and "Traceback" not in r.stderr, (args, r.stderr)


def test_fsdd_manifest_train_evaluate(fsdd, tmp_path):
    """Real recordings: the FSDD manifest command, then a short training on a subset of the standard split."""
    full = tmp_path / "fsdd.csv"
    r = cli("manifest", fsdd, "--pattern", "{label}_{speaker}_{take}.wav", "--split-rule", "take<5=test", "--out", full)
    assert "3000 files" in r.stdout and "'test': 300" in r.stdout
    with open(full) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["path"] = str((full.parent / row["path"]).resolve())
    subset = [r for r in rows if int(r["take"]) < 2 or 5 <= int(r["take"]) < 15]
    sub = tmp_path / "subset.csv"
    with open(sub, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(subset)
    cli("train", sub, "--out", tmp_path / "run", "--max-epochs", 8, "--set", "model.hidden=48", "--set", "model.layers=1")
    m = json.loads(cli("evaluate", tmp_path / "run", sub, "--json").stdout)
    assert m["n"] == 120 and m["seen_in_training"] == {}  # the test rows: never trained or validated on
    r = cli("evaluate", tmp_path / "run", sub, "--split", "train")
    assert "warning: of these 600 clips, this run had 540 in its train split and 60 in its val split" in r.stderr, r.stderr
    assert m["accuracy"] > 0.5, m["accuracy"]  # chance is 0.1; a broken pipeline (labels, padding) stays near it


@pytest.mark.parametrize("setting, message", [
    ("model.dropout=nan", "'model.dropout' must be a finite number"),
    ("train.lr=inf", "'train.lr' must be a finite number"),
    ("model.frontend.channels=[8, -1]", "'model.frontend.channels' must hold whole numbers >= 1"),
    ("model.frontend.time_strides=[0, 1]", "'model.frontend.time_strides' must hold whole numbers >= 1"),
    ("augment.noise_snr_db=[a, b]", "'augment.noise_snr_db' expects a list of float"),
    ("augment.noise_snr_db=[.nan, 10]", "'augment.noise_snr_db' must hold finite numbers"),
    ("augment.noise_snr_db=[-1000, 1000]", r"-50 <= low <= high <= 100"),
    ("model.frontend.channels=[4, x]", "'model.frontend.channels' expects a list of int"),
])
def test_config_values_that_mean_nothing_are_refused(setting, message):
    from specrnn.config import load_config
    from specrnn.errors import SpecrnnError

    with pytest.raises(SpecrnnError, match=message):
        load_config("crnn", [setting])


def test_out_never_deletes_a_folder_specrnn_did_not_make(tiny_run, tmp_path):
    run, root = tiny_run
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "important.txt").write_text("keep")
    for extra in ([], ["--overwrite"]):
        r = cli("train", root, "--out", precious, "--max-epochs", 1, *TINY, *extra, check=False)
        assert r.returncode == 2 and "is not a specrnn run folder" in r.stderr, r.stderr
    assert (precious / "important.txt").read_text() == "keep"
    (tmp_path / "afile").write_text("x")
    r = cli("train", root, "--out", tmp_path / "afile", check=False)
    assert r.returncode == 2 and "a file is there" in r.stderr and "Traceback" not in r.stderr


def test_resume_refuses_what_it_would_silently_ignore(tiny_run):
    run, root = tiny_run
    for extra in ([root], ["--max-epochs", "9"], ["--config", "gru"], ["--set", "train.lr=0.1"]):
        r = cli("train", "--resume", "--out", run, *extra, check=False)
        assert r.returncode == 2 and "--resume continues a run with the data and config it started with" in r.stderr


def test_review_findings_on_predict_evaluate_and_pipes(tiny_run, tmp_path):
    import specrnn

    run, root = tiny_run
    wav = next(root.rglob("*.wav"))
    assert "on its train split" in cli("evaluate", run, "--split", "train").stdout  # not "its test split"
    r = cli("predict", wav, wav, check=False)  # an audio file where the run folder goes
    assert r.returncode == 2 and "not a model file (not a PyTorch file" in r.stderr
    preds = specrnn.load(run).predict(str(wav))  # one path as a string: one prediction, not one per character
    assert len(preds) == 1 and preds[0].error is None
    folder = json.loads(cli("predict", run, root, "--json").stdout)  # a folder: every audio file below it
    assert [p["path"] for p in folder] == [str(f) for f in sorted(root.rglob("*.wav"))]
    (tmp_path / "empty").mkdir()
    r = cli("predict", run, tmp_path / "empty", check=False)
    assert r.returncode == 2 and "no audio files in this folder" in r.stderr
    r = cli("predict", run, wav, "--chunk-ms", 50, check=False)
    assert r.returncode == 2 and "--chunk-ms sets the chunk of --stream" in r.stderr
    r = cli("predict", run, wav, "--stream", "--chunk-ms", 0.01, check=False)
    assert r.returncode == 2 and "shorter than one feature frame (10 ms)" in r.stderr
    r = subprocess.run(f"{sys.executable} -m specrnn models config search_space | head -1", shell=True, capture_output=True,
                       text=True)
    assert r.stdout.strip() and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr
