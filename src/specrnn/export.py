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
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import SpecrnnError
from .models.build import SpecRNN
from .models.frontends import stacked_lengths
from .files import check_output_file
from .inference.streaming import FINISHED, AudioStream, CTCStreamDecoding, StreamingClassifier
from .tasks.ctc import GreedyCTC

ONNX_MARK = "specrnn"  # the model's doc_string starts with it

OPSET = 18
TESTED_TORCH = "2.13"  # the exporter's behaviour changes between releases: the one the tests passed on


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
        lengths = stacked_lengths(lengths, k)
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
        if model.pooling is None:
            return "a CNN front-end with frame outputs is not supported by the streaming export (clip heads are)"
        try:
            cnn_stream_plan(model)
        except SpecrnnError as e:
            return str(e)
    return None


def cnn_stream_plan(model: SpecRNN) -> tuple[list[dict], int]:
    """How each CNN block streams with a fixed-size carried buffer: per block (kernel k, stride s, padding p,
    buffer k - s frames, and `junk`: outputs at the start of the stream that lie before the offline output 0,
    because the buffer starts with more zero frames than the offline padding), and the junk at the RNN's input.
    Every call then turns n input frames into exactly n / s outputs, so the graph has no data-dependent shape."""
    blocks, junk = [], 0
    for i, b in enumerate(model.frontend.blocks):
        k, s, p = b.kernel, b.stride, b.kernel // 2
        lead = (k - s) + junk  # zero frames ahead of the first real frame at this block's input
        if k < s or lead < p or (lead - p) % s:
            raise SpecrnnError(f"CNN block {i + 1} (time kernel {k}, stride {s}) cannot stream with a fixed buffer: its "
                               "outputs would not line up with the offline ones; use a stride of 1, or 2 with kernel 3")
        junk = (lead - p) // s
        blocks.append({"kernel": k, "stride": s, "pad": p, "buffer": k - s, "junk": junk})
    return blocks, junk


