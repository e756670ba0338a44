"""Streaming inference: feed audio or feature chunks of any size, carry every layer's state, read a running
prediction (or, for a CTC model, the sequence decoded so far). After `finish()` the result equals the offline pass
over the whole clip.

Each stage is causal and keeps only the context it needs: the STFT keeps n_fft/2 samples of history, frame
stacking keeps an incomplete group, each CNN block keeps its kernel's left context (and waits kernel//2 frames
for its right context), the RNN carries (h, c), and pooling keeps running sums (mean, mean+std), a running
max, the last state, or the running log-sum-exp of attention scores.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ENROL, SpecrnnError
from ..models.build import SpecRNN
from ..models.frontends import ConvBlock
from ..tasks import is_sequence
from ..tasks.ctc import GreedyCTC
from .audio_stream import FINISHED, RESTART_DB, AudioStream, StreamingSTFT, check_features_stream

__all__ = ["FINISHED", "RESTART_DB", "AudioStream", "StreamingSTFT", "StreamingClassifier", "check_streamable", "stream"]


class _ConvBlockStream:
    """One CNN block over a stream: conv with time padding done by hand (zeros at the start and the end)."""

    def __init__(self, block: ConvBlock):
        self.b = block
        self.k, self.s, self.p = block.kernel, block.stride, block.kernel // 2
        self.buf: Tensor | None = None
        self.start, self.next_out, self.total = -self.p, 0, 0

    def _emit(self, limit: int, count: int | None = None) -> Tensor | None:
        last = (limit + self.p - self.k) // self.s
        if count is not None:
            last = min(last, count - 1)
        if last < self.next_out:
            return None
        lo, hi = self.next_out * self.s - self.p, last * self.s - self.p + self.k
        seg = self.buf[:, :, lo - self.start : hi - self.start]
        conv = self.b.conv
        y = F.conv2d(seg, conv.weight, conv.bias, stride=(self.s, 1), padding=(0, conv.padding[1]))
        y = self.b.pool(torch.relu(self.b.norm(y)))
        self.next_out = last + 1
        keep_from = self.next_out * self.s - self.p
        self.buf, self.start = self.buf[:, :, keep_from - self.start :], keep_from
        return y

    def push(self, x: Tensor) -> Tensor | None:
        if self.buf is None:
            self.buf = x.new_zeros(x.shape[0], x.shape[1], self.p, x.shape[3])
        self.buf = torch.cat([self.buf, x], dim=2)
        self.total += x.shape[2]
        return self._emit(self.total)

    def finish(self) -> Tensor | None:
        if self.buf is None:
            return None
        self.buf = torch.cat([self.buf, self.buf.new_zeros(*self.buf.shape[:2], self.p, self.buf.shape[3])], dim=2)
        return self._emit(self.total + self.p, count=int(self.b.out_lengths(torch.tensor(self.total))))


class _RunningPool:
    """Pooling over every frame seen so far; equals the offline masked pooling over the whole clip."""

    def __init__(self, pooling):
        self.pool = pooling
        self.n = 0
        self.sum = self.sumsq = self.max = self.last = None
        self.m = self.den = self.num = None

    def update(self, h: Tensor) -> None:  # h: (1, t, D)
        mode = self.pool.mode
        self.n += h.shape[1]
        if mode == "last":
            self.last = h[:, -1]
        elif mode in ("mean", "meanstd"):  # float64 running sums: mean and variance without keeping frames
            h64 = h.double()
            s, s2 = h64.sum(1), (h64 * h64).sum(1)
            self.sum = s if self.sum is None else self.sum + s
            self.sumsq = s2 if self.sumsq is None else self.sumsq + s2
        elif mode == "max":
            m = h.amax(1)
            self.max = m if self.max is None else torch.maximum(self.max, m)
        else:
            scores = self.pool.attention.score(h)  # (1, t, heads)
            m_new = scores.amax(1) if self.m is None else torch.maximum(self.m, scores.amax(1))
            w = torch.exp(scores - m_new[:, None])
            num = torch.einsum("bth,btd->bhd", w, h)
            if self.m is None:
                self.den, self.num = w.sum(1), num
            else:
                scale = torch.exp(self.m - m_new)
                self.den = self.den * scale + w.sum(1)
                self.num = self.num * scale[..., None] + num
            self.m = m_new

    def value(self) -> Tensor:
        mode = self.pool.mode
        if mode == "last":
            return self.last
        if mode in ("mean", "meanstd"):
            mean = self.sum / self.n
            if mode == "mean":
                return mean.float()
            var = (self.sumsq / self.n - mean * mean).clamp_min(0)
            return torch.cat([mean, (var + 1e-5).sqrt()], -1).float()
        if mode == "max":
            return self.max
        return (self.num / self.den[..., None]).reshape(self.num.shape[0], -1)


class CTCStreamDecoding:
    """What a stream of a CTC model says so far, for the PyTorch and the ONNX streaming classifiers (their `ctc`:
    a GreedyCTC, or None for other heads; `classes`; `latest`: None before the first step)."""

    ctc: "GreedyCTC | None"
    classes: list[str] | None
    latest: object

    def tokens(self) -> list[str]:
        """CTC models: the sequence decoded so far (best path: repeats merged, blanks dropped). After `finish()` it
        equals `specrnn predict` on the whole clip."""
        if self.ctc is None:
            raise SpecrnnError("tokens() decodes CTC models; this model classifies clips: read probabilities()")
        return [self.classes[t] if self.classes else str(t) for t in self.ctc.tokens]

    def path_probability(self) -> float | None:
        """CTC models: the probability of the best path so far (None before the first step)."""
        if self.ctc is None:
            raise SpecrnnError("path_probability() is for CTC models")
        return None if self.latest is None else float(np.exp(self.ctc.log_p))


def _on_cpu(module: nn.Module) -> nn.Module:
    """The module itself when it is on the CPU, else a copy there."""
    on_cpu = all(t.device.type == "cpu" for t in [*module.parameters(), *module.buffers()])
    return module if on_cpu else copy.deepcopy(module).cpu()


def check_streamable(cfg, features=None) -> None:
    """Raise a clear error when a model (its ModelConfig, and FeatureConfig for audio streams) cannot stream; called
    before any work (e.g. enrolment) is spent on a stream that would be refused."""
    if cfg.bidirectional:
        raise SpecrnnError("this model is bidirectional: it reads each clip backwards from its end, so it cannot stream. "
                           "Train a unidirectional model (model.bidirectional=false) for streaming.")
    if cfg.normalize == "utterance":
        raise SpecrnnError("this model normalises each clip with statistics of the whole clip (model.normalize=utterance), "
                           "which a stream does not have yet; use global or frame normalisation for streaming.")
    if cfg.pooling in ("dot", "padded_last") or cfg.rnn_impl == "naive":
        raise SpecrnnError(f"pooling '{cfg.pooling}' needs the whole clip before it can score any frame; "
                           "use last, mean, max, meanstd or attention pooling for streaming.")
    if features is not None:
        check_features_stream(features)


class StreamingClassifier(CTCStreamDecoding):
    """Run a trained unidirectional model on a stream. `push_audio`/`push_features` return the running class
    probabilities (None until the first frame reaches the RNN; frame and CTC heads: the latest step's); `finish()`
    flushes the right context. A CTC model also decodes as it goes: `tokens()` is the sequence so far."""

    def __init__(self, model: SpecRNN, feature_extractor=None, classes: list[str] | None = None, multilabel: bool = False):
        check_streamable(model.cfg)
        if model.cfg.normalize == "group":  # Predictor.enrolled_model() folds the speaker's mean in: a constant, it streams
            raise SpecrnnError(ENROL)
        # Streams run on the CPU (the streaming layers keep their state there); a model on a GPU stays there for its
        # other users, and the stream runs on a CPU copy.
        self.model = _on_cpu(model).eval()
        self.extractor = _on_cpu(feature_extractor) if feature_extractor is not None else None
        self.classes, self.multilabel = classes, multilabel
        self.reset()

    def reset(self) -> None:
        self.audio = AudioStream(self.extractor) if self.extractor is not None else None
        self._start_model()

    def _start_model(self) -> None:
        """The model's state as before any frame: a new stream, or the same audio again (AudioStream.restart)."""
        self.pending = None  # frames waiting to complete a stacked group
        self.blocks = [_ConvBlockStream(b) for b in self.model.frontend.blocks] if self.model.frontend is not None else []
        self.state = None
        self.pool = _RunningPool(self.model.pooling) if self.model.pooling is not None else None
        self.frames_in, self.finished = 0, False
        self.latest: Tensor | None = None
        self.frame_outputs: list[Tensor] = []
        self.ctc = GreedyCTC(self.model.head.net[-1].out_features - 1) if is_sequence(self.model.cfg) else None

    @torch.no_grad()
    def push_features(self, chunk: np.ndarray | Tensor) -> np.ndarray | None:
        """A (t, F) chunk of un-normalised features (as the FeatureExtractor makes them)."""
        if self.finished:
            raise SpecrnnError(FINISHED)
        x = torch.as_tensor(np.asarray(chunk, dtype=np.float32))[None]
        self.frames_in += x.shape[1]
        if x.shape[1]:
            x = self.model.normalizer(x, torch.tensor([x.shape[1]]))
            self._stacked(x, final=False)
        return self.probabilities()

    @torch.no_grad()
    def push_audio(self, samples: np.ndarray, sample_rate: int | None = None) -> np.ndarray | None:
        """Mono samples; at `sample_rate` if given (resampled on the fly with soxr's streaming resampler),
        else at the model's rate."""
        if self.audio is None:
            raise SpecrnnError("no feature extractor: use push_features, or build the stream from a Predictor")
        return self._push_audio_frames(self.audio.push(samples, sample_rate))

    def _push_audio_frames(self, frames: Tensor) -> np.ndarray | None:
        if self.audio.restart:  # every frame so far, floored anew: the model starts over on them
            self._start_model()
        return self.push_features(frames)

    @torch.no_grad()
    def finish(self) -> np.ndarray | None:
        """End of stream: flush the resampler and the STFT, an incomplete stacked group and the CNN's right context.
        Called again, it returns the same probabilities."""
        if self.finished:
            return self.probabilities()
        if self.audio is not None:
            self._push_audio_frames(self.audio.finish())
        self._stacked(None, final=True)
        self.finished = True
        return self.probabilities()

    def _stacked(self, x: Tensor | None, final: bool) -> None:
        k = self.model.cfg.stack
        if x is not None:
            self.pending = x if self.pending is None else torch.cat([self.pending, x], 1)
        if self.pending is not None and self.pending.shape[1]:
            n = self.pending.shape[1] // k * k
            if final and n < self.pending.shape[1]:
                pad = k - self.pending.shape[1] % k
                self.pending = F.pad(self.pending, (0, 0, 0, pad))
                n = self.pending.shape[1]
            if n:
                ready, self.pending = self.pending[:, :n], self.pending[:, n:]
                self._frontend(ready.reshape(1, n // k, -1), final=False)
        if final:
            self._frontend(None, final=True)

    def _frontend(self, x: Tensor | None, final: bool) -> None:
        if self.blocks:
            y = x[:, None] if x is not None else None
            for i, block in enumerate(self.blocks):
                outs = []
                if y is not None:
                    o = block.push(y)
                    if o is not None:
                        outs.append(o)
                if final:
                    o = block.finish()
                    if o is not None:
                        outs.append(o)
                y = torch.cat(outs, 2) if outs else None
            if y is None:
                return
            B, C, T, Fq = y.shape
            x = y.permute(0, 2, 1, 3).reshape(B, T, C * Fq)
        if x is None or not x.shape[1]:
            return
        h, self.state = self.model.encoder.step(x, self.state)
        if self.pool is None:
            logits = self.model.head(h)
            self.frame_outputs.append(logits[0])
            self.latest = logits[:, -1]
            if self.ctc is not None:
                self.ctc.update(logits[0])
        else:
            self.pool.update(h)
            self.latest = self.model.head(self.pool.value())

    def logits(self) -> Tensor | None:
        return self.latest

    def probabilities(self) -> np.ndarray | None:
        if self.latest is None:
            return None
        p = torch.sigmoid(self.latest) if self.multilabel else torch.softmax(self.latest, -1)
        return p[0].numpy()


def stream(predictor) -> StreamingClassifier:
    """A StreamingClassifier for a loaded Predictor (`specrnn.load(run).stream()`)."""
    return StreamingClassifier(predictor.enrolled_model(), predictor.extractor, predictor.classes,
                               predictor.cfg.model.multilabel)
