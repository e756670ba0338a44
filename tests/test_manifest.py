"""Manifests (folder, CSV, file-name pattern) and split rules: stratified, group-aware, no test leakage."""
import csv

import pytest

from specrnn.data.manifest import from_csv, from_folder, from_pattern, load_manifest
from specrnn.data.splits import assign_splits
from specrnn.errors import SpecrnnError

from .conftest import tone, write


def _csv(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_folder_per_class_any_depth(tmp_path):
    write(tmp_path / "dog" / "a.wav", tone())
    write(tmp_path / "dog" / "deep" / "er" / "b.flac", tone(), format="FLAC")
    write(tmp_path / "cat" / "c.wav", tone())
    (tmp_path / "cat" / "notes.txt").write_text("not audio")
    m = from_folder(tmp_path)
    assert sorted(m.labels) == ["cat", "dog", "dog"] and len(m) == 3


def test_empty_class_folder_is_an_error(tmp_path):
    write(tmp_path / "dog" / "a.wav", tone())
    (tmp_path / "cat").mkdir()
    with pytest.raises(SpecrnnError, match="cat"):
        from_folder(tmp_path)


def test_csv_relative_paths_resolve_under_the_csv_folder(tmp_path):
    write(tmp_path / "audio" / "x.wav", tone())
    sub = tmp_path / "meta"
    sub.mkdir()
    m = from_csv(_csv(sub / "m.csv", [["path", "label", "split", "group"], ["../audio/x.wav", "a, with comma", "TEST", "g1"]]))
    assert m.paths == [str((tmp_path / "audio" / "x.wav").resolve())]
    assert m.labels == ["a, with comma"] and m.splits == ["test"] and m.groups == ["g1"]


@pytest.mark.parametrize("rows,message", [
    ([["path"], ["a.wav"]], "missing column 'label'"),
    ([["path", "label", "split"], ["a.wav", "x", "holdout"]], "unknown split 'holdout'"),
    ([["path", "label"], ["a.wav", "x"], ["a.wav", "y"]], "duplicate row"),
    ([["path", "label"], ["a.wav", "x", "extra"]], "3 fields"),
    ([["path", "label"]], "no rows"),
])
def test_bad_manifests_name_the_problem(tmp_path, rows, message):
    with pytest.raises(SpecrnnError, match=message):
        from_csv(_csv(tmp_path / "m.csv", rows))


def test_pattern_manifest_with_split_rules(tmp_path):
    for d in "01":
        for spk in ("ann", "bob"):
            for take in range(8):
                write(tmp_path / f"{d}_{spk}_{take}.wav", tone(200 + take))
    m = from_pattern(tmp_path, "{label}_{speaker}_{take}.wav", ["take<3=test", "take in 3,4=val"])
    assert len(m) == 32 and set(m.labels) == {"0", "1"}
    for s, take in zip(m.splits, m.extra["take"]):
        assert s == ("test" if int(take) < 3 else "val" if take in ("3", "4") else "train")
    out = tmp_path / "sub" / "m.csv"
    m.to_csv(out, relative_to=out.parent)
    again = load_manifest(out)
    assert again.paths == m.paths and again.splits == m.splits and again.extra["speaker"] == m.extra["speaker"]
    with pytest.raises(SpecrnnError, match="bad split rule"):
        from_pattern(tmp_path, "{label}_{speaker}_{take}.wav", ["nofield<3=test"])
    for typo in ("take<<3=test", "take<three=test", "take>=3a=test"):  # would compare as text and send every row to test
        with pytest.raises(SpecrnnError, match="compares numbers"):
            from_pattern(tmp_path, "{label}_{speaker}_{take}.wav", [typo])
    # a pattern with a field too few matches no whole name: it is refused, not read from the name's end
    for short in ("{label}_{take}.wav", "ann_{label}.wav"):
        with pytest.raises(SpecrnnError, match="no audio file name matches"):
            from_pattern(tmp_path, short)
    assert "0_ann_3" in from_pattern(tmp_path, "{label}.wav").labels  # no '_' in the pattern: the whole name
    (tmp_path / "dogs").mkdir()
    write(tmp_path / "dogs" / "bark_1.wav", tone(300))
    m = from_pattern(tmp_path, "{label}/{name}_{take}.wav")  # a folder in the pattern starts at a folder
    assert m.labels == ["dogs"] and m.extra["name"] == ["bark"]


def test_pattern_fields_hold_underscores_where_no_underscore_separates_them(tmp_path):
    write(tmp_path / "dog_bark" / "take_1.wav", tone())
    write(tmp_path / "rain drops" / "ñandú 2.flac", tone(), format="FLAC")
    write(tmp_path / "rain drops" / "x_3.wav", tone())
    m = from_pattern(tmp_path, "{label}/{name}.wav")
    assert sorted(zip(m.labels, m.extra["name"])) == [("dog_bark", "take_1"), ("rain drops", "x_3")]
    assert m.unmatched == ["rain drops/ñandú 2.flac"]  # named with its folder
    m = from_pattern(tmp_path, "{label}/*")  # any name, any extension
    assert sorted(m.labels) == ["dog_bark", "rain drops", "rain drops"]
    m = from_pattern(tmp_path, "{label}/{_}_{take}.*")  # '_' separates: no field of that name holds '_'
    assert sorted(zip(m.labels, m.extra["take"])) == [("dog_bark", "1"), ("rain drops", "3")]


def _table(n_per_class=30, classes=("a", "b", "c"), groups=None):
    from specrnn.data.manifest import Manifest

    labels = [c for c in classes for _ in range(n_per_class)]
    paths = [f"/x/{i}.wav" for i in range(len(labels))]
    g = None if groups is None else [f"g{i % groups}" for i in range(len(labels))]
    return Manifest(paths, labels, groups=g)


def test_stratified_split_fractions_and_determinism():
    m = assign_splits(_table(), 0.1, 0.1, seed=3)
    for c in "abc":
        counts = {s: sum(1 for lab, sp in zip(m.labels, m.splits) if lab == c and sp == s) for s in ("train", "val", "test")}
        assert counts == {"train": 24, "val": 3, "test": 3}
    assert assign_splits(_table(), 0.1, 0.1, seed=3).splits == m.splits
    assert assign_splits(_table(), 0.1, 0.1, seed=4).splits != m.splits


def test_group_aware_split_never_shares_a_group():
    m = assign_splits(_table(40, groups=12), 0.1, 0.1, seed=0)
    where = {}
    for g, s in zip(m.groups, m.splits):
        where.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in where.values())
    assert {"train", "val", "test"} <= set(m.splits)


