"""Training-time augmentation on feature batches, vectorised in torch. Modules act only in training mode,
so evaluation, validation and prediction never see augmented data."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .features import lengths_to_mask


def random_masks(lengths: Tensor, size: int, count: int, max_width: int, max_fraction: float = 1.0, generator=None) -> Tensor:
    """(B, size) bool: `count` random spans per row, each at most `max_width` and `max_fraction` of the row's length."""
    B = lengths.shape[0]
    device = lengths.device
    if count <= 0 or max_width <= 0:
        return torch.zeros(B, size, dtype=torch.bool, device=device)
    cap = torch.minimum(torch.full_like(lengths, max_width), (lengths * max_fraction).long())[:, None, None]
    width = (torch.rand(B, count, 1, device=device, generator=generator) * (cap + 1)).long()
    room = (lengths[:, None, None] - width).clamp_min(1)
    start = (torch.rand(B, count, 1, device=device, generator=generator) * room).long()
    pos = torch.arange(size, device=device)[None, None, :]
    return ((pos >= start) & (pos < start + width)).any(1)


class SpecAugment(nn.Module):
    """Time and frequency masks (Park et al. 2019) on normalised features; masked values become 0 (the mean)."""

    def __init__(self, time_masks: int = 2, time_width: int = 10, freq_masks: int = 2, freq_width: int = 8,
                 time_fraction: float = 0.2):
        super().__init__()
        self.time_masks, self.time_width, self.freq_masks, self.freq_width = time_masks, time_width, freq_masks, freq_width
        self.time_fraction = time_fraction  # a short clip is never masked away: each mask <= this share of it

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        if not self.training:
            return x
        B, T, F = x.shape
        t_mask = random_masks(lengths, T, self.time_masks, self.time_width, self.time_fraction)
        f_mask = random_masks(torch.full((B,), F, device=x.device), F, self.freq_masks, self.freq_width)
        return x.masked_fill(t_mask[:, :, None] | f_mask[:, None, :], 0.0)


