"""`specrnn train --seeds`: one run per seed on one split, the best-validated one kept in the run folder (chosen on
validation only), resumable after a SIGKILL to the same result."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from specrnn.experiments.seeds import selection_key

from .test_bad_inputs import TINY, main_cli, run_cli
from .test_robustness import data, killed_at  # noqa: F401  (data: the module's tone folder fixture)

ARGS = ["--max-epochs", 3, *TINY, "--set", "augment.gain_db=3"]


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def seeded(data, tmp_path_factory) -> Path:  # noqa: F811
    run = tmp_path_factory.mktemp("seeds") / "run"
    r = run_cli("train", data, "--out", run, "--seeds", "0,1,2", *ARGS)
    assert r.returncode == 0, r.stdout + r.stderr
    nexts = [line for line in r.stdout.splitlines() if line.startswith("next: ")]
    assert nexts == [f"next: specrnn evaluate {run}   |   specrnn predict {run} FILE.wav"]  # OUT, not a seed's folder
    return run


def test_the_best_validated_seed_is_kept_and_the_folder_is_a_run(seeded, capsys):
    m = metrics(seeded)
    runs = {s: metrics(seeded / "seeds" / f"seed-{s}") for s in (0, 1, 2)}
    chosen = m["seeds"]["chosen"]
    assert chosen == min(runs, key=lambda s: selection_key(runs[s]))
    assert [r["chosen"] for r in m["seeds"]["runs"]] == [s == chosen for s in (0, 1, 2)]
    assert m["seeds"]["by"] == "validation accuracy"
    # one split for every seed; the seeds differ in their weights
    splits = {(seeded / "seeds" / f"seed-{s}" / "split.csv").read_text() for s in (0, 1, 2)}
    assert len(splits) == 1 and (seeded / "split.csv").read_text() in splits
    models = {(seeded / "seeds" / f"seed-{s}" / "model.pt").read_bytes() for s in (0, 1, 2)}
    assert len(models) == 3 and (seeded / "model.pt").read_bytes() == (seeded / "seeds" / f"seed-{chosen}" / "model.pt").read_bytes()
    # the run folder works as any other: evaluate gives the chosen seed's test figures, predict runs
    rc, out, _ = main_cli(capsys, "evaluate", seeded, "--json")
    assert rc == 0 and json.loads(out)["accuracy"] == runs[chosen]["test"]["accuracy"]
    wav = next((Path(json.loads((seeded / "run.json").read_text())["data"])).rglob("*.wav"))
    rc, out, _ = main_cli(capsys, "predict", seeded, wav)
    assert rc == 0 and str(wav) in out
    assert main_cli(capsys, "report", seeded)[0] == 0
    html = (seeded / "report.html").read_text()
    assert "<h2>Seeds</h2>" in html and f"<td>{chosen} (kept)</td>" in html


def test_selection_reads_validation_and_never_test():
    a = {"val": {"accuracy": 0.9}, "test": {"accuracy": 1.0}, "best_val_loss": 0.3}
    b = {"val": {"accuracy": 0.95}, "test": {"accuracy": 0.5}, "best_val_loss": 0.4}
    tie = {"val": {"accuracy": 0.95}, "test": {"accuracy": 0.1}, "best_val_loss": 0.2}
    assert sorted([a, b, tie], key=selection_key) == [tie, b, a]
    ctc = [{"val": {"token_error_rate": e, "accuracy": 0.0}, "test": {"token_error_rate": 0.0}, "best_val_loss": 1.0} for e in (0.4, 0.1)]
    assert min(ctc, key=selection_key) is ctc[1]


def test_killed_during_a_seed_then_resumed_ends_as_an_uninterrupted_run(data, seeded, tmp_path):  # noqa: F811
    run = tmp_path / "killed"
    r = killed_at("val:1", "train", data, "--out", run, "--seeds", "0,1,2", *ARGS)  # in seed 0's second epoch
    assert r.returncode != 0 and not (run / "metrics.json").exists()
    r = run_cli("train", "--resume", "--out", run)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming" in r.stdout and metrics(run)["seeds"]["chosen"] == metrics(seeded)["seeds"]["chosen"]
    for s in (0, 1, 2):
        assert (run / "seeds" / f"seed-{s}" / "model.pt").read_bytes() == (seeded / "seeds" / f"seed-{s}" / "model.pt").read_bytes()
    assert (run / "model.pt").read_bytes() == (seeded / "model.pt").read_bytes()


def test_seeds_refusals(data, seeded, capsys):  # noqa: F811
    rc, _, err = main_cli(capsys, "train", "--resume", "--out", seeded, "--seeds", "0,1")
    assert rc == 2 and "--seeds" in err
    rc, _, err = main_cli(capsys, "train", data, "--out", seeded, "--seeds", "0,1")
    assert rc == 2 and "already holds a trained run" in err
    # a seeds run that stopped before any training (bad data) is started again without --overwrite
    bad = seeded.parent / "bad.csv"
    bad.write_text("path,label\nmissing_1.wav,a\nmissing_2.wav,b\n")
    for _ in range(2):
        rc, _, err = main_cli(capsys, "train", bad, "--out", seeded.parent / "stopped", "--seeds", "0,1")
        assert rc != 0 and "missing_1.wav" in err and "already holds" not in err
    with pytest.raises(SystemExit):
        main_cli(capsys, "train", data, "--out", seeded, "--seeds", "0,0")
    import specrnn
    from specrnn.errors import SpecrnnError

    for seeds in ([1, 1], "0,0", [2, -1], 2**32):
        with pytest.raises(SpecrnnError, match="distinct whole numbers from 0"):
            specrnn.train(data, out=seeded.parent / "x", seeds=seeds)
    with pytest.raises(SystemExit):
        main_cli(capsys, "train", data, "--out", seeded.parent / "y", "--seeds", "1,-1")
    assert "from 0 to 2^32 - 1" in capsys.readouterr().err
    rc, _, err = main_cli(capsys, "train", data, "--out", seeded.parent / "z", "--set", "seed=-1")
    assert rc == 2 and "config 'seed' must be >= 0" in err and not (seeded.parent / "z").exists()
