"""The defaults, as a new user runs them: `specrnn train DATA` / `specrnn cv DATA` with no --config (the recipe picks
the settings from the data), against a seed-style baseline trained on the same split in the same run: librosa
log-mels (per-clip standardised), a 2 x 128 nn.LSTM read at each clip's last real frame, Adam, a fixed
number of epochs. Training time is reported beside each figure.
python -m benchmarks.defaults [--quick] [--tasks fsdd-digits,fsdd-speaker,yesno,esc10]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from .common import ESC10, OUT, QUICK_OUT, SHARED, figure, finish, fsdd_manifest, load_str, start, table

TASKS = ["fsdd-digits", "fsdd-speaker", "yesno", "esc10"]


class LastStateLSTM(nn.Module):
    """The seed recipe done right: a 2 x 128 LSTM read at each clip's last real frame. Over the padded batch, not
    packed: the same output as packing's final hidden state (the LSTM is unidirectional, so padding after a frame
    cannot reach it), and packing clips of mixed lengths is many times slower here (FACTS.md: one packed step 45x
    a padded one; a packed epoch of drum one-shots, 5 ms to seconds long, took about a minute)."""

    def __init__(self, n_in: int, n_out: int, hidden: int = 128, layers: int = 2):
        super().__init__()
        self.rnn = nn.LSTM(n_in, hidden, layers, batch_first=True, dropout=0.15)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x, lengths):
        out, _ = self.rnn(x)
        return self.head(out[torch.arange(len(x)), torch.as_tensor(lengths) - 1])


def baseline(train: list[tuple[str, str]], test: list[tuple[str, str]], epochs: int, seed: int = 0,
             cache: dict | None = None) -> dict:
    """Train the baseline on (path, label) rows and return its test accuracy and seconds (features included; with
    `cache`, a dict shared across folds, each file's features are computed once and its time counted once)."""
    from .baseline import librosa_logmel

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    classes = sorted({y for _, y in train})
    index = {c: i for i, c in enumerate(classes)}

    def feats(rows):
        out = []
        for p, _ in rows:
            if cache is not None and p in cache:
                out.append(cache[p])
                continue
            x = librosa_logmel(p)
            out.append(torch.from_numpy((x - x.mean()) / (x.std() + 1e-5)))
            if cache is not None:
                cache[p] = out[-1]
        return out

    xtr, xte = feats(train), feats(test)
    ytr = torch.tensor([index[y] for _, y in train])
    model = LastStateLSTM(xtr[0].shape[1], len(classes))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for b in torch.randperm(len(xtr), generator=g).split(32):
            xs = [xtr[i] for i in b]
            x = nn.utils.rnn.pad_sequence(xs, batch_first=True)
            loss = nn.functional.cross_entropy(model(x, torch.tensor([len(v) for v in xs])), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    right = 0
    with torch.no_grad():
        for s in range(0, len(xte), 64):
            xs = xte[s : s + 64]
            pred = model(nn.utils.rnn.pad_sequence(xs, batch_first=True), torch.tensor([len(v) for v in xs])).argmax(-1)
            right += sum(classes[int(k)] == y for k, (_, y) in zip(pred, test[s : s + 64]))
    return {"accuracy": right / len(test), "seconds": time.perf_counter() - t0}


def _rows(csv: Path, split_of) -> tuple[list, list]:
    from specrnn.data.manifest import load_manifest

    m = load_manifest(csv)
    rows = list(zip(m.paths, m.labels))
    splits = [split_of(m, i) for i in range(len(m))]
    return [r for r, s in zip(rows, splits) if s == "train"], [r for r, s in zip(rows, splits) if s == "test"]


def _chose(lines: list[str]) -> str:
    """The recipe's keys from its printed lines ("recipe: model.head = 'ctc': ..." -> model.head=ctc)."""
    keys = [x.removeprefix("recipe: ").split(":")[0].replace(" = ", "=").replace("'", "") for x in lines if " = " in x]
    return "; ".join(keys) or "the defaults"


def _train(csv: Path, run: Path, sets: list[str]) -> tuple[dict, float, list[str]]:
    import specrnn

    shutil.rmtree(run, ignore_errors=True)
    lines: list[str] = []
    t0 = time.perf_counter()
    m = specrnn.train(csv, out=run, overrides=sets, log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    return m, time.perf_counter() - t0, [x for x in lines if x.startswith("recipe:")]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tasks", default=",".join(TASKS))
    a = ap.parse_args(argv)
    q, tasks = a.quick, a.tasks.split(",")
    runs = (QUICK_OUT if q else OUT) / "runs"
    res = start("defaults", q)
    sets = ["train.max_epochs=2"] if q else []
    epochs = 2 if q else 20
    rows = []

    def report(name, acc, secs, base, target, met, choices, protocol):
        res["figures"].append(figure(f"{name}: test accuracy, defaults (no config)", acc, "fraction",
                                     "seed-style LSTM at the last real frame, same split" if base else None,
                                     base["accuracy"] if base else None, target=target, met=met,
                                     note=f"training {secs:.0f} s" + (f"; baseline {base['seconds']:.0f} s" if base else "")))
        rows.append([name, protocol, f"{100 * acc:.2f}%", f"{secs:.0f}",
                     f"{100 * base['accuracy']:.2f}%" if base else "—", f"{base['seconds']:.0f}" if base else "—",
                     choices if isinstance(choices, str) else _chose(choices)])

    for task, label in (("fsdd-digits", "digit"), ("fsdd-speaker", "speaker")):
        if task in tasks:
            csv = fsdd_manifest(label)
            m, secs, choices = _train(csv, runs / f"defaults-{task}", sets)
            base = baseline(*_rows(csv, lambda man, i: man.splits[i] if man.splits[i] == "test" else "train"), epochs)
            acc = m["test"]["accuracy"]
            report(f"FSDD {'digits' if label == 'digit' else 'speaker ID'}", acc, secs, base, ">= 99.5%", acc >= 0.995,
                   choices, "standard split (takes 0-4 test)")
    if "yesno" in tasks:
        csv = SHARED / "yesno" / "labels.csv"
        m, secs, choices = _train(csv, runs / "defaults-yesno", sets)
        ter = m["test"]["token_error_rate"]
        res["figures"].append(figure("yesno: test word error, defaults (recipe picks CTC)", ter, "fraction", better="lower",
                                     note=f"training {secs:.0f} s, one seed; recipe: {_chose(choices)}"))
        rows.append(["yesno (word error)", "Kaldi split", f"{100 * ter:.2f}% WER", f"{secs:.0f}", "—", "—", _chose(choices)])
    if "esc10" in tasks:
        import specrnn

        out = runs / "defaults-esc10"  # a CV folder resumes its finished folds when the settings are the same
        t0 = time.perf_counter()
        s = specrnn.cv(ESC10 / "labels.csv", out, overrides=["train.max_epochs=1"] if q else [], log=lambda *a, **k: None,
                       fold_column="fold", group_column="freesound_id")
        fold_runs = [json.loads(p.read_text()) for p in sorted(out.glob("fold-*/seed-*/metrics.json"))]
        secs = statistics.mean(r.get("train_seconds", float("nan")) for r in fold_runs)
        from specrnn.data.manifest import load_manifest

        man = load_manifest(ESC10 / "labels.csv")
        folds = sorted(set(man.folds))
        bases = []
        for f in folds[:1] if q else folds:
            bases.append(baseline(*_rows(ESC10 / "labels.csv", lambda m, i, f=f: "test" if m.folds[i] == f else "train"),
                                  epochs))
        base = {"accuracy": statistics.mean(b["accuracy"] for b in bases), "seconds": statistics.mean(b["seconds"] for b in bases)}
        choices = "the event recipe (CRNN + attention, augmentation, 40 epochs) at 22.05 kHz, 20 ms hops (config.yaml)"
        report("ESC-10, official 5 folds (mean)", s["accuracy_mean"], secs, base, ">= 85%", s["accuracy_mean"] >= 0.85,
               choices, f"official folds, std {s['accuracy_std']:.4f}; {time.perf_counter() - t0:.0f} s wall")
    res["tables"].append(table("Defaults (no --config) against the seed-style baseline on the same split",
                               ["task", "protocol", "defaults", "train s", "baseline", "baseline s", "recipe chose"], rows,
                               note="QUICK SMOKE TEST: not a result. " if q else "Training seconds per run (ESC-10: "
                                    "mean per fold, folds run in parallel); the baseline's include its librosa features."))
    res["notes"].append("Not measured yet: two generated non-speech sets (e.g. drum or instrument one-shots with a "
                        "source-disjoint split) and the very-short-clip rule on them.")
    res["notes"].append(f"Load: {load_str()}.")
    print(finish(res, q))
    return res


if __name__ == "__main__":
    main()
