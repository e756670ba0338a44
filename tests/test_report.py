"""specrnn report: a self-contained HTML page for a run and for a CV folder."""
import re

import specrnn

TINY = ["model.hidden=12", "model.layers=1", "train.max_epochs=3", "train.batch_size=16"]


def test_run_report_is_self_contained(tone_folder, tmp_path):
    specrnn.train(tone_folder, out=tmp_path / "run", overrides=TINY + ["model.pooling=attention"], log=lambda *a: None)
    out = specrnn.report(tmp_path / "run")
    text = out.read_text()
    for section in ("Metrics", "Learning curves", "Confusion matrix", "Per class", "Most confident mistakes", "Config"):
        assert f"<h2>{section}" in text
    assert len(re.findall(r"data:image/png;base64,", text)) >= 2 and "src=\"http" not in text
    assert "mistakes" in text and ("No mistakes" in text or "most confident" in text)
    split = (tmp_path / "run" / "split.csv").read_text().splitlines()[1:]
    n = {s: sum(row.endswith("," + s) for row in split) for s in ("train", "val", "test")}
    assert f"Data: <code>{tone_folder}</code>" in text and f"clips: train {n['train']}, val {n['val']}, test {n['test']}" in text
    assert text.count("<img alt=") == text.count("<img ")  # every image says what it shows
    if "most confident" in text:  # mistakes are named with their class folder, not the bare file name
        assert re.search(r"<b>(low|high)/[^<]+\.wav</b>", text)


def test_cv_report(tone_folder, tmp_path):
    import json

    import numpy as np

    s = specrnn.cv(tone_folder, tmp_path / "cv", overrides=TINY, folds=2, seeds=[3, 5], jobs=1, log=lambda *a: None)
    text = specrnn.report(tmp_path / "cv").read_text()
    assert "Mean accuracy" in text and text.count("<tr><td>") >= 2
    # the seeds are named, their ensemble shown, the pooled matrix explained, and a per-class table given
    assert "seed 3, seed 5 (%)" in text and "seeds together" in text and f"{100 * s['ensemble_accuracy_mean']:.2f}%" in text
    assert "counted once per seed (2 times)" in text and "each run sets its own seed (3, 5)" in text
    per_class = text[text.index("<h2>Per class"):text.index("<h2>Config")]
    cm = np.asarray(json.loads((tmp_path / "cv" / "cv.json").read_text())["pooled_confusion_matrix"])
    assert cm.sum() == 2 * sum(f["n"] for f in s["folds"])
    for c, row in zip(s["classes"], cm):  # support in clips, recall from the pooled matrix
        assert f"<td>{c}</td>" in per_class and f"<td>{row.sum() // 2}</td></tr>" in per_class
    recall = cm[0, 0] / cm[0].sum()
    assert f"{100 * recall:.2f}%" in per_class


def test_a_report_of_a_run_without_test_split_says_its_figures_are_validation(tmp_path):
    import csv

    import numpy as np

    from .conftest import low_high_clip

    rng = np.random.default_rng(0)
    rows = [["path", "label", "split"]]
    rows += [[f"{i}.wav", low_high_clip(tmp_path / f"{i}.wav", i, rng), "val" if i % 4 == 0 else "train"] for i in range(32)]
    with open(tmp_path / "m.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    specrnn.train(tmp_path / "m.csv", out=tmp_path / "run", overrides=TINY, log=lambda *a: None)
    text = specrnn.report(tmp_path / "run").read_text()
    assert "This run has no test split" in text and "the test split was used only" not in text


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    import pytest

    from specrnn.errors import SpecrnnError

    with pytest.raises(SpecrnnError, match="neither"):
        specrnn.report(tmp_path)
    (tmp_path / "fold-1").mkdir()
    with pytest.raises(SpecrnnError, match="this cross-validation has not finished"):
        specrnn.report(tmp_path)
    with pytest.raises(SpecrnnError, match="needs a .html or .htm name"):
        specrnn.report(tmp_path, tmp_path / "report.md")
