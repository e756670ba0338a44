"""The one streaming driver: feed a streaming step model (`graphs.StreamingStep`, with its state carried explicitly)
audio or feature chunks of any size, on PyTorch (`StreamingClassifier`) or onnxruntime (`OnnxStreamingClassifier`).

The driver gathers frames until a step can take them (a multiple of stack x the CNN's time strides, more than the
CNN's junk), runs the step, keeps its states, and reads the running logits; `finish()` flushes the STFT, an
incomplete stacked group and, with a CNN, the zeros that push the last real frames through every block. After
`finish()` the result equals the offline pass over the whole clip.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SpecrnnError
from .audio_stream import FINISHED
from .graphs import pad_time


@dataclass
class StepPlan:
    """What a driver needs to know about a step model (the streaming ONNX model's metadata holds the same)."""

    classes: list[str] | None
    blank: int | None  # CTC: the blank's index; None for other heads
    multilabel: bool
    stack: int
    multiple: int  # every step's frames are a multiple of this
    cnn: list[dict]
    junk: int
    states: list[dict]  # name, shape, dtype, init of each carried state, in input order
    frame_head: bool
    n_features: int

    @classmethod
    def of(cls, step, classes: list[str] | None, multilabel: bool) -> "StepPlan":
        from .graphs import time_multiple

        m = step.m
        return cls(classes, m.blank, multilabel, m.cfg.stack, time_multiple(m), step.cnn, step.junk, step.state_spec(),
                   m.pooling is None, int(m.normalizer.mean.shape[0]))


class CTCStreamDecoding:
    """What a stream of a CTC model says so far (its `ctc`: the decoder, a GreedyCTC or a decoding.BeamSearch, or
    None for other heads; `classes`; `latest`: None before the first step)."""

    ctc: object
    classes: list[str] | None
    latest: object

    def tokens(self) -> list[str]:
        """CTC models: the sequence decoded so far (greedy: the best path, repeats merged, blanks dropped; beam: the
        best prefix). After `finish()` it equals `specrnn predict` on the whole clip with the same decoding."""
        if self.ctc is None:
            raise SpecrnnError("tokens() decodes CTC models; this model classifies clips: read probabilities()")
        return [self.classes[t] if self.classes else str(t) for t in self.ctc.tokens]

    def path_probability(self) -> float | None:
        """CTC models: the probability of the best path so far (beam: of the best prefix over its kept paths);
        None before the first step."""
        if self.ctc is None:
            raise SpecrnnError("path_probability() is for CTC models")
        return None if self.latest is None else float(np.exp(self.ctc.log_p))


class StepStream(CTCStreamDecoding):
    """Push audio (`push_audio`) or feature chunks (`push_features`) of any size, read running probabilities; a CTC
    model also decodes as it goes (`tokens()`). Subclasses give `_step` (one call of the step model) and
    `_audio_stream` (features from audio)."""

    def __init__(self, plan: StepPlan, decoding=None):
        from ..decoding import Decoding

        self.plan, self.classes, self.multilabel = plan, plan.classes, plan.multilabel
        self.decoding = decoding or Decoding()  # CTC: greedy unless a beam is given
        self.names = [s["name"] for s in plan.states]
        self.reset()

    def _step(self, x: np.ndarray, n: np.ndarray, states: dict):  # -> (logits, valid or None, new states dict)
        raise NotImplementedError

    def _initial_states(self) -> dict:
        raise NotImplementedError

    def _audio_stream(self):
        raise NotImplementedError

    def reset(self) -> None:
        """Start a new stream (the same model and settings)."""
        self._start_model()
        self.audio = None  # an AudioStream, made when audio is first pushed
        self.finished = False

    def _start_model(self) -> None:
        """The model's state as before any frame: a new stream, or the same audio again (AudioStream.restart)."""
        self.states = self._initial_states()
        self.pending = np.zeros((0, self.plan.n_features), dtype=np.float32)
        self.latest = None
        self.frame_outputs: list = []
        self.ctc = self.decoding.start(self.plan.blank) if self.plan.blank is not None else None
        self.fed = self.real = 0  # feature frames given to the model so far: all, and real ones

    def _run(self, frames: np.ndarray, total: int | None = None) -> None:
        """One step on `frames` (real), zero-padded to `total` frames (default: the next multiple)."""
        n = np.array([frames.shape[0]], dtype=np.int64)
        x = pad_time(frames[None], self.plan.multiple)
        if total is not None and total > x.shape[1]:
            x = np.pad(x, ((0, 0), (0, total - x.shape[1]), (0, 0)))
        self.fed, self.real = self.fed + x.shape[1], self.real + frames.shape[0]
        logits, valid, self.states = self._step(np.ascontiguousarray(x), n, self.states)
        if not self.plan.frame_head:
            self.latest = logits
            return
        rows = logits[0] if valid is None else logits[0][valid]
        if len(rows):  # a step inside the CNN's junk emits no real frame yet
            self.frame_outputs.append(rows)
            if self.ctc is not None:
                self.ctc.update(rows)
            self.latest = rows[-1:]

    def push_features(self, chunk) -> np.ndarray | None:
        """A (t, F) chunk of un-normalised features; returns the running probabilities (None before the first step)."""
        if self.finished:
            raise SpecrnnError(FINISHED)
        chunk = np.asarray(chunk, dtype=np.float32)
        if self.pending.shape[0]:
            chunk = np.concatenate([self.pending, chunk])
        multiple = self.plan.multiple
        least = multiple * (self.plan.junk + 1)  # every step feeds the RNN more frames than the junk it splits off
        n = chunk.shape[0] // multiple * multiple if chunk.shape[0] >= least else 0
        if n:
            self._run(chunk[:n])
        self.pending = chunk[n:]
        return self.probabilities()

    def push_audio(self, samples: np.ndarray, sample_rate: int | None = None) -> np.ndarray | None:
        """Mono samples; at `sample_rate` if given (resampled on the fly with soxr's streaming resampler), else at
        the model's rate."""
        if self.audio is None:
            self.audio = self._audio_stream()
        return self._push_audio_frames(self.audio.push(samples, sample_rate))

    def _push_audio_frames(self, frames) -> np.ndarray | None:
        if self.audio.restart:  # every frame so far, floored anew: the model starts over on them
            self._start_model()
        return self.push_features(np.asarray(frames))

    def finish(self) -> np.ndarray | None:
        """End of stream: the audio's last frames (if audio was pushed), the pending frames, then (with a CNN
        front-end) the zeros that push the last real frames through every block. `reset()` starts a new stream;
        called again, it returns the same probabilities."""
        if not self.finished:
            self._flush()
            if self.ctc is not None:
                self.ctc.finish()  # a beam's end scores (a grammar's whole sequences, an n-gram's P(</s>))
            self.finished = True
        return self.probabilities()

    def _flush(self) -> None:
        if self.audio is not None:
            self._push_audio_frames(self.audio.finish())
        p = self.plan
        real = self.real + self.pending.shape[0]
        if p.cnn and real:
            need = _cnn_frames_needed(p.cnn, p.junk, real, p.stack)
            if need <= self.fed and not self.pending.shape[0]:
                return
            total = max(need - self.fed, self.pending.shape[0], p.multiple * (p.junk + 1))
            self._run(self.pending, -(-total // p.multiple) * p.multiple)
        elif self.pending.shape[0]:
            self._run(self.pending)
        self.pending = self.pending[:0]

    def logits(self):
        return self.latest

    def probabilities(self) -> np.ndarray | None:
        if self.latest is None:
            return None
        z = np.asarray(self.latest[0], dtype=np.float64)
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
