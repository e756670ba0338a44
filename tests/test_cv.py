"""Cross-validation: folds respect groups and fold ids, test rows never reach training or early stopping,
and an interrupted CV resumes at the first unfinished run."""
import csv
import json

import numpy as np
import pytest

import specrnn
from specrnn.devices import auto_jobs as _auto_jobs
from specrnn.experiments.cv import fold_ids, fold_manifest
from specrnn.data.manifest import Manifest
from specrnn.errors import SpecrnnError

from .conftest import low_high_clip

TINY = ["model.hidden=12", "model.layers=1", "train.batch_size=16", "train.max_epochs=2"]


def _table(n=60, groups=6):
    labels = [("a", "b", "c")[i % 3] for i in range(n)]
    return Manifest([f"/x/{i}.wav" for i in range(n)], labels, groups=[f"g{i % groups}" for i in range(n)])


def test_k_fold_is_group_aware_and_covers_every_row_once():
    man = _table()
    ids = fold_ids(man, folds=3)
    assert sorted(set(ids)) == ["1", "2", "3"] and "" not in ids
    for f in set(ids):
        fm = fold_manifest(man, ids, f)
        test_groups = {g for g, s in zip(fm.groups, fm.splits) if s == "test"}
        train_groups = {g for g, s in zip(fm.groups, fm.splits) if s == "train"}
        assert test_groups and not (test_groups & train_groups)


def test_leave_one_group_out_and_fold_column():
    man = _table()
    assert sorted(set(fold_ids(man, leave_one_group_out=True))) == [f"g{i}" for i in range(6)]
    man.folds = [str(i % 5 + 1) for i in range(60)]
    assert fold_ids(man) == man.folds
    with pytest.raises(SpecrnnError, match="needs a 'group'"):
        fold_ids(Manifest(["/a.wav"], ["x"]), leave_one_group_out=True)


@pytest.fixture
def grouped_csv(tmp_path):
    rng = np.random.default_rng(0)
    rows = [["path", "label", "group"]]
    for i in range(36):
        label = low_high_clip(tmp_path / f"{i}.wav", i, rng)
        rows.append([f"{i}.wav", label, f"spk{i % 6}"])
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return tmp_path / "m.csv"


def test_cv_runs_folds_keeps_test_out_of_validation_and_resumes(grouped_csv, tmp_path):
    out = tmp_path / "cv"
    s = specrnn.cv(grouped_csv, out, overrides=TINY, folds=3, jobs=1, log=lambda *a: None)
    assert len(s["folds"]) == 3 and sum(f["n"] for f in s["folds"]) == 36
    assert np.asarray(s["pooled_confusion_matrix"]).sum() == 36
    assert json.loads((out / "cv.json").read_text())["accuracy_mean"] == pytest.approx(s["accuracy_mean"])
    assert "test accuracy" in (out / "fold-1" / "seed-0.log").read_text()  # in-process runs keep their log too
    for fold in ("1", "2", "3"):
        rows = list(csv.DictReader(open(out / f"fold-{fold}" / "seed-0" / "split.csv")))
        test = {r["group"] for r in rows if r["split"] == "test"}
        others = {r["group"] for r in rows if r["split"] != "test"}
        assert test and not (test & others)  # test speakers never in train or val (early stopping)
    # interrupt: one run unfinished; the others must not be retrained
    kept = {f: (out / f"fold-{f}" / "seed-0" / "model.pt").stat().st_mtime_ns for f in ("1", "3")}
    (out / "fold-2" / "seed-0" / "metrics.json").unlink()
    assert (out / "protocol.txt").read_text() == "stratified group-aware 3-fold\n"
    (out / "protocol.txt").write_text("stratified 3-fold\n")  # folders from before the label said group-aware resume
    logs = []
    s2 = specrnn.cv(grouped_csv, out, overrides=TINY, folds=3, jobs=1, log=logs.append)
    assert any("1 run(s) already finished" in x or "2 run(s) already finished" in x for x in logs)
    assert {f: (out / f"fold-{f}" / "seed-0" / "model.pt").stat().st_mtime_ns for f in ("1", "3")} == kept
    assert (out / "fold-2" / "seed-0" / "metrics.json").is_file() and len(s2["folds"]) == 3
    # another config or other data in the same folder is refused, not mixed into the finished runs
    with pytest.raises(SpecrnnError, match="another config"):
        specrnn.cv(grouped_csv, out, overrides=[*TINY, "model.hidden=13"], folds=3, jobs=1, log=lambda *a: None)
    fewer = tmp_path / "fewer.csv"
    fewer.write_text("".join(grouped_csv.read_text().splitlines(keepends=True)[:-3]))
    with pytest.raises(SpecrnnError, match="other rows"):
        specrnn.cv(fewer, out, overrides=TINY, folds=3, jobs=1, log=lambda *a: None)
    # so is another protocol: its folds would sit beside these and cv.json would describe only one of them
    for other in ({"leave_one_group_out": True}, {"folds": 2}):
        with pytest.raises(SpecrnnError, match="holds a stratified group-aware 3-fold cross-validation; this command asks for"):
            specrnn.cv(grouped_csv, out, overrides=TINY, jobs=1, log=lambda *a: None, **other)
    assert sorted(p.name for p in out.glob("fold-*")) == ["fold-1", "fold-2", "fold-3"]


