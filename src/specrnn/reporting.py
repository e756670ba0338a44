"""`specrnn report`: one self-contained HTML file (images embedded) that explains a run or a cross-validation:
metrics, learning curves, confusion matrix, per-class figures, the most confident mistakes with their
spectrograms (and attention), and the config."""
from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path

import numpy as np

from .errors import SpecrnnError
from .files import atomic_write_text, check_output_file

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto}
.grid{display:flex;flex-wrap:wrap;gap:1em}.card{border:1px solid #ddd;padding:.5em;width:340px;font-size:.9em}.bad{color:#b00}"""


def _img(path_or_fig, alt: str) -> str:
    if isinstance(path_or_fig, (str, Path)):
        p = Path(path_or_fig)
        if not p.is_file():
            return "<p><i>(plot not available)</i></p>"
        data = p.read_bytes()
    else:
        data = path_or_fig
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.2f}%"


def _per_class_table(m: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(c)}</td><td>{_pct(v['precision'])}</td><td>{_pct(v['recall'])}</td>"
                   f"<td>{_pct(v['f1'])}</td><td>{v['support']}</td></tr>" for c, v in m["per_class"].items())
    return f"<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>"


def per_class_from_confusion(cm: np.ndarray, classes: list[str], runs_per_clip: int = 1) -> dict:
    """Per-class precision, recall, F1 and support from a confusion matrix (rows: true, columns: predicted);
    support in clips when every clip was scored `runs_per_clip` times."""
    cm = np.asarray(cm, dtype=np.float64)
    tp, true, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    out = {}
    for i, c in enumerate(classes):
        p = tp[i] / predicted[i] if predicted[i] else float("nan")
        r = tp[i] / true[i] if true[i] else float("nan")
        f = 2 * p * r / (p + r) if predicted[i] and true[i] and (p + r) > 0 else 0.0
        out[c] = {"precision": p, "recall": r, "f1": f, "support": int(round(true[i] / runs_per_clip))}
    return {"per_class": out}


def _spectrogram_png(features: np.ndarray, title: str, attention: np.ndarray | None, fcfg) -> bytes:
    from . import plots

    buf = io.BytesIO()
    top = fcfg.f_max or fcfg.sample_rate / 2
    ylabel = {"logmel": f"mel band ({fcfg.f_min:g}-{top:g} Hz)", "mfcc": "MFCC",
              "logpower": f"frequency bin (0-{fcfg.sample_rate / 2:g} Hz)"}[fcfg.kind]
    plots.spectrogram(features, buf, title, attention, fcfg.hop_length / fcfg.sample_rate, ylabel)
    return buf.getvalue()


def _mistakes(run_dir: Path, split: str, limit: int = 8) -> str:
    """The most confident wrong predictions on `split`, each with its spectrogram (and attention weights)."""
    import torch

    from .data.dataset import model_input_set
    from .data.manifest import load_manifest
    from .inference import Predictor

    p = Predictor.load(run_dir, device="cpu")
    if p.task.multilabel:
        return "<p>(multi-label run: see the per-class table)</p>"
    fs = model_input_set(load_manifest(run_dir / "split.csv"), p.cfg, p.classes, split, "report")
    probs = p.probabilities(p.logits_from_features(fs.features))
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != fs.targets)
    if not len(wrong):
        return f"<p>No mistakes on the {split} split ({len(fs)} clips).</p>"
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])][:limit]
    base = os.path.commonpath([os.path.dirname(x) for x in fs.paths])  # names shown relative to the data's folder
    cards = []
    for i in wrong:
        f = fs.features[i]
        att = p.model.attention(torch.from_numpy(f)[None], torch.tensor([len(f)]))
        weights = None if att is None else att[0][0, : int(att[1][0]), 0].numpy()
        true, guess = p.classes[fs.targets[i]], p.classes[pred[i]]
        name = os.path.relpath(fs.paths[i], base)
        png = _spectrogram_png(f, f"{name}: {true} -> {guess}", weights, p.cfg.features)
        alt = f"spectrogram of {name}" + (" with attention weights" if weights is not None else "")
        cards.append(f'<div class="card">{_img(png, alt)}<br><b>{html.escape(name)}</b><br>'
                     f'true <b>{html.escape(true)}</b>, predicted <b class="bad">{html.escape(guess)}</b> '
                     f"({100 * probs[i, pred[i]]:.1f}%; true class {100 * probs[i, fs.targets[i]]:.1f}%)</div>")
    return f'<p>{len(np.flatnonzero(pred != fs.targets))} of {len(fs)} {split} clips are wrong; the {len(wrong)} most confident:</p>' \
           f'<div class="grid">{"".join(cards)}</div>'


