"""Files a run writes: atomic writes, and the model and checkpoint files, checksummed and loaded without running code.

model.pt loads with `torch.load(weights_only=True)`: tensors plus a JSON string (config, class names) and a
checksum of both, so opening a model file never runs code and a corrupt one is refused by name.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from .errors import SpecrnnError

MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoints/last.ckpt"
FORMAT = "specrnn-model"
FORMAT_VERSION = 1
CHECKSUM_KEY = "specrnn_checksum"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide run folders from other users


def atomic_write_bytes(path: str | Path, data, durable: bool = True) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a reader never sees half a file. `data`: bytes,
    or an iterable of byte buffers written one after another (never joined in memory).
    `durable=False` skips the fsyncs (still atomic) for files that can be rebuilt, like feature-store shards:
    6,000 fsyncs took 8-19 s of a 25 s FSDD feature pass."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _FILE_MODE)
            for part in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                f.write(part)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power cut after it keeps the new file); not possible everywhere."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def check_output_file(path: str | Path, suffixes: tuple[str, ...], ours: bytes, what: str, flag: str = "--out") -> Path:
    """An output file's name before anything is computed: it must end in one of `suffixes`, its folder must exist,
    and an existing file is only replaced when its first 4 KB hold `ours` (a file specrnn wrote), never a user's."""
    path = Path(path)
    if path.is_dir():
        raise SpecrnnError(f"{flag} {path}: a folder is there; give the {what}'s file name, e.g. {path / ('out' + suffixes[0])}")
    if path.suffix.lower() not in suffixes:
        raise SpecrnnError(f"{flag} {path}: the {what} needs a {' or '.join(suffixes)} name")
    if not path.parent.is_dir():
        raise SpecrnnError(f"{flag} {path}: no such folder {path.parent}")
    if path.exists():
        with open(path, "rb") as f:
            head = f.read(4096)
        if ours not in head:
            raise SpecrnnError(f"{flag} {path}: a file is there that specrnn did not write; it is left alone "
                               "(remove it or choose another name)")
    return path


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# ---------------------------------------------------------------- checksums of loaded content
def content_digest(obj) -> str:
    """BLAKE2b of a nested structure of dicts, lists, tensors and plain values, as loaded (so it checks the bytes
    that matter, whatever the container format); dict order does not count."""
    import torch

    h = hashlib.blake2b(digest_size=16)

    def feed(o) -> None:
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(o, dict):
            h.update(b"D%d;" % len(o))
            for k in sorted(o, key=repr):
                feed(k)
                feed(o[k])
        elif isinstance(o, (list, tuple)):
            h.update(b"L%d;" % len(o))
            for x in o:
                feed(x)
        elif isinstance(o, (set, frozenset)):  # iteration order of a set of strings changes between processes
            h.update(b"S%d;" % len(o))
            for x in sorted(o, key=repr):
                feed(x)
        else:
            h.update(f"P{type(o).__name__}:{o!r};".encode())

    feed(obj)
    return h.hexdigest()


def _torch_load(path: Path, what: str, hint: str):
    """torch.load(weights_only=True) with every failure turned into a SpecrnnError naming the file."""
    import pickle

    import torch

    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise SpecrnnError(f"{path}: no such {what}") from None
    except OSError as e:
        raise SpecrnnError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    if head and not head.startswith((b"PK\x03\x04", b"\x80")):  # neither torch.save's zip nor a pickle: e.g. a WAV
        raise SpecrnnError(f"{path}: not a {what} (not a PyTorch file; it starts {head!r}); {hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"(?:unsupported|Unsupported global:)\s*(GLOBAL \S+)", str(e))
        raise SpecrnnError(f"{path}: refused to load: the {what} holds objects other than tensors and plain values "
                           f"({found.group(1) if found else 'an unsupported pickle'}), which could run code; "
                           f"never load it with plain torch.load unless you trust its source") from None
    except FileNotFoundError:
        raise SpecrnnError(f"{path}: no such {what}") from None
    except Exception as e:
        detail = str(e).split(". ")[0].splitlines()[0][:200] if str(e) else ""
        raise SpecrnnError(f"{path}: corrupt or truncated {what}: cannot be read ({type(e).__name__}: {detail}); {hint}") from None


# ---------------------------------------------------------------- model file
def save_model(path: str | Path, state_dict: dict, meta: dict) -> None:
    """Weights + JSON metadata (config, classes, epoch) + their checksum, written atomically."""
    import io

    import torch

    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    meta_json = json.dumps(meta)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, "state_dict": state, "meta": meta_json,
                "checksum": content_digest({"state_dict": state, "meta": meta_json})}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_model_file(path: str | Path) -> tuple[dict, dict]:
    """(state_dict, meta) from a model file, refusing anything that is not plain tensors and strings, or corrupt."""
    path = Path(path)
    if not path.exists() and not path.suffix:
        raise SpecrnnError(f"{path}: no such run folder")
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise SpecrnnError(f"{path}: no model file (is this a run folder made by `specrnn train`?)")
    blob = _torch_load(path, "model file", "retrain, or restore it from a copy")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise SpecrnnError(f"{path}: not a specrnn model file")
    if blob.get("version", 0) > FORMAT_VERSION:
        raise SpecrnnError(f"{path}: made by a newer specrnn (format {blob['version']}); upgrade specrnn")
    if "checksum" in blob and content_digest({"state_dict": blob["state_dict"], "meta": blob["meta"]}) != blob["checksum"]:
        raise SpecrnnError(f"{path}: corrupt model file (checksum mismatch); retrain, or restore it from a copy")
    try:
        return blob["state_dict"], json.loads(blob["meta"])
    except (KeyError, TypeError, ValueError) as e:
        raise SpecrnnError(f"{path}: corrupt model file ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------- training checkpoints (Lightning's dict)
def checkpoint_bytes(checkpoint: dict) -> bytes:
    """A Lightning checkpoint dict serialised with its checksum added."""
    import io

    import torch

    data = {k: v for k, v in checkpoint.items() if k != CHECKSUM_KEY}
    data[CHECKSUM_KEY] = content_digest(data)
    buf = io.BytesIO()
    torch.save(data, buf)
    return buf.getvalue()


def load_checkpoint_file(path: str | Path) -> dict:
    """A training checkpoint, loaded without running code and checked against its checksum (SpecrnnError if bad)."""
    path = Path(path)
    hint = "delete it to restart this run's training from the first epoch, or start a new run"
    ckpt = _torch_load(path, "checkpoint", hint)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise SpecrnnError(f"{path}: not a training checkpoint; {hint}")
    expected = ckpt.pop(CHECKSUM_KEY, None)  # None: written before checksums (still loaded without running code)
    if expected is not None and content_digest(ckpt) != expected:
        raise SpecrnnError(f"{path}: corrupt checkpoint (checksum mismatch); {hint}")
    return ckpt
