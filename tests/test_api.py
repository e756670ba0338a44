"""The Python API as a new user calls it: one item where a list is expected, generators, Manifest objects,
`log=None`, and refusals that say what to do instead of a TypeError."""
import csv

import pytest
import torch

import specrnn
from specrnn.errors import SpecrnnError

from .conftest import tone, write

TINY = ["model.hidden=16", "model.layers=1", "train.batch_size=16", "train.max_epochs=3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "tones"
    for label, freq in (("low", 300), ("high", 3000)):
        for i in range(16):
            write(root / label / f"{label}_{i}.wav", tone(freq * (1 + 0.01 * i), 0.3, seed=i))
    out = tmp_path_factory.mktemp("runs") / "tiny"
    specrnn.train(root, out=out, overrides=TINY, log=None)
    return out, root


def test_log_none_is_silent_and_overrides_take_one_string_or_a_dotted_dict(run, tmp_path, capsys):
    _, root = run
    m = specrnn.train(root, out=tmp_path / "a", overrides="train.max_epochs=1", log=None)
    assert m["epochs_run"] == 1
    m = specrnn.train(root, out=tmp_path / "b", overrides={"train.max_epochs": 2, "model": {"hidden": 8}}, log=None)
    assert m["epochs_run"] == 2 and "x8" in m["model"]
    assert capsys.readouterr().out == ""


def test_a_run_leaves_the_callers_torch_threads_as_they_were(run, tmp_path):
    _, root = run
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        specrnn.train(root, out=tmp_path / "t", overrides=["train.max_epochs=1", "train.threads=1"], log=None)
        assert torch.get_num_threads() == 2  # the run set one thread (train.threads=1) while it trained
    finally:
        torch.set_num_threads(before)


def test_results_are_typed_and_match_the_files_the_run_wrote(run, tmp_path):
    """train / evaluate return dataclasses whose attributes are the figures metrics.json holds."""
    import json

    _, root = run
    m = specrnn.train(root, out=tmp_path / "t", overrides="train.max_epochs=1", log=None)
    assert isinstance(m, specrnn.TrainResult) and m.run_dir == tmp_path / "t"
    saved = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert m.to_dict() == saved and m.epochs_run == 1 == saved["epochs_run"]
    assert m.test.accuracy == saved["test"]["accuracy"] and m.test.n == saved["test"]["n"] > 0
    assert m.val.macro_f1 == saved["val"]["macro_f1"] and m.test.token_error_rate is None
    assert m.classes == saved["classes"] == ["high", "low"] and m.test.confusion_matrix == saved["test"]["confusion_matrix"]
    e = specrnn.evaluate(tmp_path / "t")
    assert isinstance(e, specrnn.SplitMetrics) and e.accuracy == pytest.approx(m.test.accuracy) and e["n"] == m.test.n


def test_predict_reads_a_generator_once(run):
    out, root = run
    p = specrnn.load(out, device="cpu")
    files = sorted(root.glob("*/*_1*.wav"))
    assert len(files) > 2
    as_list = [x.label for x in p.predict(files)]
    assert [x.label for x in p.predict(f for f in files)] == as_list  # was [] (the generator was read twice)


def test_resume_refuses_new_data_or_settings(run):
    out, root = run
    with pytest.raises(SpecrnnError, match="--resume continues a run with the data and config it started with; DATA"):
        specrnn.train(root, out=out, resume=True, log=None)
    with pytest.raises(SpecrnnError, match="--set"):
        specrnn.train(out=out, overrides=["train.max_epochs=9"], resume=True, log=None)


def test_manifest_object_saves_its_rows_and_is_refused_as_data_with_advice(run, tmp_path):
    _, root = run
    m = specrnn.manifest(root, "{label}/{label}_{take}.wav", "take<4=test")  # one rule as a string
    assert len(m) == 32 and m.unmatched == [] and m.splits.count("test") == 8
    assert len(m.select([0, 1])) == 2  # selecting once failed on an internal column
    m.to_csv(tmp_path / "m.csv")
    assert len(list(csv.DictReader(open(tmp_path / "m.csv")))) == 32  # was written empty
    with pytest.raises(SpecrnnError, match="to_csv"):
        specrnn.train(m, out=tmp_path / "r", log=None)


@pytest.mark.parametrize("seeds, message", [("0,x", "integers like"), (1.5, "an int, a list of ints"),
                                            ([0, "1"], "an int, a list of ints")])
def test_cv_seeds_are_checked_before_any_work(run, tmp_path, seeds, message):
    _, root = run
    with pytest.raises(SpecrnnError, match=message):
        specrnn.cv(root, tmp_path / "cv", seeds=seeds, log=None)
    assert not (tmp_path / "cv").exists()


def test_seeds_as_an_int_or_a_string():
    from specrnn import _seeds

    assert _seeds(3) == [3] and _seeds("0,1,2") == [0, 1, 2] and _seeds((4, 5)) == [4, 5]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_a_cuda_device_without_cuda_is_one_clear_error(run):
    out, _ = run
    with pytest.raises(SpecrnnError, match="sees no CUDA GPU"):
        specrnn.load(out, device="cuda")


def test_models_show_counts_the_ctc_blank(capsys):
    from specrnn.cli import main

    assert main(["models", "show", "gru", "--set", "task.kind=ctc", "--set", "features.max_seconds=null", "--classes", "2"]) == 0
    head = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("head"))
    assert head.split(")")[0].endswith(", 3")  # the head scores 2 tokens and the blank: (1, T, 3)


def test_ctc_summary_warns_when_nothing_is_decoded(tmp_path):
    from specrnn.jobs import summary

    split = {"n": 10, "accuracy": 0.0, "token_error_rate": 1.0, "tokens": 40, "empty_decodings": 9}
    m = {"model": "gru + CTC", "parameters": 1, "classes": ["a", "b"], "best_epoch": 1, "epochs_run": 1,
         "val": split, "test": split, "train_seconds": 1.0, "total_seconds": 1.0}
    assert summary(tmp_path, m).count("decode to nothing") == 2
    assert "decode to nothing" not in summary(tmp_path, {**m, "val": {**split, "empty_decodings": 1}, "test": {**split, "empty_decodings": 0}})
