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


def test_cv_report(tone_folder, tmp_path):
    specrnn.cv(tone_folder, tmp_path / "cv", overrides=TINY, folds=2, jobs=1, log=lambda *a: None)
    text = specrnn.report(tmp_path / "cv").read_text()
    assert "Mean accuracy" in text and text.count("<tr><td>") >= 2


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    import pytest

    from specrnn.errors import SpecrnnError

    with pytest.raises(SpecrnnError, match="neither"):
        specrnn.report(tmp_path)