def test_group_aware_split_keeps_fractions_and_label_proportions_over_many_groups():
    """Groups of mixed sizes and labels: test and val each near their fraction of every class, seeded."""
    from specrnn.data.manifest import Manifest

    paths, labels, groups = [], [], []
    for g in range(400):
        for j in range(1 + g % 7):  # 1 to 7 rows a group
            paths.append(f"/d/g{g}_{j}.wav")
            labels.append("abcd"[(g + j) % 4] if g % 3 else "a")  # class 'a' over-represented
            groups.append(f"spk{g}")
    man = Manifest(paths, labels, groups=groups)
    m = assign_splits(man, 0.1, 0.2, seed=5)
    for c in "abcd":
        n = labels.count(c)
        for split, frac in (("test", 0.2), ("val", 0.1)):
            got = sum(lab == c and sp == split for lab, sp in zip(m.labels, m.splits)) / n
            assert abs(got - frac) < 0.03, (c, split, got)
    assert assign_splits(man, 0.1, 0.2, seed=5).splits == m.splits
    assert assign_splits(man, 0.1, 0.2, seed=6).splits != m.splits


def test_validation_from_training_groups_keeps_test_groups_apart():
    """group_val=False: val rows come from the training speakers (all of them are learnt), test stays apart."""
    m = assign_splits(_table(40, groups=12), 0.1, 0.1, seed=0, group_val=False)
    where = {}
    for g, s in zip(m.groups, m.splits):
        where.setdefault(g, set()).add(s)
    assert any(s == {"train", "val"} for s in where.values())  # val now shares groups with train...
    assert all(s == {"test"} for s in where.values() if "test" in s)  # ...but never with test
    grouped = assign_splits(_table(40, groups=12), 0.1, 0.1, seed=0)
    assert [s == "test" for s in m.splits] == [s == "test" for s in grouped.splits]


def test_given_test_split_is_never_touched_and_val_comes_from_train():
    t = _table()
    t.splits = ["test" if i % 5 == 0 else "train" for i in range(len(t))]
    m = assign_splits(t, 0.1, 0.1, seed=0)
    for before, after in zip(t.splits, m.splits):
        assert (before == "test") == (after == "test")
    assert m.splits.count("val") == pytest.approx(0.1 * t.splits.count("train"), abs=3)


def test_a_class_with_one_example_stays_in_train():
    t = _table(10)
    t.paths.append("/x/solo.wav")
    t.labels.append("solo")
    m = assign_splits(t, 0.1, 0.1, seed=0)
    assert m.splits[-1] == "train"


def test_group_aware_validation_with_too_few_rows_per_class_to_stratify():
    from specrnn.data.manifest import Manifest

    labels = [c for c in "abcdefghij" for _ in range(2)]
    m = Manifest([f"/x/{i}" for i in range(20)], labels, splits=["train"] * 20, groups=[f"g{i}" for i in range(20)])
    out = assign_splits(m, 0.1, 0.1, 0)
    assert out.splits.count("val") >= 1 and out.splits.count("train") >= 10


def test_manifest_warns_when_split_rules_put_a_group_in_two_splits(tmp_path, capsys):
    from specrnn.cli import main

    for spk in ("ann", "bob"):
        for take in range(4):
            write(tmp_path / f"0_{spk}_{take}.wav", tone(200 + take))
            write(tmp_path / f"1_{spk}_{take}.wav", tone(900 + take))
    out = tmp_path / "m.csv"
    assert main(["manifest", str(tmp_path), "--pattern", "{label}_{group}_{take}.wav", "--split-rule", "take<1=test",
                 "--out", str(out)]) == 0
    first = capsys.readouterr()
    assert "put group(s) ann, bob in more than one split" in first.err and first.out.startswith(f"wrote {out}")
    assert main(["manifest", str(tmp_path), "--pattern", "{label}_{group}_{take}.wav", "--split-rule", "group in bob=test",
                 "--out", str(out)]) == 0
    again = capsys.readouterr()  # the earlier manifest (its own) is replaced, and it says so
    assert "more than one split" not in again.err and again.out.startswith(f"replaced {out}")
