"""Regenerate the Markdown results from the suites' JSON: benchmarks/RESULTS.md (full runs, benchmarks/out/*.json)
or benchmarks/out/quick/RESULTS-quick.md (quick runs). python -m benchmarks.report [--quick]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import OUT, QUICK_OUT, ROOT

ORDER = [("features_speed", "Feature extraction"), ("training_speed", "Training throughput, padding, packed vs padded"),
         ("time_to_accuracy", "Time to accuracy"), ("efficiency", "Compute efficiency"),
         ("inference_speed", "Inference and streaming"), ("startup", "Start-up"), ("serve", "Serving (specrnn serve)"), ("defaults", "Defaults"), ("nonspeech", "Defaults on non-speech sets (drum kits, instrument notes)"), ("scale", "Scale"), ("recognition", "Recognition (CTC)"),
         ("accuracy", "Accuracy on real data")]


def _num(v, unit: str = "") -> str:
    if v is None:
        return "—"
    if unit == "fraction":
        return f"{100 * v:.1f}%"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def _ratio(f: dict) -> str:
    """'3.2x' (higher is better), '3.2x faster' or '2.0x slower' (times), '3.2x lower' or '2.0x higher' (error
    rates and other lower-is-better figures that are not times)."""
    r = f.get("ratio")
    if not r:
        return "—"
    if f["better"] != "lower":
        return f"{r:.2f}x"
    ahead, behind = ("faster", "slower") if f["unit"] in ("s", "ms", "us", "min") else ("lower", "higher")
    return f"{r:.2f}x {ahead}" if r >= 1 else f"{1 / r:.2f}x {behind}"


def _figures(figs: list[dict]) -> list[str]:
    lines = ["| measure | specrnn | baseline (same run) | baseline value | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    for f in figs:
        unit = f["unit"] if f["unit"] != "fraction" else ""
        val = f"{_num(f['value'], f['unit'])} {unit}".strip()
        base = f"{_num(f['baseline_value'], f['unit'])} {unit}".strip() if f.get("baseline_value") is not None else "—"
        ratio = _ratio(f)
        met = {True: "yes", False: "**NO (missed)**", None: ""}[f.get("met")]
        note = f" <br>*{f['note']}*" if f.get("note") else ""
        lines.append(f"| {f['name']}{note} | {val} | {f.get('baseline') or '—'} | {base} | {ratio} | {f.get('target') or ''} | {met} |")
    return lines


def _table(t: dict) -> list[str]:
    lines = [f"**{t['title']}**", "", "| " + " | ".join(t["header"]) + " |", "|" + "---|" * len(t["header"])]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in t["rows"]]
    if t.get("note"):
        lines += ["", f"*{t['note']}*"]
    return lines + [""]


def kept_sections(path: Path) -> dict[str, list[str]]:
    """The '## heading' sections of an existing results file: a suite whose JSON is not here (benchmarks/out is not
    committed) keeps the section its last run wrote, instead of vanishing when another suite is rerun."""
    sections, current = {}, None
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def render(folder: Path, quick: bool, previous: Path | None = None) -> str:
    kept = kept_sections(previous) if previous is not None else {}
    results = {name: json.loads((folder / f"{name}.json").read_text()) for name, _ in ORDER if (folder / f"{name}.json").exists()}
    first = next(iter(results.values()), None)
    m = first["machine"] if first else {}
    title = "# specrnn benchmarks" + (" (QUICK subset: smoke-test figures, not results)" if quick else "")
    lines = [title, "",
             f"Machine: {m.get('cores', '?')} cores ({m.get('cpu', '?')}), torch {m.get('torch', '?')}, Python {m.get('python', '?')}. "
             "Every figure's baseline was measured in the same run on the same machine; the ratio column reads "
             "against that baseline (\"x faster\"/\"x slower\" for times; above 1 = specrnn ahead when the baseline is "
             "another tool or loop; where the baseline is another specrnn setting, e.g. 1 vs 2 threads, it is a comparison). Timings are medians of repeated runs. The machine is shared: each section "
             "gives the load average at its start and end. OMP_WAIT_POLICY=PASSIVE, OPENBLAS_NUM_THREADS=1 (see "
             "benchmarks/__init__.py); torch thread counts are stated per figure.", "",
             f"Regenerate: `python -m benchmarks{' --quick' if quick else ''}` (all suites) or `python -m benchmarks --only SUITE`; "
             f"JSON in `benchmarks/out/{'quick/' if quick else ''}`.", ""]
    notes = ROOT / "benchmarks" / "NOTES.md"  # hand-written reading of the latest full run: what limits each target
    if notes.exists() and not quick:
        lines += [notes.read_text().strip(), ""]
    missing = [title_ for name, title_ in ORDER if name not in results and title_ not in kept]
    for name, heading in ORDER:
        r = results.get(name)
        if r is None:
            if heading in kept:  # from the last run that had this suite's JSON
                lines += [f"## {heading}", *kept[heading]]
            continue
        ls, le = r.get("load_start", {}), r.get("load_end", {})
        lines += [f"## {heading}", "", f"*{r['machine']['date']}{' (quick)' if r.get('quick') else ''}; load average "
                  f"{ls.get('loadavg_1m', '?')} at the start, {le.get('loadavg_1m', '?')} at the end ({r['machine'].get('cores', '?')} cores).*", ""]
        if r["figures"]:
            lines += _figures(r["figures"]) + [""]
        for t in r["tables"]:
            lines += _table(t)
        if r.get("parity"):
            p = r["parity"]
            lines += ["**ONNX export parity (onnxruntime vs PyTorch, max abs difference of logits)**", "",
                      f"- offline model (default 2 x 128 GRU, padded batch of 8 random lengths up to 300 frames): "
                      f"{p.get('offline_max_abs_diff', float('nan')):.1e} (export took {p.get('offline_export_seconds', '?')} s)",
                      f"- streaming step model (preset lstm, chunks of 1, 10 and 33 frames, running logits after every chunk): "
                      f"{p.get('streaming_max_abs_diff', float('nan')):.1e}", ""]
        lines += [f"- {n}" for n in r.get("notes", [])] + [""]
    if missing:
        lines += ["## Not run yet", "", "No results in this folder for: " + ", ".join(missing) +
                  f". Run `python -m benchmarks{' --quick' if quick else ''} --only " +
                  ",".join(n for n, t in ORDER if t in missing) + "`.", ""]
    return "\n".join(lines)


def write(quick: bool) -> Path:
    from specrnn.files import atomic_write_text

    path = QUICK_OUT / "RESULTS-quick.md" if quick else ROOT / "benchmarks" / "RESULTS.md"
    atomic_write_text(path, render(QUICK_OUT if quick else OUT, quick, path))
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    print(write(ap.parse_args().quick))