class StreamingStep(nn.Module):
    """One streaming step: raw feature frames (1, t, F), their real count (1,) and carried states -> running
    logits and new states. t is a multiple of `time_multiple` (stack x CNN time strides); only a stream's final
    call may hold fewer real frames (the rest is zeroed after normalisation, as offline). Clip head: logits (1, C)
    of everything seen so far; frame head: (1, t/stack, C).

    With a CNN front-end each block carries its last k - s input frames, so its outputs trail its input by a
    fixed lag: the stream's first `junk` RNN inputs lie before the offline frame 0, and the last real frames come
    out only when zeros are fed after them (`OnnxStreamingClassifier.finish` does). Frames are marked valid from
    the offline lengths of the real frames seen so far: invalid ones are zeroed between blocks, the RNN's state is
    kept from before the junk frames on the first call, and pooling skips them."""

    def __init__(self, model: SpecRNN):
        super().__init__()
        why = streaming_unsupported(model)
        if why:
            raise SpecrnnError(f"cannot export this model for streaming: {why}")
        self.m = model.eval()
        self.lstm = model.cfg.cell == "lstm"
        self.mode = None if model.pooling is None else model.pooling.mode
        self.cnn, self.junk = cnn_stream_plan(model) if model.frontend is not None else ([], 0)
        self.shapes = self._block_inputs() if self.cnn else []

    def _block_inputs(self) -> list[tuple[int, int]]:
        """(channels, frequency bins) at each CNN block's input, from a dry run."""
        m, k = self.m, max(1, self.m.cfg.stack)
        x = torch.zeros(1, 1, 8 * time_multiple(m), m.normalizer.mean.shape[0] * k)
        shapes = []
        with torch.no_grad():
            for block in m.frontend.blocks:
                shapes.append((x.shape[1], x.shape[3]))
                x, _ = block(x, torch.tensor([x.shape[2]]))
        return shapes

    def state_spec(self) -> list[dict]:
        """Name, shape, dtype and initial value of every carried state, in input order."""
        enc, H = self.m.encoder, self.m.encoder.hidden
        n, D = len(enc.fwd), enc.output_size
        spec = [dict(name="h", shape=[n, 1, H], dtype="float32", init=0.0)]
        if self.lstm:
            spec.append(dict(name="c", shape=[n, 1, H], dtype="float32", init=0.0))
        if self.cnn:
            spec += [dict(name="frames_fed", shape=[1], dtype="int64", init=0),
                     dict(name="frames_real", shape=[1], dtype="int64", init=0)]
            spec += [dict(name=f"cnn{i}", shape=[1, c, b["buffer"], f], dtype="float32", init=0.0)
                     for i, (b, (c, f)) in enumerate(zip(self.cnn, self.shapes)) if b["buffer"]]
        heads = self.m.pooling.attention.heads if self.mode == "attention" else 1
        spec += {
            "last": [dict(name="pool_last", shape=[1, D], dtype="float32", init=0.0)] if self.cnn else [],
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
        dt = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64}
        return [torch.full(s["shape"], s["init"], dtype=dt[s["dtype"]]) for s in self.state_spec()]

    def forward(self, features: Tensor, length: Tensor, states: list[Tensor]):
        m, k = self.m, self.m.cfg.stack
        x = stack_exact(m.normalizer(features, length), k)
        h0, rest = states[0], list(states[1:])
        c0 = rest.pop(0) if self.lstm else None
        valid, started, new_cnn = None, None, []
        if self.cnn:
            fed, real = rest.pop(0), rest.pop(0)
            buffers = [rest.pop(0) if b["buffer"] else None for b in self.cnn]
            started = fed > 0
            x, valid, new_cnn = self._frontend(x, fed, stacked_lengths(real + length, k), buffers)
            new_cnn = [fed + features.shape[1] // k, real + length, *new_cnn]
        hs, cs = [], []
        T, J = x.shape[1], self.junk
        for layer, rnn in enumerate(m.encoder.fwd):
            state = (h0[layer : layer + 1], c0[layer : layer + 1]) if self.lstm else h0[layer : layer + 1]
            if J:  # the stream's first J frames are junk: on the first call the state skips them
                head, after = rnn(x[:, :J], state)
                state = tuple(torch.where(started, a, b) for a, b in zip(after, state)) if self.lstm else torch.where(started, after, state)
                tail, last = rnn(x[:, J:], state)
                x = torch.cat([head[:, :J], tail], 1)
            else:
                x, last = rnn(x, state)
            if self.lstm:
                hs.append(last[0])
                cs.append(last[1])
            else:
                hs.append(last)
            x = x[:, :T]  # keeps the time axis symbolic for the next layer (see the module doc)
            if layer < len(m.encoder.between):
                x = m.encoder.between[layer](x)
        new = [torch.cat(hs, 0)] + ([torch.cat(cs, 0)] if self.lstm else []) + new_cnn
        if self.mode is None:
            return (m.head(x), *new)
        pooled, pool_state = self._pool(x, rest, valid)
        return (m.head(pooled), *new, *pool_state)

    def _frontend(self, x: Tensor, fed: Tensor, real: Tensor, buffers: list) -> tuple[Tensor, Tensor, list[Tensor]]:
        """The CNN over this call's (1, t', F) frames: each block reads its carried frames then the new ones and
        emits exactly (its input) / stride frames; frames outside the offline output are zeroed. Returns the
        RNN's input, its validity (t'',) and the new buffers. `fed`: frames fed before (after stacking);
        `real`: real frames so far (after stacking)."""
        h = x[:, None]
        new_buffers = []
        for block, plan, buf in zip(self.m.frontend.blocks, self.cnn, buffers):
            s = plan["stride"]
            seq = h if buf is None else torch.cat([buf, h], 2)
            conv = block.conv
            y = F.conv2d(seq, conv.weight, conv.bias, stride=(s, 1), padding=(0, conv.padding[1]))[:, :, : h.shape[2] // s]
            y = block.pool(torch.relu(block.norm(y)))
            if buf is not None:
                new_buffers.append(seq[:, :, seq.shape[2] - plan["buffer"] :])
            fed = fed // s
            real = block.out_lengths(real)  # the offline output length
            steps = torch.ones_like(y[0, 0, :, 0], dtype=torch.int64).cumsum(0) - 1  # 0 .. outputs-1, no size arg
            j = fed + steps - plan["junk"]  # offline index of each output
            valid = (j >= 0) & (j < real)
            h = y * valid[None, None, :, None].to(y.dtype)
        B, C, T, Fq = h.shape
        return h.permute(0, 2, 1, 3).reshape(B, T, C * Fq), valid, new_buffers

    def _pool(self, h: Tensor, s: list[Tensor], valid: Tensor | None) -> tuple[Tensor, list[Tensor]]:
        """`_RunningPool.update` + `value` on explicit state tensors; `valid` (t,) marks the frames to pool (all
        without a CNN front-end)."""
        mode = self.mode
        w = None if valid is None else valid[None, :, None]
        if mode == "last":
            if valid is None:
                return h[:, -1], []
            steps = torch.ones_like(h[0, :, 0]).cumsum(0) - 1
            idx = (steps * valid).amax(0).long()  # the last valid frame (0: none)
            new = torch.where(valid.any(), h.index_select(1, idx.reshape(1))[:, 0], s[0])
            return new, [new]
        if mode in ("mean", "meanstd"):
            h64 = h.double() if w is None else h.double() * w
            total = s[0] + h64.sum(1)
            n = s[-1] + (h.shape[1] if w is None else w.double().sum(1))
            mean = total / n
            if mode == "mean":
                return mean.float(), [total, n]
            sumsq = s[1] + (h64 * h64).sum(1)
            var = (sumsq / n - mean * mean).clamp_min(0)
            return torch.cat([mean, (var + 1e-5).sqrt()], -1).float(), [total, sumsq, n]
        if mode == "max":
            new = torch.maximum(s[0], (h if w is None else h.masked_fill(~w, -math.inf)).amax(1))
            return new, [new]
        m_old, den, num = s
        scores = self.m.pooling.attention.score(h)  # (1, t, heads)
        if w is not None:
            scores = scores.masked_fill(~w, -math.inf)
        m_new = torch.maximum(m_old, scores.amax(1))
        # with a CNN, a step may hold no valid frame yet: keep exp() away from -inf - -inf
        m_safe = m_new if w is None else torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        e = torch.exp(scores - m_safe[:, None])
        scale = torch.exp(m_old - m_safe)
        den = den * scale + e.sum(1)
        num = num * scale[..., None] + torch.einsum("bth,btd->bhd", e, h)
        return (num / den[..., None]).reshape(1, -1), [m_new, den, num]


# ---------------------------------------------------------------- export
def _meta(model: SpecRNN, cfg, classes: list[str], kind: str, extra: dict | None = None) -> dict[str, str]:
    meta = {"specrnn_kind": kind, "classes": json.dumps(classes), "features": json.dumps(cfg.features.__dict__),
            "stack": str(model.cfg.stack), "multilabel": json.dumps(model.cfg.multilabel), "head": model.cfg.head}
    if model.cfg.head == "ctc":  # frame outputs over the tokens, then the CTC blank
        meta["blank"] = str(len(classes))
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
                                    output_names=["logits", *[n + "_out" for n in names]],
                                    dynamic_shapes={"features": {1: _time_dim(mult, least=step.junk + 1)}, "length": None,
                                                    "states": [None] * len(spec)})
    meta = _meta(model, cfg, classes, "streaming", {"states": spec, "frame_head": model.pooling is None, "time_multiple": mult,
                                                    "cnn": step.cnn, "junk": step.junk, **extra})
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


class OnnxStreamingClassifier(CTCStreamDecoding):
    """Drive a streaming ONNX step model like `StreamingClassifier`: push audio or feature chunks of any size, read
    running probabilities (a CTC model also decodes as it goes: `tokens()`); `finish()` flushes the STFT, an
    incomplete stacked group and a CNN's right context. Audio becomes features with the feature settings stored in
    the model's metadata (PyTorch's STFT)."""

    def __init__(self, path_or_session, threads: int = 1):
        if isinstance(path_or_session, (str, Path)):
            try:
                self.sess = session(path_or_session, threads)
            except Exception as e:  # onnxruntime's NoSuchFile, InvalidProtobuf, ...
                raise SpecrnnError(f"{path_or_session}: cannot open as an ONNX model ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
        else:
            self.sess = path_or_session
        meta = metadata(self.sess)
        if meta.get("specrnn_kind") != "streaming":
            raise SpecrnnError("not a specrnn streaming model (export it with `specrnn export RUN --streaming`)")
        self.classes = json.loads(meta["classes"])
        self.blank = int(meta["blank"]) if meta.get("head") == "ctc" else None
        self.multilabel = json.loads(meta["multilabel"])
        self.stack = int(meta["stack"])
        self.multiple = int(json.loads(meta.get("time_multiple", str(self.stack))))
        self.cnn, self.junk = json.loads(meta.get("cnn", "[]")), int(json.loads(meta.get("junk", "0")))
        self.spec = json.loads(meta["states"])
        self.features = json.loads(meta["features"])
        self.names = [s["name"] for s in self.spec]
        self.out_names = ["logits", *[n + "_out" for n in self.names]]
        self.reset()

    def reset(self) -> None:
        self._start_model()
        self.audio = None  # an AudioStream, made when audio is first pushed
        self.finished = False

    def _start_model(self) -> None:
        """The model's state as before any frame: a new stream, or the same audio again (AudioStream.restart)."""
        self.states = {s["name"]: np.full(s["shape"], s["init"], dtype=s["dtype"]) for s in self.spec}
        self.pending = np.zeros((0, 0), dtype=np.float32)
        self.latest: np.ndarray | None = None
        self.frame_outputs: list[np.ndarray] = []
        self.ctc = GreedyCTC(self.blank) if self.blank is not None else None
        self.fed = self.real = 0  # feature frames given to the model so far: all, and real ones

    def _run(self, frames: np.ndarray, total: int | None = None) -> None:
        """One step on `frames` (real), zero-padded to `total` frames (default: the next multiple)."""
        n = np.array([frames.shape[0]], dtype=np.int64)
        x = pad_time(frames[None], self.multiple)
        if total is not None and total > x.shape[1]:
            x = np.pad(x, ((0, 0), (0, total - x.shape[1]), (0, 0)))
        self.fed, self.real = self.fed + x.shape[1], self.real + frames.shape[0]
        feed = {"features": x, "length": n, **self.states}
        outs = self.sess.run(self.out_names, feed)
        self.states = dict(zip(self.names, outs[1:]))
        logits = outs[0]
        if logits.ndim == 3:  # frame head
            self.frame_outputs.append(logits[0])
            if self.ctc is not None:
                self.ctc.update(logits[0])
            logits = logits[:, -1]
        self.latest = logits

    def push_features(self, chunk: np.ndarray) -> np.ndarray | None:
        """A (t, F) chunk of un-normalised features; returns the running probabilities (None before the first step)."""
        if self.finished:
            raise SpecrnnError(FINISHED)
        chunk = np.asarray(chunk, dtype=np.float32)
        if self.pending.shape[0]:
            chunk = np.concatenate([self.pending, chunk])
        least = self.multiple * (self.junk + 1)  # every step feeds the RNN more frames than the junk it splits off
        n = chunk.shape[0] // self.multiple * self.multiple if chunk.shape[0] >= least else 0
        if n:
            self._run(np.ascontiguousarray(chunk[:n]))
        self.pending = chunk[n:]
        return self.probabilities()

    def push_audio(self, samples: np.ndarray, sample_rate: int | None = None) -> np.ndarray | None:
        """Mono samples; at `sample_rate` if given (resampled on the fly), else at the model's rate."""
        if self.audio is None:
            from .config import FeatureConfig
            from .features import FeatureExtractor

            self.audio = AudioStream(FeatureExtractor(FeatureConfig(**self.features)))
        return self._push_audio_frames(self.audio.push(samples, sample_rate))

    def _push_audio_frames(self, frames) -> np.ndarray | None:
        if self.audio.restart:  # every frame so far, floored anew: the model starts over on them
            self._start_model()
        return self.push_features(frames.numpy())

    def finish(self) -> np.ndarray | None:
        """The last step: the audio's last frames (if audio was pushed), the pending frames, then (with a CNN
        front-end) the zeros that push the last real frames through every block. `reset()` starts a new stream;
        called again, it returns the same probabilities."""
        if not self.finished:
            self._flush()
            self.finished = True
        return self.probabilities()

    def _flush(self) -> None:
        if self.audio is not None:
            self._push_audio_frames(self.audio.finish())
        real = self.real + self.pending.shape[0]
        if self.cnn and real:
            need = _cnn_frames_needed(self.cnn, self.junk, real, self.stack)
            if need <= self.fed and not self.pending.shape[0]:
                return
            total = max(need - self.fed, self.pending.shape[0], self.multiple * (self.junk + 1))
            total = -(-total // self.multiple) * self.multiple
            frames = self.pending if self.pending.shape[0] else np.zeros((0, self.states_width()), np.float32)
            self._run(np.ascontiguousarray(frames), total)
        elif self.pending.shape[0]:
            self._run(np.ascontiguousarray(self.pending))
        self.pending = self.pending[:0]

    def states_width(self) -> int:
        """Feature bins per frame (from the model's input)."""
        return int(self.sess.get_inputs()[0].shape[2])

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


def _cnn_frames_needed(cnn: list[dict], junk: int, real: int, stack: int) -> int:
    """Feature frames a stream of `real` frames must be fed (zeros after them) before the CNN has emitted every
    offline output: the RNN's input must reach junk + the offline length after the last block."""
    length, strides = -(-real // stack), 1
    for b in cnn:
        length = (length + 2 * b["pad"] - b["kernel"]) // b["stride"] + 1
        strides *= b["stride"]
    return (length + junk) * strides * stack


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
        cfg = dataclasses.replace(pred.cfg, model=model.cfg)  # what the graph now is: a `global` model
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
