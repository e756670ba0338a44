"""ONNX export of a trained model: the offline model (features, lengths) -> logits with dynamic batch and time,
and a streaming step model (feature chunk, carried states) -> (running logits, states), with a small Python
driver for onnxruntime that matches `StreamingClassifier`.

The graphs are rebuilt here from the model's own modules with export-friendly shape code, because the dynamo
exporter cannot trace pack_padded_sequence, records an RNN's output with the traced (fixed) time length (so every
RNN output is sliced to the input's symbolic length before use), and fails on a GRU whose time axis is a derived
size such as ceil(T/stack) or a strided convolution's output.
So the exported time axis is a multiple of `time_multiple` (stack x CNN time strides; metadata key of the same
name): pad with anything, `lengths` say what is real, and the padding-exact model ignores the rest.
onnx and onnxruntime are imported only inside the functions that need them.
"""
from __future__ import annotations

import contextlib

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .errors import SpecrnnError
from .models.build import SpecRNN

OPSET = 18


# ---------------------------------------------------------------- shared graph pieces
def time_multiple(model: SpecRNN) -> int:
    """The exported time axis is a multiple of this: frame stacking times the CNN front-end's time strides."""
    m = max(1, model.cfg.stack)
    for block in model.frontend.blocks if model.frontend is not None else []:
        m *= block.stride
    return m


