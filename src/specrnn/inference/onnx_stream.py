"""Streaming on onnxruntime: drive a streaming step model exported by `specrnn export --streaming` like
`StreamingClassifier`, with the carried states as numpy arrays named in the model's metadata."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import SpecrnnError
from ..tasks.ctc import GreedyCTC
from .audio_stream import FINISHED, AudioStream
from .graphs import pad_time
from .streaming import CTCStreamDecoding


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
            from ..config import FeatureConfig
            from ..features import FeatureExtractor

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
