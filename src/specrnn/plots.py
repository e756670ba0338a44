"""PNG plots for people: learning curves, confusion matrix, spectrograms with attention."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    """PNG to a path (atomically) or to a binary file object."""
    import io

    from .files import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    if hasattr(path, "write"):
        path.write(buf.getvalue())
    else:
        atomic_write_bytes(path, buf.getvalue())
    _plt().close(fig)


def learning_curves(history_csv: str | Path, out: str | Path) -> None:
    with open(history_csv) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    plt = _plt()
    ep = [int(r["epoch"]) for r in rows]
    col = lambda k: [float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows]  # noqa: E731
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(ep, col("train_loss"), label="train loss")
    a.plot(ep, col("val_loss"), label="val loss")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(), a.grid(alpha=0.3)
    b.plot(ep, [100 * v for v in col("val_acc")], label="val accuracy", color="C2")
    b.set_xlabel("epoch"), b.set_ylabel("accuracy (%)"), b.legend(), b.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("learning curves")
    _save(fig, out)


def confusion_matrix(matrix: np.ndarray, classes: list[str], out: str | Path, title: str = "confusion matrix") -> None:
    plt = _plt()
    n = len(classes)
    size = min(4 + 0.45 * n, 22)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(title)
    if n <= 30:
        hi = matrix.max() if matrix.size else 0
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if matrix[i, j] > hi / 2 else "black")
    _save(fig, out)


def spectrogram(features: np.ndarray, out, title: str = "", attention: np.ndarray | None = None,
                frame_seconds: float | None = None, ylabel: str = "bin") -> None:
    """(T, F) features as an image, over seconds when `frame_seconds` is given; attention weights (T',) under it."""
    plt = _plt()
    rows = 2 if attention is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(6, 3 if rows == 1 else 4), squeeze=False, sharex=False,
                             gridspec_kw={"height_ratios": [3, 1][:rows]})
    end = features.shape[0] * (frame_seconds or 1)
    axes[0, 0].imshow(features.T, origin="lower", aspect="auto", cmap="magma", extent=(0, end, 0, features.shape[1]))
    axes[0, 0].set_ylabel(ylabel), axes[0, 0].set_title(title, fontsize=9)
    if attention is not None:
        t = np.linspace(0, end, len(attention))
        axes[1, 0].plot(t, attention), axes[1, 0].set_xlim(0, end), axes[1, 0].set_ylabel("attention")
    axes[-1, 0].set_xlabel("time (s)" if frame_seconds else "frame")
    _save(fig, out)