def stack_exact(x: Tensor, k: int) -> Tensor:
    """(B, T, F) -> (B, T/k, k*F) for T a multiple of k: `stack_frames` with no branch on T."""
    if k <= 1:
        return x
    B, T, Fd = x.shape
    return x.reshape(B, T // k, k * Fd)


def pad_time(x: np.ndarray, multiple: int, axis: int = 1) -> np.ndarray:
    """Zero-pad the time axis up to a multiple (the exported models' input contract)."""
    extra = (-x.shape[axis]) % multiple
    if not extra:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return np.pad(x, widths)


def exact_encoder(enc: nn.Module, x: Tensor, lengths: Tensor) -> Tensor:
    """`RNNEncoder.forward` (padded-exact): the backward direction reads each clip reversed within its length."""
    B, T = x.shape[0], x.shape[1]
    t = torch.arange(T, device=x.device)[None, :]
    L = lengths[:, None]
    real = t < L
    rev_idx = torch.where(real, L - 1 - t, t)  # an involution: the same index undoes it
    rows = torch.arange(B, device=x.device)[:, None]
    keep = real[..., None]
    for layer, fwd in enumerate(enc.fwd):
        out = fwd(x)[0][:, :T]  # the slice gives the RNN output a symbolic time axis again (see the module doc)
        if enc.bidirectional:
            rev = enc.bwd[layer](x[rows, rev_idx])[0][:, :T]
            out = torch.cat([out, rev[rows, rev_idx]], dim=-1)
        x = out.masked_fill(~keep, 0.0)
        if layer < len(enc.between):
            x = enc.between[layer](x).masked_fill(~keep, 0.0)
    return x


def _check_model(model: SpecRNN) -> None:
    if model.cfg.rnn_impl == "naive":
        raise SpecrnnError("rnn_impl 'naive' (the known-wrong seed recipe) is not exported; export a padding-exact model")


class OfflineGraph(nn.Module):
    """The whole model for export: normaliser -> stack -> front-end -> exact RNN -> pooling -> head."""

    def __init__(self, model: SpecRNN):
        super().__init__()
        _check_model(model)
        self.m = model.eval()

    def forward(self, features: Tensor, lengths: Tensor):
        m, k = self.m, self.m.cfg.stack
        x = stack_exact(m.normalizer(features, lengths), k)
        lengths = (lengths + k - 1) // k
        if m.frontend is not None:
            x, lengths = m.frontend(x, lengths)
        h = exact_encoder(m.encoder, x, lengths)
        if m.pooling is None:
            return m.head(h), lengths
        pooled, _ = m.pooling(h, lengths)
        return m.head(pooled)


# ---------------------------------------------------------------- streaming step
def streaming_unsupported(model: SpecRNN) -> str | None:
    """Why this model cannot be exported for streaming, or None."""
    c = model.cfg
    if c.bidirectional:
        return "a bidirectional RNN reads each clip backwards from its end, so it cannot stream"
    if c.normalize == "utterance":
        return "utterance normalisation needs the whole clip's statistics"
    if c.pooling in ("dot", "padded_last") or c.rnn_impl == "naive":
        return f"pooling '{c.pooling}' needs the whole clip"
    if model.frontend is not None:
        return "the CNN front-end is not supported by the streaming export yet (the PyTorch StreamingClassifier streams it)"
    return None


class StreamingStep(nn.Module):
    """One streaming step: raw feature frames (1, t, F), their real count (1,) and carried states -> running
    logits and new states. t is a multiple of `stack`; only a stream's final call may hold fewer real frames
    (the rest is zeroed after normalisation, as offline). Clip head: logits (1, C) of everything seen so far;
    frame head: (1, t/stack, C)."""

    def __init__(self, model: SpecRNN):
        super().__init__()
        why = streaming_unsupported(model)
        if why:
            raise SpecrnnError(f"cannot export this model for streaming: {why}")
        self.m = model.eval()
        self.lstm = model.cfg.cell == "lstm"
        self.mode = None if model.pooling is None else model.pooling.mode

    def state_spec(self) -> list[dict]:
        """Name, shape, dtype and initial value of every carried state, in input order."""
        enc, H = self.m.encoder, self.m.encoder.hidden
        n, D = len(enc.fwd), enc.output_size
        spec = [dict(name="h", shape=[n, 1, H], dtype="float32", init=0.0)]
        if self.lstm:
            spec.append(dict(name="c", shape=[n, 1, H], dtype="float32", init=0.0))
        heads = self.m.pooling.attention.heads if self.mode == "attention" else 1
        spec += {
            "mean": [dict(name="pool_sum", shape=[1, D], dtype="float64", init=0.0),
                     dict(name="pool_n", shape=[1, 1], dtype="float64", init=0.0)],
            "meanstd": [dict(name="pool_sum", shape=[1, D], dtype="float64", init=0.0),
                        dict(name="pool_sumsq", shape=[1, D], dtype="float64", init=0.0),
                        dict(name="pool_n", shape=[1, 1], dtype="float64", init=0.0)],
            "max": [dict(name="pool_max", shape=[1, D], dtype="float32", init=-math.inf)],
            "attention": [dict(name="att_max", shape=[1, heads], dtype="float32", init=-math.inf),
                          dict(name="att_den", shape=[1, heads], dtype="float32", init=0.0),
                          dict(name="att_num", shape=[1, heads, D], dtype="float32", init=0.0)],
        }.get(self.mode, [])
        return spec

    def initial_states(self) -> list[Tensor]:
        dt = {"float32": torch.float32, "float64": torch.float64}
        return [torch.full(s["shape"], s["init"], dtype=dt[s["dtype"]]) for s in self.state_spec()]

    def forward(self, features: Tensor, length: Tensor, states: list[Tensor]):
        m, k = self.m, self.m.cfg.stack
        x = stack_exact(m.normalizer(features, length), k)
        h0, rest = states[0], list(states[1:])
        c0 = rest.pop(0) if self.lstm else None
        hs, cs = [], []
        T = x.shape[1]
        for layer, rnn in enumerate(m.encoder.fwd):
            if self.lstm:
                x, (h, c) = rnn(x, (h0[layer : layer + 1], c0[layer : layer + 1]))
                cs.append(c)
            else:
                x, h = rnn(x, h0[layer : layer + 1])
            x = x[:, :T]  # keeps the time axis symbolic for the next layer (see the module doc)
            hs.append(h)
            if layer < len(m.encoder.between):
                x = m.encoder.between[layer](x)
        new = [torch.cat(hs, 0)] + ([torch.cat(cs, 0)] if self.lstm else [])
        if self.mode is None:
            return (m.head(x), *new)
        pooled, pool_state = self._pool(x, rest)
        return (m.head(pooled), *new, *pool_state)

    def _pool(self, h: Tensor, s: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """`_RunningPool.update` + `value` on explicit state tensors."""
        mode = self.mode
        if mode == "last":
            return h[:, -1], []
        if mode in ("mean", "meanstd"):
            h64 = h.double()
            total = s[0] + h64.sum(1)
            n = s[-1] + h.shape[1]
            mean = total / n
            if mode == "mean":
                return mean.float(), [total, n]
            sumsq = s[1] + (h64 * h64).sum(1)
            var = (sumsq / n - mean * mean).clamp_min(0)
            return torch.cat([mean, (var + 1e-5).sqrt()], -1).float(), [total, sumsq, n]
        if mode == "max":
            new = torch.maximum(s[0], h.amax(1))
            return new, [new]
        m_old, den, num = s
        scores = self.m.pooling.attention.score(h)  # (1, t, heads)
        m_new = torch.maximum(m_old, scores.amax(1))
        w = torch.exp(scores - m_new[:, None])
        scale = torch.exp(m_old - m_new)
        den = den * scale + w.sum(1)
        num = num * scale[..., None] + torch.einsum("bth,btd->bhd", w, h)
        return (num / den[..., None]).reshape(1, -1), [m_new, den, num]


# ---------------------------------------------------------------- export
def _meta(model: SpecRNN, cfg, classes: list[str], kind: str, extra: dict | None = None) -> dict[str, str]:
    meta = {"specrnn_kind": kind, "classes": json.dumps(classes), "features": json.dumps(cfg.features.__dict__),
            "stack": str(model.cfg.stack), "multilabel": json.dumps(model.cfg.multilabel)}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    return meta


def _save(program, path: Path, meta: dict[str, str]) -> None:
    """The ONNX model with our metadata, written atomically."""
    from .run import atomic_write_bytes

    proto = program.model_proto
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    atomic_write_bytes(path, proto.SerializeToString())


def _time_dim(multiple: int, name: str = "time"):
    t = torch.export.Dim(name, min=1, max=1 << 20)
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
    finally:
        log.setLevel(level)


def export_offline(model: SpecRNN, path: str | Path, cfg, classes: list[str]) -> Path:
    """(features (B, T, F) float32, lengths (B,) int64) -> logits (B, C); B and T dynamic, T a multiple of
    `time_multiple(model)`."""
    path = Path(path)
    graph = OfflineGraph(model)
    n_feat, mult = model.normalizer.mean.shape[0], time_multiple(model)
    T0 = 11 * mult  # short (the exporter unrolls RNNs over it while tracing), and no size of 0 or 1 to special-case
    x, lengths = torch.randn(3, T0, n_feat), torch.tensor([T0, T0 // 2, 3])
    batch = torch.export.Dim("batch", min=1, max=65536)
    outputs = ["logits"] if model.pooling is not None else ["logits", "frame_lengths"]
    with _quiet_export():
        program = torch.onnx.export(graph, (x, lengths), None, dynamo=True, opset_version=OPSET, verbose=False,
                                    input_names=["features", "lengths"], output_names=outputs,
                                    dynamic_shapes=({0: batch, 1: _time_dim(mult)}, {0: batch}))
    _save(program, path, _meta(model, cfg, classes, "offline", {"time_multiple": mult}))
    return path


def export_streaming(model: SpecRNN, path: str | Path, cfg, classes: list[str]) -> Path:
    """(features (1, t, F), length (1,), *states) -> (logits, *states_out); t dynamic, a multiple of the stack.
    The states' names, shapes, dtypes and initial values are in the model's metadata ('states')."""
    path = Path(path)
    step = StreamingStep(model)
    spec = step.state_spec()
    n_feat, k = model.normalizer.mean.shape[0], max(1, model.cfg.stack)
    x = torch.randn(1, 5 * k, n_feat)
    names = [s["name"] for s in spec]
    with _quiet_export():
        program = torch.onnx.export(step, (x, torch.tensor([5 * k]), step.initial_states()), None, dynamo=True,
                                    opset_version=OPSET, verbose=False, input_names=["features", "length", *names],
                                    output_names=["logits", *[n + "_out" for n in names]],
                                    dynamic_shapes={"features": {1: _time_dim(k)}, "length": None, "states": [None] * len(spec)})
    meta = _meta(model, cfg, classes, "streaming", {"states": spec, "frame_head": model.pooling is None, "time_multiple": k})
    _save(program, path, meta)
    return path


# ---------------------------------------------------------------- onnxruntime side
def session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session with `threads` intra-op threads (1 is fastest for one stream)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def metadata(sess) -> dict[str, str]:
    return dict(sess.get_modelmeta().custom_metadata_map)


class OnnxStreamingClassifier:
    """Drive a streaming ONNX step model like `StreamingClassifier`: push feature chunks of any size, read running
    probabilities; `finish()` flushes an incomplete stacked group."""

    def __init__(self, path_or_session, threads: int = 1):
        self.sess = session(path_or_session, threads) if isinstance(path_or_session, (str, Path)) else path_or_session
        meta = metadata(self.sess)
        if meta.get("specrnn_kind") != "streaming":
            raise SpecrnnError("not a specrnn streaming model (export it with `specrnn export RUN --streaming`)")
        self.classes = json.loads(meta["classes"])
        self.multilabel = json.loads(meta["multilabel"])
        self.stack = int(meta["stack"])
        self.spec = json.loads(meta["states"])
        self.names = [s["name"] for s in self.spec]
        self.out_names = ["logits", *[n + "_out" for n in self.names]]
        self.reset()

    def reset(self) -> None:
        self.states = {s["name"]: np.full(s["shape"], s["init"], dtype=s["dtype"]) for s in self.spec}
        self.pending = np.zeros((0, 0), dtype=np.float32)
        self.latest: np.ndarray | None = None
        self.frame_outputs: list[np.ndarray] = []

    def _run(self, frames: np.ndarray) -> None:
        n = np.array([frames.shape[0]], dtype=np.int64)
        feed = {"features": pad_time(frames[None], self.stack), "length": n, **self.states}
        outs = self.sess.run(self.out_names, feed)
        self.states = dict(zip(self.names, outs[1:]))
        logits = outs[0]
        if logits.ndim == 3:  # frame head
            self.frame_outputs.append(logits[0])
            logits = logits[:, -1]
        self.latest = logits

    def push_features(self, chunk: np.ndarray) -> np.ndarray | None:
        """A (t, F) chunk of un-normalised features; returns the running probabilities (None before the first step)."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if self.pending.shape[0]:
            chunk = np.concatenate([self.pending, chunk])
        n = chunk.shape[0] // self.stack * self.stack
        if n:
            self._run(np.ascontiguousarray(chunk[:n]))
        self.pending = chunk[n:]
        return self.probabilities()

    def finish(self) -> np.ndarray | None:
        if self.pending.shape[0]:
            self._run(np.ascontiguousarray(self.pending))
            self.pending = self.pending[:0]
        return self.probabilities()

    def logits(self) -> np.ndarray | None:
        return self.latest

    def probabilities(self) -> np.ndarray | None:
        if self.latest is None:
            return None
        z = self.latest[0].astype(np.float64)
        if self.multilabel:
            return (1 / (1 + np.exp(-z))).astype(np.float32)
        e = np.exp(z - z.max())
        return (e / e.sum()).astype(np.float32)


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
    from .streaming import StreamingClassifier

    x = _random_features(model, [frames], seed)[0]
    ref, ours = StreamingClassifier(model.eval()), OnnxStreamingClassifier(path)
    diff = 0.0
    for s in range(0, frames, chunk):
        ref.push_features(x[s : s + chunk])
        ours.push_features(x[s : s + chunk])
        if ref.logits() is not None:
            diff = max(diff, float(np.abs(ours.logits() - ref.logits().numpy()).max()))
    ref.finish()
    ours.finish()
    return max(diff, float(np.abs(ours.logits() - ref.logits().numpy()).max()))


def export_run(run_dir: str | Path, out: str | Path, streaming: bool = False, check: bool = True) -> dict:
    """Export a run folder's model to ONNX; with onnxruntime installed, check it against PyTorch."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise SpecrnnError(f"ONNX export needs onnx and onnxscript ({e}); pip install 'specrnn[export]'") from None
    from .inference import Predictor

    pred = Predictor.load(run_dir, device="cpu")
    model = pred.model.eval()
    export = export_streaming if streaming else export_offline
    path = export(model, out, pred.cfg, pred.classes)
    report = {"path": str(path), "kind": "streaming" if streaming else "offline", "bytes": Path(path).stat().st_size}
    if check:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            report["check"] = "skipped: onnxruntime is not installed"
            return report
        report["max_abs_diff"] = (check_streaming if streaming else check_offline)(model, path)
    return report
