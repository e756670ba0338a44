"""ONNX export of a trained model: the offline model (features, lengths) -> logits with dynamic batch and time,
and a streaming step model (feature chunk, carried states) -> (running logits, states), each traced from the
graphs in `inference.graphs` and checked with onnxruntime against PyTorch (`inference.onnx_stream` drives the
streaming one). The exported time axis is a multiple of `time_multiple` (stack x CNN time strides; metadata key of the same
name): pad with anything, `lengths` say what is real, and the padding-exact model ignores the rest.
onnx and onnxruntime are imported only inside the functions that need them.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch

from .errors import SpecrnnError
from .files import check_output_file
from .inference.graphs import OfflineGraph, StreamingStep, pad_time, time_multiple
from .inference.onnx_stream import OnnxStreamingClassifier, metadata, session
from .inference.streaming import StreamingClassifier
from .models.build import SpecRNN

__all__ = ["export_offline", "export_streaming", "export_run", "check_offline", "check_streaming", "session",
           "metadata", "OnnxStreamingClassifier"]

ONNX_MARK = "specrnn"  # the model's doc_string starts with it

OPSET = 18
TESTED_TORCH = "2.13"  # the exporter's behaviour changes between releases: the one the tests passed on


# ---------------------------------------------------------------- export
def _meta(model: SpecRNN, cfg, classes: list[str], kind: str, extra: dict | None = None) -> dict[str, str]:
    meta = {"specrnn_kind": kind, "classes": json.dumps(classes), "features": json.dumps(cfg.features.__dict__),
            "stack": str(model.cfg.stack), "multilabel": json.dumps(cfg.task.kind == "multilabel"),
            "head": "ctc" if model.blank is not None else model.cfg.head}
    if model.blank is not None:  # frame outputs over the tokens, then the CTC blank
        meta["blank"] = str(model.blank)
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    return meta


def _save(program, path: Path, meta: dict[str, str]) -> None:
    """The ONNX model with our metadata, written atomically."""
    from .files import atomic_write_bytes

    proto = program.model_proto
    proto.doc_string = f"{ONNX_MARK} {meta['specrnn_kind']} model"  # near the file's start: check_output_file reads it
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    atomic_write_bytes(path, proto.SerializeToString())


def _time_dim(multiple: int, name: str = "time", least: int = 1):
    t = torch.export.Dim(name, min=least, max=1 << 20)
    return t if multiple == 1 else multiple * t


@contextlib.contextmanager
def _quiet_export():
    """The exporter's warnings and log lines (e.g. 'torchvision is not installed. Skipping torchvision::nms') say
    nothing about the user's model: silence them; parity is checked separately."""
    import logging
    import warnings

    log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            yield
    except Exception as e:  # torch.export's own report runs to a page; say what failed and what to do
        cause = str(e.__cause__ or e).strip().splitlines()
        older = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 13)
        advice = ("torch 2.11's exporter fails on recurrent layers: export with torch 2.13 or 2.14" if older
                  else f"specrnn's export is tested with torch {TESTED_TORCH}")
        raise SpecrnnError(f"torch {torch.__version__} could not export this model to ONNX "
                           f"({cause[0] if cause else type(e).__name__}); {advice}") from e
    finally:
        log.setLevel(level)


_exports_in_this_process = 0


