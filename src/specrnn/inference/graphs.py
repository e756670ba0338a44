"""Export-friendly graphs of a trained model, rebuilt from its own modules: the offline model (features, lengths)
-> logits, and the streaming step (feature chunk, carried states) -> (running logits, states).

The dynamo exporter cannot trace pack_padded_sequence, records an RNN's output with the traced (fixed) time length
(so every RNN output is sliced to the input's symbolic length before use), and fails on a GRU whose time axis is a
derived size such as ceil(T/stack) or a strided convolution's output. So the time axis is a multiple of
`time_multiple` (stack x CNN time strides): pad with anything, `lengths` say what is real, and the padding-exact
model ignores the rest.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecrnnError
from ..models.build import SpecRNN
from ..models.frontends import stacked_lengths


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
    return None


def cnn_stream_plan(model: SpecRNN) -> tuple[list[dict], int]:
    """How each CNN block streams with a fixed-size carried buffer: per block (kernel k, stride s, padding p, the
    buffer b of frames it carries, and `junk`: outputs at the start of the stream that lie before the offline
    output 0, because the buffer starts with more zero frames than the offline padding), and the junk at the RNN's
    input. b is the least number of frames >= k - s that lines the stream's outputs up with the offline ones (its
    zeros plus the junk before it, less p, a multiple of s). Every call then turns n input frames into exactly n / s
    outputs, so the graph has no data-dependent shape."""
    blocks, junk = [], 0
    for b in model.frontend.blocks:
        k, s, p = b.kernel, b.stride, b.kernel // 2
        buffer = max(0, k - s)
        while buffer + junk < p or (buffer + junk - p) % s:
            buffer += 1
        junk = (buffer + junk - p) // s
        blocks.append({"kernel": k, "stride": s, "pad": p, "buffer": buffer, "junk": junk})
    return blocks, junk


class StreamingStep(nn.Module):
    """One streaming step: raw feature frames (1, t, F), their real count (1,) and carried states -> running
    logits and new states. t is a multiple of `time_multiple` (stack x CNN time strides); only a stream's final
    call may hold fewer real frames (the rest is zeroed after normalisation, as offline). Clip head: logits (1, C)
    of everything seen so far; frame head: (1, t/stack, C), and with a CNN front-end a (t'',) mask of the real ones.

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
            # the stream's first J frames are junk: on the first call the state skips them. The exported graph
            # always takes this branch-free path; run eagerly, later calls need one RNN call, not two
            if J and (torch.compiler.is_exporting() or not bool(started.all())):
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
        if self.mode is None:  # frame outputs; with a CNN, which of them are real (offline) frames
            return (m.head(x), *([valid] if self.cnn else []), *new)
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