def test_unusable_files_stop_the_cv_or_are_left_out_before_folds_are_made(grouped_csv, tmp_path, capsys):
    from specrnn.errors import BadFilesError

    from .test_bad_inputs import main_cli

    bad = tmp_path / "bad.csv"
    lines = grouped_csv.read_text().splitlines(keepends=True)
    for i, label in enumerate(("low", "high", "high")):
        (grouped_csv.parent / f"broken{i}.wav").write_bytes(b"RIFF....WAVEfmt not really")
        lines.append(f"broken{i}.wav,{label},spk{i}\n")
    bad.write_text("".join(lines))
    with pytest.raises(BadFilesError, match="3 unusable audio file"):
        specrnn.cv(bad, tmp_path / "stop", overrides=TINY, folds=3, jobs=1, log=lambda *a: None)
    assert not list((tmp_path / "stop").glob("fold-*")) and (tmp_path / "stop" / "bad_files.csv").is_file()
    args = sum((["--set", t] for t in TINY), [])  # --on-error as for train (the same as --set data.on_error=skip)
    assert main_cli(capsys, "cv", bad, "--out", tmp_path / "skip", "--folds", 3, "--jobs", 1, "--on-error", "skip", *args)[0] == 0
    s = json.loads((tmp_path / "skip" / "cv.json").read_text())
    assert sum(f["n"] for f in s["folds"]) == 36  # every usable row tested once, none of the broken ones
    for fold in ("1", "2", "3"):
        assert "broken" not in (tmp_path / "skip" / f"fold-{fold}" / "data.csv").read_text()
    assert (tmp_path / "skip" / "bad_files.csv").read_text().count("broken") == 3


def test_cv_cli_parallel_jobs(grouped_csv, tmp_path):
    from .test_cli import cli

    args = sum((["--set", t] for t in TINY), [])
    r = cli("cv", grouped_csv, "--out", tmp_path / "cv", "--leave-one-group-out", "--jobs", "2", *args)
    assert "mean accuracy" in r.stdout
    s = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert [f["fold"] for f in s["folds"]] == [f"spk{i}" for i in range(6)]


def test_default_parallel_runs_fit_the_cores_and_share_a_gpu():
    assert _auto_jobs(6, cuda=False, cores=2) == 2  # one thread each (pipeline._set_threads)
    assert _auto_jobs(6, cuda=False, cores=16) == 4  # four threads each
    assert _auto_jobs(1, cuda=False, cores=16) == 1
    gib = 1 << 30
    assert _auto_jobs(30, cuda=True, cores=16, gpu_memory=140 * gib) == 6  # measured: 2.7x the wall time of one at once
    assert _auto_jobs(30, cuda=True, cores=4, gpu_memory=140 * gib) == 2  # two cores a run
    assert _auto_jobs(30, cuda=True, cores=16, gpu_memory=6 * gib) == 3  # 2 GiB of GPU memory a run
    assert _auto_jobs(30, cuda=True, cores=2, gpu_memory=140 * gib) == 1


def test_several_seeds_are_also_scored_together(grouped_csv, tmp_path):
    from specrnn.experiments.cv import seed_ensemble

    out = tmp_path / "cv"
    s = specrnn.cv(grouped_csv, out, overrides=TINY, folds=3, seeds=[0, 1], jobs=1, log=lambda *a: None)
    assert s["n_runs"] == 6 and 0 <= s["ensemble_accuracy_mean"] <= 1
    for f in s["folds"]:
        assert len(f["accuracy_per_seed"]) == 2 and 0 <= f["ensemble_accuracy"] <= 1
    # averaging a run with itself changes nothing: the ensemble of one model twice scores exactly that model
    run = out / "fold-1" / "seed-0"
    same = seed_ensemble([run, run], out / "fold-1" / "data.csv")
    assert same["accuracy"] == json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    assert seed_ensemble([run], out / "fold-1" / "data.csv") is None


