"""Command line: argument parsing only; each command calls one function of the library.

Heavy imports (torch, Lightning) happen inside the commands that need them, so `--help` is instant and
`predict` never imports the training stack.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def _train(a) -> int:
    from .experiments.seeds import train

    sets = _overrides(a)
    train(a.data, a.out, a.config, sets, resume=a.resume, overwrite=a.overwrite, seeds=a.seeds)
    return 0


def _evaluate(a) -> int:
    from .evaluation import format_metrics
    from .jobs import evaluate

    m = evaluate(a.run_dir, a.data, a.split, on_error=a.on_error, decoding=_decoding(a))
    if a.json:
        print(json.dumps(m))
    else:
        where = f"{a.data}, {m['split']} rows" if m["split"] else f"{a.data}, all rows"
        own = f"its {m['split']} split" if m.get("split") else "its test split"
        print(format_metrics(m, f"evaluation of {a.run_dir} on {where if a.data else own}"))
        for s in m["skipped"]:
            print(f"skipped {s['path']}: {s['reason']}", file=sys.stderr)
    seen = m.get("seen_in_training") or {}
    if seen:
        parts = " and ".join(f"{n} in its {s} split" for s, n in seen.items())
        print(f"warning: of these {m['n']} clips, this run had {parts}: the figures are optimistic", file=sys.stderr)
    return 0


def _predict(a) -> int:
    from .inference.printing import align_command, predict_command

    if a.transcript:
        return align_command(a.run_dir, a.files, a.transcript, a.json)
    return predict_command(a.run_dir, a.files, a.top_k, a.json, a.stream, a.chunk_ms, a.enroll, _decoding(a))


def _decoding(a) -> dict | None:
    """The CTC decoding options given (None: greedy, the default); Predictor.set_decoding checks them."""
    d = {"beam": a.beam, "vocabulary": a.vocabulary.split() if a.vocabulary else None, "grammar": a.grammar,
         "lm": a.lm, "lm_weight": a.lm_weight, "token_bonus": a.token_bonus}
    return d if a.beam or a.vocabulary or a.grammar or a.lm or a.lm_weight != 0.5 or a.token_bonus else None


def _decoding_args(p) -> None:
    g = p.add_argument_group("CTC decoding (token-sequence models; default: greedy best path)")
    g.add_argument("--beam", type=_positive(int), help="prefix beam search over N prefixes (16 when a constraint is given)")
    g.add_argument("--vocabulary", metavar="'TOK TOK ...'", help="only these tokens (space-separated)")
    g.add_argument("--grammar", metavar="FILE", help="only sequences matching the file's token patterns, e.g. '(yes|no){8}'")
    g.add_argument("--lm", metavar="FILE.arpa", help="a token n-gram prior (ARPA; `specrnn ngram` estimates one)")
    g.add_argument("--lm-weight", type=float, default=0.5, help="weight of the n-gram's log-probability (default 0.5)")
    g.add_argument("--token-bonus", type=float, default=0.0, help="score added per token with --lm (default 0)")


def _ngram(a) -> int:
    from .decoding.ngram import ngram_command

    print(ngram_command(a.data, a.out, a.order, a.split, a.discount))
    return 0


def _manifest(a) -> int:
    from collections import Counter

    from .data.manifest import from_pattern
    from .files import check_output_file

    out = a.out or os.path.join(a.dir, "manifest.csv")
    check_output_file(out, (".csv",), b"path,label", "manifest", "--out" if a.out else "the manifest (default --out)")
    man = from_pattern(a.dir, a.pattern, a.split_rule)
    replaced = os.path.exists(out)  # only a manifest specrnn wrote gets here (check_output_file)
    man.to_csv(out, relative_to=os.path.dirname(os.path.abspath(out)))
    counts = dict(Counter(man.splits or ["(no split)"] * len(man)))
    print(f"{'replaced' if replaced else 'wrote'} {out}: {len(man)} files, {len(man.classes)} labels, splits {counts}")
    if man.unmatched:
        print(f"{len(man.unmatched)} audio file(s) did not match the pattern, e.g. {man.unmatched[0]}", file=sys.stderr)
    crossing = man.groups_in_several_splits()
    if crossing:
        print(f"warning: the split rules put group(s) {', '.join(crossing[:5])}{' ...' if len(crossing) > 5 else ''} "
              "in more than one split; `specrnn train` refuses that (a {group} must stay in one split: split by "
              "the group field, or name the field otherwise)", file=sys.stderr)
    return 0


def _models(a) -> int:
    from .models.presets import describe

    print(describe(a.action, a.name, a.set, a.classes))
    return 0


def _cv(a) -> int:
    from .experiments.cv import cv

    sets = _overrides(a)
    cv(a.data, a.out, a.config, sets, a.fold_column, a.folds, a.leave_one_group_out, a.group_column, a.seeds, a.jobs, a.train_extra)
    return 0


def _tune(a) -> int:
    from .experiments.tune import tune

    tune(a.data, a.out, a.trials, a.timeout, a.storage, a.space, a.config, a.set, a.jobs)
    return 0


def _report(a) -> int:
    from .reporting import report

    print(f"wrote {report(a.path, a.out)}")
    return 0


def _export(a) -> int:
    from .export import export_run

    r = export_run(a.run_dir, a.out, streaming=a.streaming, enroll=a.enroll)
    check = f"max |onnxruntime - PyTorch| {r['max_abs_diff']:.2e}" if "max_abs_diff" in r else r.get("check", "")
    enrolled = f"one speaker's model, enrolled from {r['enrolled']} clip(s); " if "enrolled" in r else ""
    print(f"wrote {r['path']} ({r['kind']}, {r['bytes'] / 1e6:.2f} MB); {enrolled}{check}")
    return 0


def _positive(kind: type):
    """argparse type: a number above zero (a top-k of -2 or a chunk of 0 ms means nothing)."""

    def parse(text: str):
        what = "a whole number" if kind is int else "a number"
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not value > 0 or value == float("inf"):  # also NaN and infinity
            raise argparse.ArgumentTypeError(f"must be {what} above 0{'' if kind is int else ' (finite)'}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _at_least(low: int):
    """argparse type: a whole number >= low (cross-validation needs at least 2 folds)."""
    positive = _positive(int)

    def parse(text: str) -> int:
        value = positive(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def _seed_list(text: str) -> list[int]:
    """argparse type: distinct integer seeds, comma-separated ('0,1,2'): config.parse_seeds."""
    from .config import parse_seeds
    from .errors import SpecrnnError

    try:
        return parse_seeds(text)
    except SpecrnnError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _overrides(a) -> dict:
    """--set items (YAML scalars) with the typed shortcuts over them: --on-error, --max-epochs."""
    from .config import parse_set

    out = parse_set(a.set or [])
    if getattr(a, "on_error", None):
        out["data.on_error"] = a.on_error
    if getattr(a, "max_epochs", None) is not None:
        out["train.max_epochs"] = a.max_epochs
    return out


def _config_args(parser: argparse.ArgumentParser, what: str = "") -> None:
    """--config and --set, the same for every command that builds a run config."""
    parser.add_argument("--config", help=f"{what}YAML config file or preset name (see `specrnn models list`)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config value, e.g. model.hidden=256 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="specrnn", description="Recurrent networks on audio spectrograms: train, evaluate, predict.")
    p.add_argument("--version", action="version", version=f"specrnn {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model; no DATA = the built-in demo data")
    t.add_argument("data", nargs="?", help="folder with one sub-folder per class, or a CSV manifest (path,label[,split,group,fold])")
    t.add_argument("--out", help="run folder to write (default runs/run-DATE-TIME)")
    _config_args(t)
    t.add_argument("--on-error", choices=["stop", "skip"], help="unusable audio: stop before training (default) or skip and list it")
    t.add_argument("--max-epochs", type=int, help="shortcut for --set train.max_epochs=N")
    t.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    t.add_argument("--seeds", type=_seed_list, help="train one run per seed (e.g. 0,1,2) and keep the one that validates "
                                                   "best (runs in OUT/seeds/); every seed uses the same split, drawn with "
                                                   "data.split_seed (default: the config's seed, 0)")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="metrics of a trained run on labelled data")
    e.add_argument("run_dir")
    e.add_argument("data", nargs="?", help="folder or CSV (default: the run's own test split)")
    e.add_argument("--split", help="split of DATA to use (default: test when DATA has a split column, else all rows)")
    e.add_argument("--on-error", choices=["stop", "skip"], default="stop")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    _decoding_args(e)
    e.set_defaults(func=_evaluate)

    r = sub.add_parser("predict", help="labels and probabilities for audio files")
    r.add_argument("run_dir", help="run folder made by `specrnn train` (or its model.pt)")
    r.add_argument("files", nargs="+", help="audio files (WAV, FLAC, OGG, MP3; any rate and channel count) or folders of them")
    r.add_argument("--top-k", type=_positive(int),
                   help="how many labels to show per file (default 3), or per chunk with --stream (default 1); "
                        "a CTC model: the K most probable sequences (default: the best path's only)")
    r.add_argument("--json", action="store_true", help="print JSON (one list; with --stream one object per line)")
    r.add_argument("--stream", action="store_true", help="feed each file in chunks and print the running top label(s)")
    r.add_argument("--chunk-ms", type=_positive(float), help="chunk length for --stream (default 100 ms, at least one frame)")
    r.add_argument("--enroll", nargs="+", action="extend", metavar="PATH",
                   help="models trained with model.normalize: group: recordings (files or folders, no labels) of the "
                        "speaker of FILES, whose mean features are removed (default: FILES themselves); put FILES "
                        "before --enroll")
    r.add_argument("--transcript", action="append", metavar="'TOK TOK ...'",
                   help="CTC models: where each token of this known transcript lies in the file (Viterbi forced "
                        "alignment); once per file, in order")
    _decoding_args(r)
    r.set_defaults(func=_predict)

    g = sub.add_parser("ngram", help="a token n-gram (ARPA file) from a manifest's token-sequence labels, for --lm")
    g.add_argument("data", help="CSV manifest whose labels are token sequences ('yes no no yes')")
    g.add_argument("--out", required=True, help="ARPA file to write")
    g.add_argument("--order", type=_positive(int), default=2, help="n (default 2: bigrams)")
    g.add_argument("--split", default="train", help="rows to count (default train; '' for all rows)")
    g.add_argument("--discount", type=float, default=0.5, help="absolute discount per seen n-gram (default 0.5)")
    g.set_defaults(func=_ngram)

    m = sub.add_parser("manifest", help="CSV manifest from file names, e.g. FSDD's {label}_{speaker}_{take}.wav")
    m.add_argument("dir")
    m.add_argument("--pattern", required=True, help="fields in braces, e.g. '{label}_{group}_{take}.wav' or '{label}/*'; {label} required; "
                   "{group} keeps a group in one split; a field holds no '_' when '_' follows it; {_} and * match anything")
    m.add_argument("--split-rule", action="append", help="FIELD OP VALUE=SPLIT, first match wins, e.g. 'take<5=test'; unmatched rows are train")
    m.add_argument("--out", help="CSV to write (default DIR/manifest.csv)")
    m.set_defaults(func=_manifest)

    c = sub.add_parser("cv", help="cross-validation: one training per fold (and seed), mean and std")
    c.add_argument("data", help="folder or CSV manifest")
    c.add_argument("--out", required=True, help="CV folder (re-running it resumes at the first unfinished run)")
    how = c.add_mutually_exclusive_group()
    how.add_argument("--fold-column", help="column holding the fold of each row (default: 'fold' when present)")
    how.add_argument("--folds", type=_at_least(2), help="stratified K-fold (group-aware with a group column; default 5)")
    how.add_argument("--leave-one-group-out", action="store_true", help="each group (e.g. speaker) is a test fold")
    c.add_argument("--group-column", help="use this column as the group (kept within one split)")
    c.add_argument("--seeds", type=_seed_list, default=[0], help="comma-separated seeds, e.g. 0,1,2")
    c.add_argument("--jobs", type=_positive(int), help="runs in parallel (default: cores / threads per run on CPU; "
                   "up to 6 sharing one GPU)")
    c.add_argument("--on-error", choices=["stop", "skip"], help="unusable audio: stop before training (default) or skip and list it")
    c.add_argument("--train-extra", metavar="PATH", help="folder or CSV manifest whose rows join every fold's training "
                   "part, never validation or test (e.g. synthetic speakers); with groups in DATA it needs its own groups")
    _config_args(c)
    c.set_defaults(func=_cv)

    u = sub.add_parser("tune", help="hyperparameter search (Optuna) on validation data; writes best.yaml")
    u.add_argument("data", help="folder or CSV manifest (test rows are never used)")
    u.add_argument("--out", required=True, help="study folder (re-running it resumes the study)")
    u.add_argument("--trials", type=_positive(int), default=20, help="total finished trials wanted (complete + pruned)")
    u.add_argument("--timeout", type=_positive(float), help="stop starting new trials after this many seconds")
    u.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/study.db)")
    u.add_argument("--space", help="search-space YAML (default: the built-in one; `specrnn models config search_space`)")
    u.add_argument("--jobs", type=_positive(int), help="processes running trials at once (default: cores / threads per run)")
    _config_args(u, "base ")
    u.set_defaults(func=_tune)

    h = sub.add_parser("report", help="a self-contained HTML report of a run or a CV folder")
    h.add_argument("path", help="run folder or CV folder")
    h.add_argument("--out", help="HTML file to write (default PATH/report.html)")
    h.set_defaults(func=_report)

    x = sub.add_parser("export", help="ONNX model of a run (offline, or a streaming step model), checked against PyTorch")
    x.add_argument("run_dir")
    x.add_argument("--out", required=True, help="ONNX file to write")
    x.add_argument("--streaming", action="store_true", help="a step model carrying RNN and pooling state (unidirectional)")
    x.add_argument("--enroll", nargs="+", action="extend", metavar="PATH",
                   help="models trained with model.normalize: group: one speaker's recordings (files or folders, no "
                        "labels); the ONNX model is that speaker's")
    x.set_defaults(func=_export)

    from .serve.command import add_arguments  # argparse only: the ASGI stack loads when the command runs

    add_arguments(sub.add_parser("serve", help="HTTP + WebSocket server with a web page (POST /predict, WS /stream, GET /)"),
                  _positive)

    z = sub.add_parser("models", help="list presets, or show one: layers, output shapes, parameters")
    z.add_argument("action", nargs="?", choices=["list", "show", "config"], default="list")
    z.add_argument("name", nargs="?", help="preset name or YAML file")
    z.add_argument("--set", action="append", metavar="KEY=VALUE")
    z.add_argument("--classes", type=int, default=10, help="classes (tokens for CTC) the head scores (default 10)")
    z.set_defaults(func=_models)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spin-waiting on shared cores
    from .errors import Interrupted, SpecrnnError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (Interrupted, KeyboardInterrupt) as e:
        print(f"specrnn: {_interrupted(args, e)}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `specrnn ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except SpecrnnError as e:
        print(f"specrnn: error: {e}", file=sys.stderr)
        return 2


def _interrupted(args, e: BaseException) -> str:
    """What an interrupted command kept, and how to go on."""
    from .errors import Interrupted

    if args.command in ("cv", "tune"):
        kept = "finished runs are kept" if args.command == "cv" else "the study's finished trials are kept"
        return f"interrupted; {kept}: rerun the same command to resume"
    if isinstance(e, Interrupted):
        return str(e)
    if args.command == "train" and getattr(args, "out", None):
        return f"interrupted; resume with: specrnn train --resume --out {args.out}"
    return "interrupted"


if __name__ == "__main__":
    sys.exit(main())
