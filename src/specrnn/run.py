"""The run folder: atomic writes, and the model file that holds everything `predict` needs.

model.pt loads with `torch.load(weights_only=True)`: tensors plus a JSON string (config, class names),
so opening a model file never runs code.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import SpecrnnError

MODEL_FILE = "model.pt"
FORMAT = "specrnn-model"
FORMAT_VERSION = 1


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_model(path: str | Path, state_dict: dict, meta: dict) -> None:
    """Weights + JSON metadata (config, classes, epoch), written atomically."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(
        {"format": FORMAT, "version": FORMAT_VERSION, "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
         "meta": json.dumps(meta)},
        buf,
    )
    atomic_write_bytes(path, buf.getvalue())


def load_model_file(path: str | Path) -> tuple[dict, dict]:
    """(state_dict, meta) from a model file, refusing anything that is not plain tensors and strings."""
    import pickle

    import torch

    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise SpecrnnError(f"{path}: no model file (is this a run folder made by `specrnn train`?)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise SpecrnnError(f"{path}: refused to load: the file holds objects other than tensors ({str(e).splitlines()[0]})") from None
    except Exception as e:
        raise SpecrnnError(f"{path}: not a readable model file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise SpecrnnError(f"{path}: not a specrnn model file")
    if blob.get("version", 0) > FORMAT_VERSION:
        raise SpecrnnError(f"{path}: made by a newer specrnn (format {blob['version']}); upgrade specrnn")
    return blob["state_dict"], json.loads(blob["meta"])