def _provenance(run_dir: Path) -> str:
    """Where the run's data came from, when it ran, and how many clips each split held (and were skipped)."""
    import csv

    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    parts = [f"Data: <code>{html.escape(str(info.get('data', '?')))}</code>",
             f"started {html.escape(str(info.get('created', '?')).replace('T', ' '))}",
             f"specrnn {html.escape(str(info.get('version', '?')))}"]
    if (run_dir / "split.csv").is_file():
        with open(run_dir / "split.csv", newline="", encoding="utf-8") as f:
            splits = [row.get("split", "") for row in csv.DictReader(f)]
        parts.append("clips: " + ", ".join(f"{s} {splits.count(s):,}" for s in ("train", "val", "test") if splits.count(s)))
    if (run_dir / "bad_files.csv").is_file():
        with open(run_dir / "bad_files.csv", newline="", encoding="utf-8") as f:
            n = sum(1 for _ in csv.DictReader(f))
        parts.append(f'<b class="bad">{n} unusable file(s) skipped</b> (listed in bad_files.csv)')
    return "; ".join(parts) + "."


_GROUP_NOTE = ("; with per-speaker normalisation (model.normalize: group), a held-out speaker's unlabelled test clips "
               "set that speaker's own mean features (transductive, like enrolment).")


def _per_speaker(config: dict) -> bool:
    return (config.get("model") or {}).get("normalize") == "group"


def _yaml_config(run_dir: Path) -> dict:
    import yaml

    path = run_dir / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def run_report(run_dir: Path) -> str:
    m = json.loads((run_dir / "metrics.json").read_text())
    split = "test" if "test" in m else "val"
    if split == "test":
        note = "Validation chose the model; the test split was used only for the figures below" + (
            _GROUP_NOTE if _per_speaker(_yaml_config(run_dir)) else ".")
    else:
        note = ('<b class="bad">This run has no test split:</b> the figures below are on the validation split, which '
                "also chose the model (best epoch), so they are optimistic. Evaluate on held-out data with "
                "<code>specrnn evaluate RUN DATA</code>.")
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else ""
    from .tasks import task_of_metrics

    if task_of_metrics(m[split]).sequence:
        return _sequence_report(run_dir, m, split, note, config)
    summary = "".join(f"<tr><td>{s}</td><td>{m[s]['n']}</td><td>{_pct(m[s]['accuracy'])}</td><td>{_pct(m[s]['macro_f1'])}</td></tr>"
                      for s in ("val", "test") if s in m)
    return f"""<h1>specrnn run: {html.escape(run_dir.name)}</h1>
<p>{_provenance(run_dir)}</p>
<p>Model: <b>{html.escape(m['model'])}</b>, {m['parameters']:,} parameters, {len(m['classes'])} classes.
Best epoch {m['best_epoch']} of {m['epochs_run']}; training took {m['train_seconds']:.0f} s.
{note}</p>
<h2>Metrics</h2><table><tr><th>split</th><th>n</th><th>accuracy</th><th>macro-F1</th></tr>{summary}</table>{_seeds_section(m)}
<h2>Learning curves</h2>{_img(run_dir / 'learning_curves.png', 'loss and accuracy per epoch')}
<h2>Confusion matrix ({split})</h2>{_img(run_dir / 'confusion_matrix.png', f'confusion matrix on the {split} split')}
<h2>Per class ({split})</h2>{_per_class_table(m[split])}
<h2>Most confident mistakes ({split})</h2>{_mistakes(run_dir, split)}
<h2>Config</h2><pre>{html.escape(config)}</pre>"""


def _seeds_section(m: dict) -> str:
    """`train --seeds`: each seed's validation and test figures, and which one the run kept (on validation)."""
    sel = m.get("seeds")
    if not sel:
        return ""
    from .tasks import task_of_metrics

    key, name = task_of_metrics(m["val"]).headline
    rows = "".join(f"<tr><td>{r['seed']}{' (kept)' if r['chosen'] else ''}</td><td>{_pct(r['val'].get(key))}</td>"
                   f"<td>{_pct(r['test'].get(key))}</td></tr>" for r in sel["runs"])
    n_val = sel["runs"][0]["val"].get("n", "?")
    return (f"<h2>Seeds</h2><p>One run per seed on the same split (drawn with split seed {sel.get('split_seed')}; "
            f"{n_val} validation clips); seed {sel['chosen']} was kept, chosen by its {html.escape(sel['by'])} (ties: "
            "the lower validation loss). The test figures are shown, never used to choose; with few validation clips, "
            "the kept seed need not have the best test figure.</p>"
            f"<table><tr><th>seed</th><th>val {name}</th><th>test {name}</th></tr>{rows}</table>")


