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
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecrnnError
from ..features import AMIN
from ..formatting import percent, significant
from ..models.build import SpecRNN
from ..models.frontends import ConvBlock
from ..tasks.ctc import GreedyCTC


RESTART_DB = 1.0  # while streaming, the top-dB floor may lag this much behind the peak before the model starts over


class StreamingSTFT:
    """Centred, zero-padded log-(mel) STFT frames from audio chunks: frame t appears once sample t*hop+n_fft/2 arrives.

    top-dB clipping floors each clip at its loudest frame minus top_db, and a stream knows only the loudest frame so
    far. So the frames' dB values before the floor are kept (up to `features.max_seconds`, what the offline pass
    reads). When the peak has risen more than RESTART_DB since the frames sent were floored, and the higher floor
    reaches some of them, `push` returns every frame again, floored anew, and sets `restart`: the model starts
    over on them. `finish` does so for any rise at all, so after the last chunk the stream equals the offline pass."""

    def __init__(self, extractor):
        self.ex, self.cfg = extractor, extractor.cfg
        _check_features_stream(self.cfg)
        self.reset()

    def reset(self) -> None:
        self.buf = torch.zeros(self.cfg.n_fft // 2)  # left zero padding of the centred STFT
        self.next_frame, self.samples, self.peak = 0, 0, -torch.inf
        self.raw: list[Tensor] = []  # dB frames before the floor, for a restart (top_db models)
        self.kept = 0  # frames in self.raw
        self.raw_min, self.floored_at, self.restart = torch.inf, -torch.inf, False  # floored_at: the lowest peak used
        c = self.cfg
        self.keep = None if c.max_seconds is None else int(c.max_seconds * c.sample_rate / c.hop_length) + 1

    def _floor(self, db: Tensor, final: bool) -> Tensor:
        """Floor new dB frames at the running peak minus top_db; all frames again (restart) when the floor rose
        over frames already sent by more than RESTART_DB (at the end: by anything)."""
        c = self.cfg
        if c.top_db is None or not (db.shape[0] or final and self.raw):
            return db
        if db.shape[0]:
            self.peak = max(self.peak, float(db.max()))
        if not self.raw:
            self.floored_at = self.peak
        rise = self.peak - self.floored_at  # the most a frame already sent lags behind the current floor
        restart = self.raw_min < self.peak - c.top_db and (rise > 0 if final else rise > RESTART_DB)
        if self.keep is not None and self.kept >= self.keep:  # past max_seconds: no restarts
            restart = False
        elif db.shape[0]:
            self.raw.append(db)
            self.kept += db.shape[0]
            self.raw_min = min(self.raw_min, float(db.min()))
        if restart:
            db = torch.cat(self.raw)
            self.raw, self.restart, self.floored_at = [db], True, self.peak  # one tensor: the next restart cats less
        return torch.maximum(db, torch.tensor(self.peak - c.top_db))

    def _frames(self, limit: int, count: int | None = None) -> Tensor:
        c = self.cfg
        # frame t covers padded samples [t*hop, t*hop + n_fft); the buffer starts at padded index next_frame*hop
        last = (limit - c.n_fft) // c.hop_length
        if count is not None:
            last = min(last, count - 1)
        n = max(0, last - self.next_frame + 1)
        final = count is not None  # the end: a last restart may still be due with no new frame
        if not n and not (final and self.raw):
            return torch.zeros(0, self.cfg.n_features)
        if n:
            seg = self.buf[: (n - 1) * c.hop_length + c.n_fft]
            spec = torch.stft(seg[None], c.n_fft, c.hop_length, c.win_length, self.ex.window, center=False,
                              return_complex=True)
            spec = torch.view_as_real(spec)
            power = (spec[..., 0].square() + spec[..., 1].square()).transpose(1, 2)[0]
            if c.kind != "logpower":
                power = power @ self.ex.mel
            db = 10.0 * torch.log10(power.clamp_min(AMIN))
        else:
            db = self.raw[0][:0]
        db = self._floor(db, final)
        if c.kind == "mfcc":
            db = db @ self.ex.dct
        self.next_frame += n
        self.buf = self.buf[n * c.hop_length :]
        return db

    def push(self, samples: np.ndarray | Tensor) -> Tensor:
        """The frames these samples complete; every frame so far when `restart` is set."""
        self.restart = False
        x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
        self.buf = torch.cat([self.buf, x])
        self.samples += len(x)
        return self._frames(self.next_frame * self.cfg.hop_length + len(self.buf))

    def finish(self) -> Tensor:
        self.restart = False
        half = self.cfg.n_fft // 2
        self.buf = torch.cat([self.buf, torch.zeros(half)])
        return self._frames(self.next_frame * self.cfg.hop_length + len(self.buf), count=1 + self.samples // self.cfg.hop_length)


FINISHED = "this stream has finished; call reset() to start a new one"


class AudioStream:
    """Audio chunks of any size -> feature frames: soxr's streaming resampler (when the chunks come at another
    rate) then `StreamingSTFT`. Shared by the PyTorch and the ONNX streaming classifiers. After `push` or
    `finish`, `restart` says the frames returned are all the frames so far (the top-dB floor rose): the consumer
    starts its model over on them."""

    def __init__(self, extractor):
        self.stft = StreamingSTFT(extractor)
        self.resampler, self.rate, self.finished, self.restart = None, None, False, False

    def push(self, samples: np.ndarray, sample_rate: int | None = None) -> Tensor:
        """Mono float samples in [-1, 1] at `sample_rate` (default: the model's rate); returns the frames they complete."""
        if self.finished:
            raise SpecrnnError(FINISHED)
        samples = np.asarray(samples)
        if samples.ndim != 1:
            raise SpecrnnError(f"push_audio takes mono samples (1-D), got shape {samples.shape}")
        if not np.issubdtype(samples.dtype, np.floating):
            raise SpecrnnError(f"push_audio takes float samples in [-1, 1], got {samples.dtype} "
                               "(for int16 audio, divide by 32768)")
        samples = samples.astype(np.float32, copy=False)
        if not np.isfinite(samples).all():
            raise SpecrnnError("push_audio got NaN or infinite samples")
        model_rate = self.stft.cfg.sample_rate
        rate = model_rate if sample_rate is None else sample_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise SpecrnnError(f"sample_rate must be a whole number of Hz above 0, got {sample_rate!r}")
        if self.rate is not None and rate != self.rate:
            raise SpecrnnError(f"the stream's sample rate changed from {self.rate} to {rate} Hz; call reset() first")
        self.rate = rate
        if rate != model_rate:
            if self.resampler is None:
                import soxr

                self.resampler = soxr.ResampleStream(rate, model_rate, 1, dtype="float32", quality="HQ")
            samples = self.resampler.resample_chunk(samples)
        frames = self.stft.push(samples)
        self.restart = self.stft.restart
        return frames

    def finish(self) -> Tensor:
        """The frames still held back: the resampler's delayed tail, then the STFT's right padding. None pushed: none."""
        if self.finished:
            return torch.zeros(0, self.stft.cfg.n_features)
        self.finished, self.restart = True, False
        frames = []
        parts = [lambda: self.stft.push(self.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
                 ] if self.resampler is not None else []
        for part in [*parts, lambda: self.stft.finish() if self.stft.samples else None]:
            out = part()
            if out is not None:
                frames = [out] if self.stft.restart else [*frames, out]  # a restart's frames hold the earlier ones
                self.restart = self.restart or self.stft.restart
        return torch.cat(frames) if frames else torch.zeros(0, self.stft.cfg.n_features)


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
        _check_features_stream(features)


def _check_features_stream(features) -> None:
    if features.trim_db is not None:
        raise SpecrnnError("this model's features trim silence at both ends of each clip (features.trim_db), which "
                           "needs the whole clip; a stream has no end. Train with features.trim_db: null to stream audio.")


class StreamingClassifier(CTCStreamDecoding):
    """Run a trained unidirectional model on a stream. `push_audio`/`push_features` return the running class
    probabilities (None until the first frame reaches the RNN; frame and CTC heads: the latest step's); `finish()`
    flushes the right context. A CTC model also decodes as it goes: `tokens()` is the sequence so far."""

    def __init__(self, model: SpecRNN, feature_extractor=None, classes: list[str] | None = None, multilabel: bool = False):
        check_streamable(model.cfg)
        if model.cfg.normalize == "group":  # Predictor.enrolled_model() folds the speaker's mean in: a constant, it streams
            from .predictor import ENROL

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
        self.ctc = GreedyCTC(self.model.head.net[-1].out_features - 1) if self.model.cfg.head == "ctc" else None

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


def print_stream(predictor, files: list[str], chunk_ms: float, as_json: bool, top_k: int = 1) -> int:
    """`specrnn predict --stream`: after every chunk of each file, the running top label (and the next top_k - 1),
    or for a CTC model the sequence decoded so far."""
    import json

    from ..audio import load_audio

    f = predictor.cfg.features
    step = max(1, int(round(chunk_ms / 1000 * f.sample_rate)))
    failed = 0
    for path in files:
        try:
            wave = load_audio(path, f.sample_rate, f.max_seconds, f.crop)
        except SpecrnnError as e:
            print(f"specrnn: error: {e}", file=sys.stderr)
            failed += 1
            continue
        s = stream(predictor)
        events = []
        for start in range(0, len(wave), step):
            s.push_audio(wave[start : start + step])
            events.append((min(start + step, len(wave)) / f.sample_rate, _reading(s, top_k)))
        s.finish()
        events.append((len(wave) / f.sample_rate, _reading(s, top_k)))
        for i, (t, reading) in enumerate(events):
            final = i == len(events) - 1
            line = {"path": str(path), "time": round(t, 3), "label": None, **reading}
            if final:
                line["final"] = True
            when = "end" if final else f"{t:7.2f}s"
            if as_json:
                print(json.dumps(line))
            elif s.ctc is not None and reading:
                print(f"{path}\t{when}\t{line['label'] or '(nothing decoded)'}\t(best path {percent(line['probability'])})")
            else:
                tops = line.get("top", [line] if reading else [])
                print(f"{path}\t{when}\t" + (", ".join(f"{x['label']} {percent(x['probability'])}" for x in tops) or "-"))
    return 1 if failed else 0


def _reading(s: StreamingClassifier, top_k: int) -> dict:
    """What a stream says now: the top label and its probability (and the top k), or a CTC model's sequence so far
    and its best path's probability; {} before the first frame reaches the RNN."""
    if s.ctc is not None:
        p = s.path_probability()
        return {} if p is None else {"label": " ".join(s.tokens()), "probability": significant(p, 4)}
    p = s.probabilities()
    if p is None:
        return {}
    best = np.argsort(-p, kind="stable")[:top_k]
    out = {"label": s.classes[best[0]], "probability": significant(float(p[best[0]]), 4)}
    if top_k > 1:
        out["top"] = [{"label": s.classes[k], "probability": significant(float(p[k]), 4)} for k in best]
    return out
