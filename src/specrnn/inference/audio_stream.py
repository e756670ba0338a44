"""Audio chunks -> feature frames for streaming: soxr's streaming resampler, then a causal STFT (log-mel / MFCC)
whose top-dB floor follows the loudest frame so far, restarting the model's input when that floor rises."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import SpecrnnError
from ..features import AMIN


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
        check_features_stream(self.cfg)
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


def check_features_stream(features) -> None:
    """Refuse features that need the whole clip (silence trimming at both ends) before a stream starts."""
    if features.trim_db is not None:
        raise SpecrnnError("this model's features trim silence at both ends of each clip (features.trim_db), which "
                           "needs the whole clip; a stream has no end. Train with features.trim_db: null to stream audio.")