def _sequence_report(run_dir: Path, m: dict, split: str, note: str, config: str) -> str:
    """A CTC run: sequences right and token error rate, learning curves, the wrong sequences, the config."""
    summary = "".join(f"<tr><td>{s}</td><td>{m[s]['n']}</td><td>{m[s]['tokens']}</td><td>{_pct(m[s]['accuracy'])}</td>"
                      f"<td>{_pct(m[s]['token_error_rate'])}</td></tr>" for s in ("val", "test") if s in m)
    errors = m[split]["errors"]
    base = os.path.commonpath([os.path.dirname(e["path"]) for e in errors]) if errors else ""
    rows = "".join(f"<tr><td>{html.escape(os.path.relpath(e['path'], base))}</td><td>{html.escape(e['true'])}</td>"
                   f"<td>{html.escape(e['predicted'])}</td><td>{e['edits']}</td></tr>" for e in errors)
    wrong = (f"<table><tr><th>clip</th><th>true</th><th>decoded</th><th>edits</th></tr>{rows}</table>" if errors
             else f"<p>Every {split} sequence is decoded right.</p>")
    return f"""<h1>specrnn run: {html.escape(run_dir.name)}</h1>
<p>{_provenance(run_dir)}</p>
<p>Model: <b>{html.escape(m['model'])}</b>, {m['parameters']:,} parameters, tokens {html.escape(', '.join(m['classes']))}
(and the CTC blank). Best epoch {m['best_epoch']} of {m['epochs_run']}; training took {m['train_seconds']:.0f} s.
{note}</p>
<h2>Metrics</h2><table><tr><th>split</th><th>clips</th><th>tokens</th><th>sequences right</th><th>token error rate</th></tr>
{summary}</table><p>Token error rate: substitutions, insertions and deletions over the true tokens (the word error rate
when tokens are words).</p>{_seeds_section(m)}
<h2>Learning curves</h2>{_img(run_dir / 'learning_curves.png', 'loss and token accuracy per epoch')}
<h2>Wrong sequences ({split})</h2>{wrong}
<h2>Config</h2><pre>{html.escape(config)}</pre>"""


def cv_report(cv_dir: Path) -> str:
    import yaml

    s = json.loads((cv_dir / "cv.json").read_text())
    seeds = s.get("seeds")
    config = yaml.safe_dump(s.get("config", {}), sort_keys=False)
    if seeds and len(seeds) > 1:
        config = f"# each run sets its own seed ({', '.join(map(str, seeds))}); the rest is shared\n" + config
    if s.get("task") == "sequence":
        return _sequence_cv_report(cv_dir, s, config)
    n_seeds = len(seeds) if seeds else len(s["folds"][0]["accuracy_per_seed"])
    together = any("ensemble_accuracy" in f for f in s["folds"])
    seed_head = ", ".join(f"seed {x}" for x in seeds) if seeds else "per seed"
    rows = "".join(f"<tr><td>{html.escape(str(f['fold']))}</td><td>{f['n']}</td><td>{_pct(f['accuracy'])}</td>"
                   f"<td>{_pct(f['macro_f1'])}</td><td>{', '.join(f'{100 * a:.1f}' for a in f['accuracy_per_seed'])}</td>"
                   + (f"<td>{_pct(f.get('ensemble_accuracy'))}</td>" if together else "")
                   + f"<td>{f['train_seconds']:.0f}</td></tr>" for f in s["folds"])
    ens = (f"; with the {n_seeds} seeds together (class probabilities averaged) <b>{_pct(s['ensemble_accuracy_mean'])}</b>"
           if "ensemble_accuracy_mean" in s else "")
    per_class = per_class_from_confusion(s["pooled_confusion_matrix"], s["classes"], n_seeds)
    counted = f" Each test clip is counted once per seed ({n_seeds} times)." if n_seeds > 1 else ""
    return f"""<h1>specrnn cross-validation: {html.escape(cv_dir.name)}</h1>
<p>Protocol: {html.escape(s['protocol'])}; {len(s['folds'])} folds x {n_seeds} seed(s) = {s['n_runs']} runs. Each
fold's test clips were never used for training or early stopping{_GROUP_NOTE if _per_speaker(s.get("config", {})) else
" or normalisation."}{_extra_note(s)}</p>
<p><b>Mean accuracy {_pct(s['accuracy_mean'])} ± {100 * s['accuracy_std']:.2f}</b> (mean over seeds, then over folds;
std over folds){ens}; macro-F1 {_pct(s['macro_f1_mean'])}; pooled accuracy {_pct(s['pooled_accuracy'])}.</p>
<h2>Per fold</h2><table><tr><th>fold</th><th>n</th><th>accuracy</th><th>macro-F1</th><th>{html.escape(seed_head)} (%)</th>
{'<th>seeds together</th>' if together else ''}<th>train s</th></tr>{rows}</table>
<h2>Pooled confusion matrix</h2><p>Every fold's test predictions added up.{counted}</p>{_img(cv_dir / 'confusion_matrix.png', 'pooled confusion matrix of every fold')}
<h2>Per class (pooled over folds{' and seeds' if n_seeds > 1 else ''})</h2>{_per_class_table(per_class)}
<h2>Config</h2><pre>{html.escape(config)}</pre>"""