def _in_fresh_process(kind: str, model: SpecRNN, path: Path, cfg, classes: list[str], extra: dict) -> bool:
    """torch.export (PyTorch 2.13) carries state from one export to the next in a process: a second streaming
    export of a GRU model failed inside its GRU decomposition, and a second CNN step model came out with its time
    axis fixed. The first export of a process is right, so every later one runs in a new process (weights and
    config pass through a temporary model file). Returns True when it did."""
    global _exports_in_this_process
    _exports_in_this_process += 1
    if _exports_in_this_process == 1:
        return False
    import os
    import subprocess
    import sys
    import tempfile

    from .files import save_model

    from .tasks import with_kind

    cfg = with_kind(cfg, "ctc" if model.blank is not None else "classification")  # a model built by hand: from its outputs
    with tempfile.TemporaryDirectory() as folder:
        save_model(Path(folder) / "model.pt", model.state_dict(), {"config": cfg.to_dict(), "classes": list(classes), "epoch": 0})
        code = "import sys; from specrnn.export import _export_saved; _export_saved(*sys.argv[1:])"
        r = subprocess.run([sys.executable, "-c", code, kind, folder, str(path.resolve()), json.dumps(extra)],
                           capture_output=True, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")))
    if r.returncode:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise SpecrnnError(f"ONNX export ({kind}) failed in its process: {last}")
    return True


def _export_saved(kind: str, folder: str, path: str, extra: str) -> None:
    """The child side of `_in_fresh_process`: load the model file and export it here."""
    from .inference import Predictor

    p = Predictor.load(folder, device="cpu")
    (export_streaming if kind == "streaming" else export_offline)(p.model.eval(), path, p.cfg, p.classes, json.loads(extra))


def export_offline(model: SpecRNN, path: str | Path, cfg, classes: list[str], extra: dict | None = None) -> Path:
    """(features (B, T, F) float32, lengths (B,) int64) -> logits (B, C); B and T dynamic, T a multiple of
    `time_multiple(model)`. `extra`: more metadata (JSON values)."""
    path, extra = Path(path), extra or {}
    graph = OfflineGraph(model)
    if _in_fresh_process("offline", model, path, cfg, classes, extra):
        return path
    n_feat, mult = model.normalizer.mean.shape[0], time_multiple(model)
    T0 = 11 * mult  # short (the exporter unrolls RNNs over it while tracing), and no size of 0 or 1 to special-case
    x, lengths = torch.randn(3, T0, n_feat), torch.tensor([T0, T0 // 2, 3])
    batch = torch.export.Dim("batch", min=1, max=65536)
    outputs = ["logits"] if model.pooling is not None else ["logits", "frame_lengths"]
    with _quiet_export():
        program = torch.onnx.export(graph, (x, lengths), None, dynamo=True, opset_version=OPSET, verbose=False,
                                    input_names=["features", "lengths"], output_names=outputs,
                                    dynamic_shapes=({0: batch, 1: _time_dim(mult)}, {0: batch}))
    _save(program, path, _meta(model, cfg, classes, "offline", {"time_multiple": mult, **extra}))
    return path


def export_streaming(model: SpecRNN, path: str | Path, cfg, classes: list[str], extra: dict | None = None) -> Path:
    """(features (1, t, F), length (1,), *states) -> (logits, *states_out); t dynamic, a multiple of the stack.
    The states' names, shapes, dtypes and initial values are in the model's metadata ('states'). `extra`: more
    metadata (JSON values)."""
    path, extra = Path(path), extra or {}
    step = StreamingStep(model)  # refuses what cannot stream, before any work
    if _in_fresh_process("streaming", model, path, cfg, classes, extra):
        return path
    spec = step.state_spec()
    n_feat, mult = model.normalizer.mean.shape[0], time_multiple(model)
    T0 = (step.junk + 5) * mult
    x = torch.randn(1, T0, n_feat)
    names = [s["name"] for s in spec]
    with _quiet_export():
        program = torch.onnx.export(step, (x, torch.tensor([T0]), step.initial_states()), None, dynamo=True,
                                    opset_version=OPSET, verbose=False, input_names=["features", "length", *names],
                                    output_names=["logits", *(["valid"] if step.m.pooling is None and step.cnn else []),
                                                  *[n + "_out" for n in names]],
                                    dynamic_shapes={"features": {1: _time_dim(mult, least=step.junk + 1)}, "length": None,
                                                    "states": [None] * len(spec)})
    meta = _meta(model, cfg, classes, "streaming", {"states": spec, "frame_head": model.pooling is None, "time_multiple": mult,
                                                    "cnn": step.cnn, "junk": step.junk, **extra})
    _save(program, path, meta)
    return path


# ---------------------------------------------------------------- parity checks
def _random_features(model: SpecRNN, lengths: list[int], seed: int) -> np.ndarray:
    """Features shaped like the training data: the normaliser's mean and std, plus noise."""
    g = np.random.default_rng(seed)
    mean, std = model.normalizer.mean.numpy(), model.normalizer.std.numpy()
    x = (mean + std * g.standard_normal((len(lengths), max(lengths), len(mean)))).astype(np.float32)
    for i, n in enumerate(lengths):
        x[i, n:] = 0.0
    return x


def check_offline(model: SpecRNN, path: str | Path, batch: int = 8, max_len: int = 300, seed: int = 0) -> float:
    """Max |onnxruntime - PyTorch| of the logits on a padded batch of random lengths."""
    from .tasks.classification import clip_logits

    g = np.random.default_rng(seed)
    lengths = [max_len] + g.integers(1, max_len + 1, batch - 1).tolist()
    x = pad_time(_random_features(model, lengths, seed), time_multiple(model))
    L = np.array(lengths, dtype=np.int64)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x), torch.from_numpy(L))
    outs = session(path).run(None, {"features": x, "lengths": L})
    if isinstance(ref, tuple):  # frame head: compare the per-clip average of real frames
        got = clip_logits((torch.from_numpy(outs[0]), torch.from_numpy(outs[1]))).numpy()
        ref = clip_logits(ref).numpy()
    else:
        got, ref = outs[0], ref.numpy()
    return float(np.abs(got - ref).max())


def check_streaming(model: SpecRNN, path: str | Path, frames: int = 97, chunk: int = 10, seed: int = 0) -> float:
    """Max |onnxruntime - PyTorch StreamingClassifier| of the running logits over a stream in chunks, and at the end."""
    x = _random_features(model, [frames], seed)[0]
    ours = OnnxStreamingClassifier(path)
    ref = StreamingClassifier(model.eval(), classes=ours.classes)
    diff = 0.0
    for s in range(0, frames, chunk):
        ref.push_features(x[s : s + chunk])
        ours.push_features(x[s : s + chunk])
        if ref.logits() is not None:
            diff = max(diff, float(np.abs(ours.logits() - ref.logits().numpy()).max()))
    ref.finish()
    ours.finish()
    if ref.ctc is not None and ours.tokens() != ref.tokens():
        raise SpecrnnError(f"{path}: the streaming ONNX model decodes {ours.tokens()}, PyTorch {ref.tokens()}")
    return max(diff, float(np.abs(ours.logits() - ref.logits().numpy()).max()))


def export_run(run_dir: str | Path, out: str | Path, streaming: bool = False, check: bool = True,
               enroll: list[str] | None = None) -> dict:
    """Export a run folder's model to ONNX; with onnxruntime installed, check it against PyTorch. A per-speaker
    model (model.normalize: group) is exported for one speaker, enrolled from `enroll` (recordings, no labels)."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise SpecrnnError(f"ONNX export needs onnx and onnxscript ({e}); pip install 'specrnn[export]'") from None
    from .inference import Predictor

    check_output_file(out, (".onnx",), ONNX_MARK.encode(), "ONNX model")
    pred = Predictor.load(run_dir, device="cpu")
    model = pred.model.eval()
    if pred.cfg.model.normalize == "group":
        if not enroll:
            raise SpecrnnError("this model normalises per speaker (model.normalize: group): export it for one speaker, "
                               "with --enroll THEIR_RECORDINGS (no labels needed); their mean is built into the ONNX model")
        model = pred.enroll(enroll).enrolled_model()
        cfg = pred.cfg.model_copy(update={"model": model.cfg})  # what the graph now is: a `global` model
        extra = {"enrolled_clips": pred.enrolled}  # one speaker's model, and from how much audio
    elif enroll:
        raise SpecrnnError(f"--enroll: this model normalises with '{pred.cfg.model.normalize}', not per speaker; "
                           "it needs no enrolment (drop --enroll)")
    else:
        cfg, extra = pred.cfg, {}
    export = export_streaming if streaming else export_offline
    path = export(model, out, cfg, pred.classes, extra)
    report = {"path": str(path), "kind": "streaming" if streaming else "offline", "bytes": Path(path).stat().st_size}
    if extra:
        report["enrolled"] = pred.enrolled
    if check:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            report["check"] = "skipped: onnxruntime is not installed"
            return report
        report["max_abs_diff"] = (check_streaming if streaming else check_offline)(model, path)
    return report
