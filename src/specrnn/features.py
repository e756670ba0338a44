"""Spectrogram features in torch, batched (CPU or GPU): functions first, thin modules around them.

A clip of N samples gives T = 1 + N // hop frames (centred STFT, zero padding like librosa), so a
clip's frames are the same alone or inside a zero-padded batch.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from .config import FeatureConfig

AMIN = 1e-10  # power floor before the log, as librosa.power_to_db


# ---------------------------------------------------------------- functional
def num_frames(num_samples: Tensor | int, hop_length: int) -> Tensor | int:
    """Frames of a centred STFT of `num_samples` samples."""
    return 1 + num_samples // hop_length


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths -> (B, T) bool mask, True on real frames."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def power_spectrogram(wave: Tensor, n_fft: int, hop_length: int, win_length: int, window: Tensor | None = None) -> Tensor:
    """(B, N) waveform -> (B, T, n_fft//2+1) power spectrum, centred with zero padding (librosa's default)."""
    if window is None:
        window = torch.hann_window(win_length, device=wave.device, dtype=wave.dtype)
    spec = torch.view_as_real(
        torch.stft(wave, n_fft, hop_length, win_length, window, center=True, pad_mode="constant", return_complex=True)
    )
    return (spec[..., 0].square() + spec[..., 1].square()).transpose(1, 2)  # 1.7-2x faster than .pow(2).sum(-1)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale (linear below 1 kHz, logarithmic above), as librosa with htk=False."""
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log_region = f >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """(n_fft//2+1, n_mels) triangular filters, Slaney scale and area normalisation (= librosa.filters.mel.T)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return torch.from_numpy(weights.T.astype(np.float32))


def dct_matrix(n_in: int, n_out: int) -> Tensor:
    """(n_in, n_out) orthonormal DCT-II basis, as scipy.fft.dct(norm='ortho') used by librosa.feature.mfcc."""
    n = torch.arange(n_in, dtype=torch.float64)
    k = torch.arange(n_out, dtype=torch.float64)
    basis = torch.cos(math.pi / n_in * (n[:, None] + 0.5) * k[None, :]) * math.sqrt(2.0 / n_in)
    basis[:, 0] /= math.sqrt(2.0)
    return basis.float()


def trim_silence(power: Tensor, lengths: Tensor, top_db: float) -> tuple[Tensor, Tensor]:
    """Drop each clip's leading and trailing frames whose energy lies more than `top_db` below its loudest
    frame (librosa.effects.trim's rule), so silence before and after the sound does not count; real frames
    only, so a clip trims the same alone or inside a padded batch. (B, T, K) power -> trimmed power, lengths."""
    B, T, K = power.shape
    mask = lengths_to_mask(lengths, T)
    energy = (10.0 * torch.log10(power.sum(-1).clamp_min(AMIN))).masked_fill(~mask, -torch.inf)
    loud = energy >= energy.amax(1, keepdim=True) - top_db  # padding (-inf) is never loud
    idx = torch.arange(T, device=power.device)
    first = torch.where(loud, idx, T).amin(1)
    new_lengths = torch.where(loud, idx, -1).amax(1) - first + 1
    T_new = int(new_lengths.max())
    pos = (first[:, None] + idx[None, :T_new]).clamp(max=T - 1)
    trimmed = power.gather(1, pos[..., None].expand(B, T_new, K))
    return trimmed.masked_fill(~lengths_to_mask(new_lengths, T_new)[..., None], 0.0), new_lengths


def power_to_db(power: Tensor, lengths: Tensor | None = None, top_db: float | None = 80.0) -> Tensor:
    """10*log10(power), floored at each clip's maximum (over its real frames) minus `top_db`."""
    db = 10.0 * torch.log10(power.clamp_min(AMIN))
    if top_db is not None:
        masked = db if lengths is None else db.masked_fill(~lengths_to_mask(lengths, db.shape[1])[..., None], -torch.inf)
        peak = masked.amax(dim=(1, 2), keepdim=True)
        db = torch.maximum(db, peak - top_db)
    return db


# ---------------------------------------------------------------- normalisation (real frames only)
def masked_mean_std(x: Tensor, mask: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-clip, per-bin mean and std over the real frames of (B, T, F) features."""
    m = mask[..., None].to(x.dtype)
    count = m.sum(1).clamp_min(1.0)
    mean = (x * m).sum(1) / count
    var = (((x - mean[:, None]) * m) ** 2).sum(1) / count
    return mean, (var + eps).sqrt()


def normalize_frames(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Each frame to zero mean, unit variance across frequency; eps keeps silent frames finite."""
    mean = x.mean(-1, keepdim=True)
    return (x - mean) / (x.var(-1, unbiased=False, keepdim=True) + eps).sqrt()


class Normalizer(nn.Module):
    """`global` (training-set statistics, stored as buffers in the checkpoint), `utterance` (per-clip CMVN
    over real frames), `frame` (per frame across frequency) or `none`. Padded frames come out as zeros.
    `group` is `global` on features whose group's (speaker's) mean was already subtracted (group_means())."""

    def __init__(self, mode: str, n_features: int):
        super().__init__()
        self.mode = mode
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    @torch.no_grad()
    def fit(self, features: list[np.ndarray], eps: float = 1e-5) -> None:
        """Global statistics from a list of (T, F) arrays: every real frame counts once."""
        total = np.zeros(self.mean.shape[0], dtype=np.float64)
        total_sq = np.zeros_like(total)
        count = 0
        for f in features:
            f64 = f.astype(np.float64)
            total += f64.sum(0)
            total_sq += (f64**2).sum(0)
            count += f.shape[0]
        mean = total / max(count, 1)
        var = np.maximum(total_sq / max(count, 1) - mean**2, 0.0)
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(np.sqrt(var + eps)))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        mask = lengths_to_mask(lengths, x.shape[1])
        if self.mode in ("global", "group"):
            x = (x - self.mean) / self.std
        elif self.mode == "utterance":
            mean, std = masked_mean_std(x, mask)
            x = (x - mean[:, None]) / std[:, None]
        elif self.mode == "frame":
            x = normalize_frames(x)
        return x.masked_fill(~mask[..., None], 0.0)


def group_means(features: list[np.ndarray | None], groups: list[str]) -> dict[str, np.ndarray]:
    """Each group's mean feature vector over every real frame of its clips (None: unusable, skipped). Subtracting
    a speaker's mean MFCC vector (speaker CMN) removes the speaker's vocal tract and channel while keeping what
    differs between its words, which per-clip normalisation of a short word partly removes."""
    total: dict[str, np.ndarray] = {}
    count: dict[str, int] = {}
    for f, g in zip(features, groups):
        if f is not None and len(f):
            total[g] = total.get(g, 0.0) + f.astype(np.float64).sum(0)
            count[g] = count.get(g, 0) + len(f)
    return {g: (total[g] / count[g]).astype(np.float32) for g in total}


# ---------------------------------------------------------------- module
class FeatureExtractor(nn.Module):
    """Waveforms (B, N) with lengths -> features (B, T, F) with frame lengths, per `FeatureConfig`."""

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)
        if cfg.kind in ("logmel", "mfcc"):
            self.register_buffer(
                "mel", mel_filterbank(cfg.n_fft, cfg.n_mels, cfg.sample_rate, cfg.f_min, cfg.f_max), persistent=False
            )
        if cfg.kind == "mfcc":
            self.register_buffer("dct", dct_matrix(cfg.n_mels, cfg.n_mfcc), persistent=False)

    def forward(self, wave: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        c = self.cfg
        frames = num_frames(lengths, c.hop_length)
        power = power_spectrogram(wave, c.n_fft, c.hop_length, c.win_length, self.window)
        if c.trim_db is not None:
            power, frames = trim_silence(power, frames, c.trim_db)
        if c.kind != "logpower":
            power = power @ self.mel
        x = power_to_db(power, frames, c.top_db)
        if c.kind == "mfcc":
            x = x @ self.dct
        return x, frames

    @torch.no_grad()
    def extract(self, waves: list[np.ndarray], batch_size: int = 32, progress=None) -> list[np.ndarray]:
        """Features of many clips, batched by similar length so little is spent on padding."""
        device = self.window.device
        order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
        out: list[np.ndarray | None] = [None] * len(waves)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            lengths = torch.tensor([len(waves[i]) for i in idx])
            batch = torch.zeros(len(idx), int(lengths.max()))
            for row, i in enumerate(idx):
                batch[row, : len(waves[i])] = torch.from_numpy(waves[i])
            feats, frames = self(batch.to(device), lengths.to(device))
            feats = feats.cpu().numpy()
            for row, i in enumerate(idx):
                out[i] = np.ascontiguousarray(feats[row, : int(frames[row])])
            if progress is not None:
                progress(len(idx))
        return out  # type: ignore[return-value]