def test_runs_with_other_features_are_averaged_each_on_its_own_features(grouped_csv, tmp_path):
    from specrnn.experiments.cv import fold_test_probabilities
    from specrnn.data.dataset import build_feature_set
    from specrnn.data.manifest import load_manifest
    from specrnn.inference import Predictor

    runs = []
    for name, extra in (("a", []), ("b", ["features.n_mels=24", "features.kind=mfcc", "features.n_mfcc=10"])):
        specrnn.cv(grouped_csv, tmp_path / name, overrides=[*TINY, *extra], folds=3, jobs=1, log=lambda *a: None)
        runs.append(tmp_path / name / "fold-1" / "seed-0")
    fold_csv = tmp_path / "a" / "fold-1" / "data.csv"
    probs, targets = fold_test_probabilities(runs, fold_csv)
    alone = []
    for run in runs:
        p = Predictor.load(run, device="cpu")  # as fold_test_probabilities does: the same arithmetic on a GPU machine
        fs = build_feature_set(load_manifest(fold_csv).where_split("test"), p.cfg.features, p.classes)
        alone.append(p.probabilities(p.logits_from_features(fs.features)))
        assert (fs.targets == targets).all()
    assert alone[0].shape[1] != 0 and not np.allclose(alone[0], alone[1])
    np.testing.assert_allclose(probs, (alone[0] + alone[1]) / 2, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("group_val", [True, False])
def test_leave_one_group_out_fold_validation_by_group_or_by_row(grouped_csv, tmp_path, group_val):
    """data.group_val reaches the training pipeline: with true validation holds whole training speakers out; with
    false its rows come from every training speaker. Either way the held-out speaker is test and nothing else."""
    from specrnn.config import load_config
    from specrnn.data.manifest import load_manifest
    from specrnn.training.prepare import prepare_data

    man = load_manifest(grouped_csv)
    ids = fold_ids(man, leave_one_group_out=True)
    cfg = load_config(None, [f"data.group_val={str(group_val).lower()}", f"data.cache_dir={tmp_path / 'cache'}"])
    prep = prepare_data(fold_manifest(man, ids, "spk0"), cfg, log=lambda *a: None)
    by_split = {s: {g for g, t in zip(prep.manifest.groups, prep.manifest.splits) if t == s} for s in ("train", "val", "test")}
    assert by_split["test"] == {"spk0"} and not by_split["test"] & (by_split["train"] | by_split["val"])
    assert by_split["val"] and (by_split["val"] <= by_split["train"]) != group_val
    assert (by_split["train"] | by_split["val"]) == {f"spk{i}" for i in range(1, 6)}


def test_too_few_groups_for_group_validation_is_refused_before_anything_is_written(grouped_csv, tmp_path):
    """Leave-one-group-out over two speakers leaves one for training and validation: group-aware validation cannot
    work, and the error comes before the CV folder gets a config that a corrected rerun would clash with."""
    two = tmp_path / "two.csv"
    two.write_text(grouped_csv.read_text().replace("spk1", "spk0").replace("spk2", "spk0").replace("spk3", "spk1")
                   .replace("spk4", "spk1").replace("spk5", "spk1"))
    out = tmp_path / "cv"
    with pytest.raises(SpecrnnError, match="fold 'spk0' held out, 1 group left .*data.group_val=false"):
        specrnn.cv(two, out, overrides=TINY, leave_one_group_out=True, jobs=1, log=lambda *a: None)
    assert not (out / "config.yaml").exists()
    s = specrnn.cv(two, out, overrides=[*TINY, "data.group_val=false"], leave_one_group_out=True, jobs=1, log=lambda *a: None)
    assert [f["fold"] for f in s["folds"]] == ["spk0", "spk1"]


def test_a_cv_folder_where_nothing_trained_takes_new_settings(grouped_csv, tmp_path):
    """An earlier command that stopped before any fold trained (here: its run folders hold a config but no model
    or checkpoint) does not block a rerun with corrected settings; its stale run folders are not resumed."""
    import yaml

    from specrnn.config import load_config

    out = tmp_path / "cv"
    old = load_config(None, [*TINY, "model.hidden=20"]).to_dict()
    (out / "fold-1" / "seed-0").mkdir(parents=True)
    (out / "config.yaml").write_text(yaml.safe_dump(old))
    (out / "fold-1" / "seed-0" / "config.yaml").write_text(yaml.safe_dump(old))
    (out / "fold-1" / "seed-0" / "run.json").write_text("{}")
    (out / "protocol.txt").write_text("stratified 5-fold\n")
    lines = []
    specrnn.cv(grouped_csv, out, overrides=TINY, folds=3, jobs=1, log=lambda *a: lines.append(" ".join(map(str, a))))
    assert any("no fold had trained yet" in line for line in lines)
    assert load_config(str(out / "fold-1" / "seed-0" / "config.yaml")).model.hidden == 12  # trained anew, not resumed
    # once a fold has trained, another config is refused as before
    with pytest.raises(SpecrnnError, match="another config"):
        specrnn.cv(grouped_csv, out, overrides=[*TINY, "model.hidden=20"], folds=3, jobs=1, log=lambda *a: None)


@pytest.mark.parametrize("args, message", [
    (["--folds", "1"], "must be at least 2"),
    (["--seeds", "a,b"], "comma-separated whole numbers"),
    (["--seeds", "0,"], "comma-separated whole numbers"),
    (["--seeds", "0,0"], "listed twice"),
])
def test_cv_arguments_are_checked_before_anything_runs(capsys, tmp_path, args, message):
    from .test_bad_inputs import main_cli

    with pytest.raises(SystemExit) as e:
        main_cli(capsys, "cv", tmp_path / "m.csv", "--out", tmp_path / "out", *args)
    assert e.value.code == 2 and message in capsys.readouterr().err and not (tmp_path / "out").exists()


def _extra_csv(root, groups=("syn0", "syn1"), n=12, name="extra.csv"):
    """Clips of other (e.g. synthetic) speakers, for --train-extra."""
    rng = np.random.default_rng(1)
    rows = [["path", "label", "group"]]
    for i in range(n):
        rows.append([f"extra/{i}.wav", low_high_clip(root / "extra" / f"{i}.wav", i, rng), groups[i % len(groups)]])
    with open(root / name, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return root / name


@pytest.mark.parametrize("group_val", [True, False])
def test_train_extra_rows_train_every_fold_and_are_never_validated_or_tested(grouped_csv, tmp_path, group_val):
    from specrnn.data.manifest import load_manifest

    extra = _extra_csv(tmp_path)
    extra_paths = set(load_manifest(extra).paths)
    out = tmp_path / "cv"
    s = specrnn.cv(grouped_csv, out, overrides=TINY + [f"data.group_val={str(group_val).lower()}"],
                   leave_one_group_out=True, jobs=1, train_extra=extra, log=lambda *a: None)
    assert sum(f["n"] for f in s["folds"]) == 36 and s["train_extra"] == {"path": str(extra), "rows": 12}
    for fold in [f"spk{i}" for i in range(6)]:
        split = load_manifest(out / f"fold-{fold}" / "seed-0" / "split.csv")  # what the run trained on
        where = {p: sp for p, sp in zip(split.paths, split.splits)}
        assert {where[p] for p in extra_paths} == {"train"}  # every extra row, in training only
        by_split = {t: {g for g, sp in zip(split.groups, split.splits) if sp == t} for t in ("train", "val", "test")}
        assert by_split["test"] == {fold} and by_split["val"] and not by_split["val"] & {"syn0", "syn1"}
        assert not by_split["test"] & (by_split["train"] | by_split["val"])
        assert (by_split["val"] <= by_split["train"]) != group_val  # validation carved as train would carve it
    from specrnn.reporting import report

    assert "Every fold also trained on 12 rows of" in report(out).read_text()
    # resuming with other extra rows would mix two experiments in one folder
    other = _extra_csv(tmp_path, n=8, name="other.csv")
    with pytest.raises(SpecrnnError, match="training rows added from"):
        specrnn.cv(grouped_csv, out, overrides=TINY + [f"data.group_val={str(group_val).lower()}"],
                   leave_one_group_out=True, jobs=1, train_extra=other, log=lambda *a: None)


def test_train_extra_is_checked_against_the_data_before_anything_runs(grouped_csv, tmp_path, capsys):
    from .test_bad_inputs import main_cli

    def refused(extra, message):
        rc, _, err = main_cli(capsys, "cv", grouped_csv, "--out", tmp_path / "out", "--leave-one-group-out",
                              "--train-extra", extra)
        assert rc != 0 and message in err and "Traceback" not in err and not (tmp_path / "out").exists(), err

    refused(_extra_csv(tmp_path, groups=("spk1", "syn")), "group(s) spk1 are also in DATA")
    no_groups = tmp_path / "nogroups.csv"
    no_groups.write_text("path,label\n" + "".join(f"extra/{i}.wav,{'low' if i % 2 else 'high'}\n" for i in range(4)))
    refused(no_groups, "no 'group' column, but DATA has groups")
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("path,label,group\nextra/0.wav,middle,syn\n")
    refused(unknown, "'middle' are not among DATA's labels")
    same = tmp_path / "same.csv"
    same.write_text("path,label,group\n0.wav,low,syn\n")
    refused(same, "also in DATA")
    refused(tmp_path / "missing.csv", "missing.csv: no such file or folder")
