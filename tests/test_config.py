"""The config's task section: legacy keys, inference from labels."""
import pytest

from specrnn.config import load_config
from specrnn.errors import SpecrnnError


def test_the_task_section_reads_configs_written_before_it():
    """Run folders and configs from before `task` said model.head: ctc or model.multilabel: they load the same."""
    assert load_config({"model": {"head": "ctc"}, "features": {"max_seconds": None}}).task.kind == "ctc"
    assert load_config({"model": {"head": "ctc"}, "features": {"max_seconds": None}}).model.head == "frame"
    assert load_config(None, ["model.multilabel=true"]).task.kind == "multilabel"
    assert load_config({"model": {"head": "clip", "multilabel": False}}).task.kind == "classification"
    assert load_config(None).task.kind == "auto"  # resolved from the labels when a run starts
    with pytest.raises(SpecrnnError, match="task.kind"):
        load_config(None, ["task.kind=words"])


def test_an_auto_task_is_inferred_from_the_labels():
    from specrnn.tasks import infer_kind, with_task

    assert infer_kind(["yes no", "no no yes", "yes"]) == "ctc"
    assert infer_kind(["dog;rain", "dog", "rain"]) == "multilabel"
    assert infer_kind(["dog", "rain", "a cat"]) == "classification"  # one label with a space is a class name
    assert with_task(load_config(None), ["dog;rain", "dog"]).task.kind == "multilabel"
    assert with_task(load_config(None, ["task.kind=classification"]), ["dog;rain"]).task.kind == "classification"