def _extra_note(s: dict) -> str:
    """What `cv --train-extra` added to every fold's training part, if anything."""
    x = s.get("train_extra")
    return (f" Every fold also trained on {x['rows']} rows of {html.escape(x['path'])} (--train-extra), which were never "
            "validated or tested on." if x else "")


def _sequence_cv_report(cv_dir: Path, s: dict, config: str) -> str:
    """A CTC cross-validation: token error rate and sequences right per fold and over folds, the config."""
    seeds = s["seeds"]
    rows = "".join(f"<tr><td>{html.escape(str(f['fold']))}</td><td>{f['n']}</td><td>{f['tokens']}</td>"
                   f"<td>{_pct(f['token_error_rate'])}</td><td>{_pct(f['accuracy'])}</td>"
                   f"<td>{', '.join(f'{100 * a:.1f}' for a in f['token_error_rate_per_seed'])}</td>"
                   f"<td>{f['train_seconds']:.0f}</td></tr>" for f in s["folds"])
    return f"""<h1>specrnn cross-validation: {html.escape(cv_dir.name)}</h1>
<p>Protocol: {html.escape(s['protocol'])}; {len(s['folds'])} folds x {len(seeds)} seed(s) = {s['n_runs']} runs of a CTC
model over the tokens {html.escape(', '.join(s['classes']))}. Each fold's test clips were never used for training,
early stopping or normalisation.{_extra_note(s)}</p>
<p><b>Mean token error rate {_pct(s['token_error_rate_mean'])} ± {100 * s['token_error_rate_std']:.2f}</b> (mean over
seeds, then over folds; std over folds); pooled over every run {_pct(s['pooled_token_error_rate'])}; sequences
right {_pct(s['accuracy_mean'])}. Token error rate: substitutions, insertions and deletions over the true tokens.
Each run's wrong sequences are in its own report (`specrnn report FOLD/SEED`).</p>
<h2>Per fold</h2><table><tr><th>fold</th><th>clips</th><th>tokens</th><th>token error rate</th><th>sequences right</th>
<th>{html.escape(', '.join(f'seed {x}' for x in seeds))} (token error, %)</th><th>train s</th></tr>{rows}</table>
<h2>Config</h2><pre>{html.escape(config)}</pre>"""


def report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write report.html for a run folder or a CV folder; returns its path."""
    path = Path(path)
    if out is not None:
        check_output_file(out, (".html", ".htm"), b"<title>specrnn report", "report (one HTML file, images inside)")
    if (path / "cv.json").is_file():
        body = cv_report(path)
    elif (path / "metrics.json").is_file():
        body = run_report(path)
    elif (path / "protocol.txt").is_file() or list(path.glob("fold-*")):
        raise SpecrnnError(f"{path}: this cross-validation has not finished (no cv.json yet); rerun the `specrnn cv` "
                           "command that made it to finish it, then report")
    elif (path / "config.yaml").is_file():
        raise SpecrnnError(f"{path}: this run has not finished (no metrics.json yet); "
                           f"resume it with `specrnn train --resume --out {path}`, then report")
    else:
        raise SpecrnnError(f"{path}: neither a finished run folder (metrics.json) nor a CV folder (cv.json)")
    out = Path(out) if out else path / "report.html"
    atomic_write_text(out, f"<!doctype html><html><head><meta charset='utf-8'><title>specrnn report: {html.escape(path.name)}</title>"
                      f"<style>{STYLE}</style></head><body>{body}</body></html>\n")
    return out