def colored_noise(exponent: float, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
    """Gaussian noise whose power spectrum falls as 1 / f^exponent (0 white, 1 pink, 2 brown), peak 1."""
    spec = torch.fft.rfft(torch.randn(num_samples, generator=generator, dtype=torch.float64))
    f = torch.arange(spec.shape[0], dtype=torch.float64).clamp_min(1.0)
    x = torch.fft.irfft(spec / f ** (exponent / 2), num_samples)
    return (x / x.abs().max()).float()


def _db_to_power(x: Tensor) -> Tensor:
    return torch.pow(10.0, x / 10.0)


def _power_to_db(p: Tensor) -> Tensor:
    return 10.0 * torch.log10(p.clamp_min(1e-10))


def roll_within_length(x: Tensor, lengths: Tensor, shifts: Tensor) -> Tensor:
    """Circularly shift each clip's real frames by `shifts[b]`; padding stays where it is."""
    B, T = x.shape[:2]
    t = torch.arange(T, device=x.device)[None, :]
    L = lengths[:, None].clamp_min(1)
    idx = torch.where(t < L, (t - shifts[:, None]) % L, t)
    return x.gather(1, idx[..., None].expand_as(x))


def _interpolate(x: Tensor, pos: Tensor, last: Tensor | int, dim: int) -> Tensor:
    """Values of x at fractional positions `pos` along `dim` (1: time, pos (B, T'); 2: frequency, pos (B, F)),
    linear between neighbours, never reading past index `last` (an int, or (B, 1) per row)."""
    B, T, F = x.shape
    lo = pos.floor().long()
    hi = torch.minimum(lo + 1, torch.as_tensor(last, device=x.device))
    if dim == 1:
        w, shape, index = (pos - lo)[..., None], (B, pos.shape[1], F), lambda i: i[..., None]
    else:
        w, shape, index = (pos - lo)[:, None, :], (B, T, pos.shape[1]), lambda i: i[:, None, :]
    gather = lambda i: x.gather(dim, index(i).expand(shape))  # noqa: E731
    return gather(lo) * (1 - w) + gather(hi) * w


def warp_frequency(x: Tensor, factors: Tensor) -> Tensor:
    """Stretch each clip's frequency axis by `factors[b]` (linear interpolation between bins, edges clamped): a
    vocal-tract-length-style perturbation on (mel) spectra, so a model does not learn one speaker's formants."""
    F = x.shape[2]
    pos = (torch.arange(F, device=x.device, dtype=x.dtype)[None, :] / factors[:, None]).clamp(0, F - 1)  # (B, F)
    return _interpolate(x, pos, F - 1, dim=2)


def stretched_lengths(lengths: Tensor, rates: Tensor | float) -> Tensor:
    """Clip lengths after playing them `rates` times faster (speed perturbation); at least one frame."""
    return torch.ceil(lengths / rates).long().clamp_min(1)


def stretch_time(x: Tensor, lengths: Tensor, rates: Tensor) -> tuple[Tensor, Tensor]:
    """Play each clip `rates[b]` times faster (speed perturbation on features): frame t' of the output is the
    linear interpolation of input frames at t' * rate, inside the clip's own length."""
    new_len = stretched_lengths(lengths, rates)
    last = (lengths - 1).clamp_min(0)[:, None]
    pos = torch.arange(int(new_len.max()), device=x.device, dtype=x.dtype)[None, :] * rates[:, None]
    pos = torch.minimum(pos, last.to(x.dtype))
    return _interpolate(x, pos, last, dim=1), new_len


def concat_clips(x: Tensor, lengths: Tensor, targets: Tensor, partner: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Append clip `partner[b]`'s real frames to clip b's, and its token sequence (-1 padded rows) to b's; a row
    whose partner is -1 stays as it is. Sequence augmentation for CTC: new token orders and positions every batch,
    so a small training set cannot be learnt one sequence per clip."""
    has = partner >= 0
    p = partner.clamp_min(0)
    add_len = torch.where(has, lengths[p], 0)
    new_len = lengths + add_len
    t = torch.arange(int(new_len.max()), device=x.device)[None, :]
    first = t < lengths[:, None]
    rows = torch.where(first, torch.arange(len(x), device=x.device)[:, None], p[:, None])
    frames = torch.where(first, t, (t - lengths[:, None]).clamp(0, x.shape[1] - 1))
    out = x[rows, frames.clamp_max(x.shape[1] - 1)].masked_fill(~lengths_to_mask(new_len, t.shape[1])[..., None], 0.0)
    n_tok = (targets >= 0).sum(1)
    add_tok = torch.where(has, n_tok[p], 0)
    s = torch.arange(int((n_tok + add_tok).max()), device=x.device)[None, :]
    own = s < n_tok[:, None]
    s_other = (s - n_tok[:, None]).clamp(0, targets.shape[1] - 1)
    tok = torch.where(own, targets.gather(1, s.clamp_max(targets.shape[1] - 1).expand(len(x), -1)), targets[p[:, None], s_other])
    tok = torch.where(s < (n_tok + add_tok)[:, None], tok, -1)
    return out, new_len, tok


def pause_cuts(energy_db: np.ndarray, n_tokens: int, smooth: int = 5, level: float = 0.35) -> np.ndarray | None:
    """Where to cut one clip between its tokens: the middles of the `n_tokens - 1` longest pauses between its first
    and last sound (frames below `level` of the way from its quiet 10th to its loud 95th energy percentile, after a
    `smooth`-frame moving average). None when the pauses do not split it into that many pieces of plausible
    lengths (each within 0.4-2.5x the median piece): such a clip is not cut."""
    if n_tokens < 2 or len(energy_db) < 2 * smooth:
        return None
    e = np.convolve(np.pad(energy_db, smooth // 2, mode="edge"), np.ones(smooth) / smooth, "valid")
    lo, hi = np.percentile(e, 10), np.percentile(e, 95)
    loud = np.flatnonzero(e >= lo + level * (hi - lo))
    if len(loud) < 2:
        return None
    quiet = e < lo + level * (hi - lo)
    quiet[: loud[0]] = quiet[loud[-1]:] = False
    edges = np.diff(np.r_[0, quiet.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if len(starts) < n_tokens - 1:
        return None
    longest = np.sort(np.argsort(starts - ends, kind="stable")[: n_tokens - 1])
    cuts = (starts[longest] + ends[longest]) // 2
    pieces = np.diff(np.r_[loud[0], cuts, loud[-1] + 1])
    med = np.median(pieces)
    return cuts if pieces.min() >= 0.4 * med and pieces.max() <= 2.5 * med else None


def crop_at_pauses(x: Tensor, lengths: Tensor, targets: Tensor, chosen: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For each chosen row whose pauses split it into its tokens (`pause_cuts` on the frame energies of its dB
    features), keep a random run of consecutive tokens with their audio, cut in the pauses around them: shorter
    sequences that start and end anywhere, so CTC cannot lean on where a token sits in its clip."""
    energy = (10 * torch.log10(torch.pow(10.0, x.detach().double() / 10).sum(-1).clamp_min(1e-30))).cpu().numpy()
    rows = [[t for t in row if t >= 0] for row in targets.tolist()]  # the real tokens
    spans, new_tokens = [], []
    for b in range(len(x)):
        n, toks = int(lengths[b]), rows[b]
        cuts = pause_cuts(energy[b, :n], len(toks)) if chosen[b] else None
        if cuts is None:
            spans.append((0, n))
            new_tokens.append(toks)
            continue
        i = int(torch.randint(len(toks), ()))
        j = int(torch.randint(i + 1, len(toks) + 1, ()))
        bounds = np.r_[0, cuts, n]
        spans.append((int(bounds[i]), int(bounds[j])))
        new_tokens.append(toks[i:j])
    start = torch.tensor([a for a, _ in spans], device=x.device)
    new_len = torch.tensor([b - a for a, b in spans], device=x.device)
    t = torch.arange(int(new_len.max()), device=x.device)[None, :]
    frames = (start[:, None] + t).clamp_max(x.shape[1] - 1)
    out = x.gather(1, frames[..., None].expand(-1, -1, x.shape[2]))
    out = out.masked_fill(~lengths_to_mask(new_len, out.shape[1])[..., None], 0.0)
    tok = torch.full((len(x), max(len(r) for r in new_tokens)), -1, dtype=targets.dtype, device=targets.device)
    for b, r in enumerate(new_tokens):
        tok[b, : len(r)] = torch.as_tensor(r, dtype=targets.dtype)
    return out, new_len, tok


class BatchAugment(nn.Module):
    """Waveform-free augmentation of a training batch of log-power features (dB), all vectorised in torch:
    random gain, circular time shift, background noise at a random SNR (mixed in the power domain, so
    noise adds to the sound rather than to its logarithm) and mixup (also in the power domain).
    MFCCs (pass their `dct` basis) are augmented as the log-mel spectrum they encode (x @ dct.T, exact up to
    the cepstral smoothing MFCCs already apply) and turned back, so warping moves formants, not coefficients.
    Called only from the training step: validation, test and prediction never see it."""

    def __init__(self, cfg, n_classes: int, noise: list[Tensor] | None = None, dct: Tensor | None = None):
        super().__init__()
        self.cfg, self.n_classes = cfg, n_classes
        self.register_buffer("dct", dct, persistent=False)
        bank = [n @ dct.T for n in noise or []] if dct is not None else list(noise or [])
        # the noise clips end to end in one tensor, so a batch's noise is one gather (buffers follow the device)
        lengths = torch.tensor([len(n) for n in bank], dtype=torch.long)
        self.register_buffer("noise_bank", torch.cat(bank) if bank else None, persistent=False)
        self.register_buffer("noise_lengths", lengths, persistent=False)
        self.register_buffer("noise_offsets", torch.cumsum(lengths, 0) - lengths, persistent=False)

    @property
    def noise(self) -> list[Tensor]:
        """The noise clips (log-mel or log-power features), one tensor each."""
        return [] if self.noise_bank is None else list(self.noise_bank.split(self.noise_lengths.tolist()))

    def forward(self, batch: dict) -> dict:
        x, lengths, y = batch["features"], batch["lengths"], batch["targets"]
        B = x.shape[0]
        c = self.cfg
        if self.dct is not None:
            x = x @ self.dct.T  # cepstra -> (smoothed) log-mel dB
        if c.pause_crop > 0:  # a random run of each chosen clip's tokens, cut at the pauses around it
            x, lengths, y = crop_at_pauses(x, lengths, y, torch.rand(B) < c.pause_crop)
        if c.concat > 0 and B > 1:  # each chosen clip gets another clip of the batch appended (never itself)
            partner = (torch.arange(B, device=x.device) + torch.randint(1, B, (B,), device=x.device)) % B
            x, lengths, y = concat_clips(x, lengths, y, torch.where(torch.rand(B, device=x.device) < c.concat, partner, -1))
        if c.gain_db > 0:
            x = x + (torch.rand(B, 1, 1, device=x.device) * 2 - 1) * c.gain_db
        if c.freq_warp > 0:
            x = warp_frequency(x, 1 + (torch.rand(B, device=x.device) * 2 - 1) * c.freq_warp)
        if c.speed > 0:
            x, lengths = stretch_time(x, lengths, 1 + (torch.rand(B, device=x.device) * 2 - 1) * c.speed)
        if c.time_shift > 0:
            shifts = (torch.rand(B, device=x.device) * c.time_shift * lengths).long()
            x = roll_within_length(x, lengths, shifts)
        if self.noise_bank is not None:
            x = self._add_noise(x, lengths)
        if c.mixup > 0 and B > 1:
            lam = torch.distributions.Beta(c.mixup, c.mixup).sample((B,)).to(x.device)
            lam = torch.maximum(lam, 1 - lam)  # the first clip dominates: its length and label lead
            perm = torch.randperm(B, device=x.device)
            x = _power_to_db(lam[:, None, None] * _db_to_power(x) + (1 - lam[:, None, None]) * _db_to_power(x[perm]))
            lengths = torch.maximum(lengths, lengths[perm])
            onehot = y.float() if y.dim() == 2 else torch.nn.functional.one_hot(y, self.n_classes).float()
            y = lam[:, None] * onehot + (1 - lam[:, None]) * onehot[perm]
        if self.dct is not None:
            x = x @ self.dct  # back to cepstra
        mask = lengths_to_mask(lengths, x.shape[1])[..., None]  # padding is zero again, whatever moved it
        return {**batch, "features": x.masked_fill(~mask, 0.0), "lengths": lengths, "targets": y}

    def noise_slices(self, B: int, T: int) -> Tensor:
        """(B, T, F): for each row a random clip of the bank, read from a random start and wrapping round."""
        device = self.noise_bank.device
        k = torch.randint(len(self.noise_lengths), (B,), device=device)
        length = self.noise_lengths[k]
        start = (torch.rand(B, device=device) * length).long()
        t = (start[:, None] + torch.arange(T, device=device)[None, :]) % length[:, None]
        return self.noise_bank[self.noise_offsets[k][:, None] + t]

    def _add_noise(self, x: Tensor, lengths: Tensor) -> Tensor:
        B, T, F = x.shape
        lo, hi = self.cfg.noise_snr_db
        noise = self.noise_slices(B, T)
        mask = lengths_to_mask(lengths, T)[..., None].float()
        p_sig, p_noise = _db_to_power(x), _db_to_power(noise)
        e_sig = (p_sig * mask).sum((1, 2)) / (mask.sum((1, 2)) * F).clamp_min(1)
        e_noise = (p_noise * mask).sum((1, 2)) / (mask.sum((1, 2)) * F).clamp_min(1)
        snr = lo + torch.rand(B, device=x.device) * (hi - lo)
        gain = e_sig / e_noise.clamp_min(1e-10) * torch.pow(10.0, -snr / 10.0)
        return _power_to_db(p_sig + gain[:, None, None] * p_noise)
