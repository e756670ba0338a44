"""Metrics for a set of predictions: accuracy, macro-F1, per-class precision/recall/F1, confusion matrix."""
from __future__ import annotations

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = sorted(set(np.asarray(y_true).tolist()))
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if len(y_true) else float("nan"),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)) if len(y_true) else float("nan"),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str], threshold: float = 0.5) -> dict:
    """Multi-label: exact-match accuracy, macro-F1 and mAP over classes, per-class precision/recall/F1/AP."""
    from sklearn.metrics import average_precision_score, f1_score, precision_recall_fscore_support

    pred = (probs >= threshold).astype(int)
    true = (np.asarray(y_true) > 0.5).astype(int)
    p, r, f, s = precision_recall_fscore_support(true, pred, zero_division=0)
    ap = [float(average_precision_score(true[:, i], probs[:, i])) if true[:, i].any() else float("nan") for i in range(len(classes))]
    return {
        "n": int(len(true)),
        "accuracy": float((pred == true).all(1).mean()) if len(true) else float("nan"),
        "macro_f1": float(f1_score(true, pred, average="macro", zero_division=0)),
        "mAP": float(np.nanmean(ap)) if len(ap) else float("nan"),
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i]),
                          "ap": ap[i]} for i, c in enumerate(classes)},
        "classes": list(classes),
    }


def edit_distance(a: list, b: list) -> int:
    """Levenshtein distance (substitutions, insertions, deletions) between two token lists."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def edit_operations(ref: list, hyp: list) -> tuple[list[tuple], int, int]:
    """One least-edit alignment of hyp to ref: its substitutions as (true, predicted) pairs, its insertions and its
    deletions (their total is the edit distance)."""
    n, m = len(ref), len(hyp)
    d = np.zeros((n + 1, m + 1), dtype=np.int64)
    d[:, 0], d[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]))
    subs, ins, dels, i, j = [], 0, 0, n, m
    while i or j:  # back from the end: a match or substitution first, then a deletion, then an insertion
        if i and j and d[i, j] == d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            if ref[i - 1] != hyp[j - 1]:
                subs.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i and d[i, j] == d[i - 1, j] + 1:
            dels, i = dels + 1, i - 1
        else:
            ins, j = ins + 1, j - 1
    return subs[::-1], ins, dels


def sequence_metrics(refs: list[list[int]], hyps: list[list[int]], tokens: list[str], paths: list[str] | None = None,
                     keep_errors: int = 50) -> dict:
    """Token sequences (CTC): exact-sequence accuracy, token error rate (edits / reference tokens, the WER when
    tokens are words) split into substitutions, insertions and deletions, which tokens were substituted for which
    (`substitutions`: true -> predicted -> count), and the first `keep_errors` wrong sequences."""

    ops = [edit_operations(r, h) for r, h in zip(refs, hyps)]
    edits = [len(s) + i + d for s, i, d in ops]
    n_tokens = sum(len(r) for r in refs)
    confused: dict[str, dict[str, int]] = {}
    for s, _, _ in ops:
        for t, p in s:
            row = confused.setdefault(tokens[t], {})
            row[tokens[p]] = row.get(tokens[p], 0) + 1
    words = lambda seq: " ".join(tokens[t] for t in seq)  # noqa: E731
    wrong = [i for i, e in enumerate(edits) if e]
    return {
        "n": len(refs),
        "accuracy": float(np.mean([e == 0 for e in edits])) if refs else float("nan"),
        "token_error_rate": sum(edits) / n_tokens if n_tokens else float("nan"),
        "tokens": n_tokens,
        "sequence_error_rate": float(np.mean([e > 0 for e in edits])) if refs else float("nan"),
        "substitution_count": sum(len(s) for s, _, _ in ops),
        "insertion_count": sum(i for _, i, _ in ops),
        "deletion_count": sum(d for _, _, d in ops),
        "substitutions": confused,
        "empty_decodings": sum(not h for h in hyps),  # clips where only blanks won: untrained or far too short
        "classes": list(tokens),
        "errors": [{"path": paths[i] if paths else str(i), "true": words(refs[i]), "predicted": words(hyps[i]),
                    "edits": edits[i]} for i in wrong[:keep_errors]],
    }


def format_metrics(m: dict, title: str = "") -> str:
    """A one-screen text report."""
    lines = [title] if title else []
    if "token_error_rate" in m:  # a CTC task's metrics (tasks.task_of_metrics; this module sits below tasks)
        lines.append(f"n={m['n']}  sequences right={100 * m['accuracy']:.2f}%  token error rate={100 * m['token_error_rate']:.2f}% "
                     f"(over {m['tokens']} tokens)")
        if "substitution_count" in m:
            lines.append(f"  sequence error rate {100 * m['sequence_error_rate']:.2f}%; edits: {m['substitution_count']} "
                         f"substitutions, {m['insertion_count']} insertions, {m['deletion_count']} deletions")
            pairs = sorted(((n, t, p) for t, row in m["substitutions"].items() for p, n in row.items()), reverse=True)
            if pairs:
                lines.append("  substituted (true -> decoded): " + ", ".join(f"{t} -> {p} x{n}" for n, t, p in pairs[:10]))
        lines += [f"  {e['path']}: true '{e['true']}', decoded '{e['predicted']}'" for e in m["errors"][:10]]
        return "\n".join(lines)
    lines.append(f"n={m['n']}  accuracy={100 * m['accuracy']:.2f}%  macro-F1={100 * m['macro_f1']:.2f}% (over the classes present)")
    width = max(len(c) for c in m["classes"])
    lines.append(f"  {'class':<{width}}  {'precision':>9}  {'recall':>6}  {'f1':>6}  {'support':>7}")
    for c, v in m["per_class"].items():
        if not v["support"] and not v["precision"]:  # a class absent from this data: nothing to measure
            lines.append(f"  {c:<{width}}  {'–':>9}  {'–':>6}  {'–':>6}  {0:7d}")
            continue
        lines.append(f"  {c:<{width}}  {100 * v['precision']:8.1f}%  {100 * v['recall']:5.1f}%  {100 * v['f1']:5.1f}%  {v['support']:7d}")
    cm = np.asarray(m.get("confusion_matrix", []))
    if cm.size and len(m["classes"]) <= 12:
        lines.append("  confusion matrix (rows: true, columns: predicted)")
        for c, row in zip(m["classes"], cm):
            lines.append(f"  {c:<{width}} " + " ".join(f"{v:4d}" for v in row))
    return "\n".join(lines)
