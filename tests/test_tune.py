"""specrnn tune: validation-only objective (test rows are never read), best.yaml usable by train, and a study
killed mid-way resumes from its SQLite storage."""
import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from .conftest import low_high_clip

SPACE = """
model.cell: {choices: [lstm, gru]}
model.hidden: {choices: [8, 16]}
train.lr: {float: [0.002, 0.01], log: true}
augment.strength: {float: [0.0, 1.0]}
"""
BASE = ["model.layers=1", "train.max_epochs=2", "train.batch_size=16", "model.bidirectional=false"]


@pytest.fixture
def study_data(tmp_path):
    rng = np.random.default_rng(0)
    rows = [["path", "label", "split"]]
    for i in range(40):
        label = low_high_clip(tmp_path / f"{i}.wav", i, rng, seconds=0.3)
        rows.append([f"{i}.wav", label, "train"])
    for i in range(6):  # test rows point at garbage: reading them would stop the study with a bad-file error
        (tmp_path / f"test{i}.wav").write_bytes(b"not audio at all")
        rows.append([f"test{i}.wav", ("low", "high")[i % 2], "test"])
    with open(tmp_path / "m.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    (tmp_path / "space.yaml").write_text(SPACE)
    return tmp_path


def _args(d, trials):
    args = ["tune", d / "m.csv", "--out", d / "study", "--trials", trials, "--space", d / "space.yaml", "--jobs", 1]
    for s in BASE:
        args += ["--set", s]
    return [str(a) for a in args]


def test_tune_uses_validation_only_and_writes_a_usable_best_config(study_data):
    import specrnn
    from specrnn.config import load_config

    r = specrnn.tune(study_data / "m.csv", study_data / "study", trials=4, space=str(study_data / "space.yaml"), overrides=BASE,
                     jobs=2, log=lambda *a: None)  # two processes on one SQLite study
    assert 4 <= r["n_complete"] + r["n_pruned"] <= 5  # a trial already running when the 4th ends may finish too
    assert (study_data / "study" / "worker-1.log").is_file()
    cfg = load_config(study_data / "study" / "best.yaml")
    assert cfg.model.hidden in (8, 16) and cfg.model.layers == 1
    rows = list(csv.DictReader(open(study_data / "study" / "trials.csv")))
    assert len(rows) == r["n_complete"] + r["n_pruned"] and (study_data / "study" / "optimization_history.png").is_file()
    for trial_dir in (study_data / "study" / "trials").iterdir():
        splits = {r["split"] for r in csv.DictReader(open(trial_dir / "split.csv"))}
        assert splits == {"train", "val"}


def test_killed_study_resumes(study_data):
    import optuna

    from .test_cli import cli

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # ask for far more trials than can finish before the deadline, so the study is still running when it is killed
    log = open(study_data / "tune.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "specrnn", *_args(study_data, 10_000)], env=env,
                         stdout=log, stderr=subprocess.STDOUT)
    db = f"sqlite:///{study_data / 'study' / 'study.db'}"
    deadline = time.time() + 300
    finished, last_error = 0, None
    while time.time() < deadline and p.poll() is None:
        time.sleep(1)
        try:
            study = optuna.load_study(study_name="specrnn", storage=db)
            finished = len([t for t in study.trials if t.state.is_finished()])
        except Exception as e:  # the study may not exist yet, or the database is briefly locked
            last_error = e
            continue
        if finished >= 1:
            break
    running = p.poll() is None
    if not running or finished < 1:
        p.kill()
        p.wait()
        log.close()
        tail = (study_data / "tune.log").read_text()[-3000:]
        pytest.fail(f"tune {'exited with ' + str(p.returncode) if not running else 'still running'}, "
                    f"{finished} finished trial(s) seen, last polling error: {last_error!r}\n--- tune output ---\n{tail}")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    log.close()
    killed = optuna.load_study(study_name="specrnn", storage=db).trials
    before = {t.number: t.value for t in killed if t.state.is_finished()}
    sampled = [t.params for t in killed]
    target = len(before) + 2  # the rerun finishes the study at two more trials than the kill left
    r = cli(*_args(study_data, target))
    assert "resuming study" in r.stdout
    study = optuna.load_study(study_name="specrnn", storage=db)
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) >= target
    assert all(study.trials[n].value == v for n, v in before.items())  # finished trials were kept, not redone
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    # the interrupted trial is re-run with its own parameters; every other new trial samples a new point (a
    # sampler reseeded as at the start would replay the first trials' parameters)
    rerun = [t for t in study.trials[len(killed):] if t.params not in sampled]
    assert len(rerun) >= len(study.trials) - len(killed) - 1 >= 1


@pytest.mark.parametrize("text, message", [
    ("model.hidden: {int: [16, 8]}", "low 16 is above high 8"),
    ("model.hidden: [8, 16", "not valid YAML"),
    ("model.cel: {choices: [lstm]}", "unknown config key 'model.cel'"),
    ("model.cell: {choices: [lstm, rnn]}", "'model.cell' must be one of"),
    ("train.lr: {float: [0, 0.1], log: true}", "a log range needs low > 0"),
    ("model.dropout: {float: [0.1, 2.0]}", "'model.dropout' must be"),
])
def test_a_bad_search_space_is_refused_before_any_work(tmp_path, text, message):
    import specrnn
    from specrnn.errors import SpecrnnError

    (tmp_path / "space.yaml").write_text(text + "\n")
    with pytest.raises(SpecrnnError, match=message.replace("(", r"\(")):
        specrnn.tune(tmp_path / "no-data.csv", tmp_path / "study", space=str(tmp_path / "space.yaml"))
    assert not (tmp_path / "study" / "study.db").exists()


@pytest.mark.parametrize("storage", ["notaurl", "sqlite:///{tmp}/no/such/dir/x.db"])
def test_a_bad_storage_url_is_one_clear_error(tmp_path, storage):
    import specrnn
    from specrnn.errors import SpecrnnError

    with pytest.raises(SpecrnnError, match="--storage .*: cannot open an Optuna study there"):
        specrnn.tune(tmp_path / "no-data.csv", tmp_path / "study", storage=storage.format(tmp=tmp_path))
