"""The plain baseline the speed figures compare against: the common recipe, written the common way.

A Dataset that decodes and computes a librosa log-mel for every item (so every epoch re-extracts features), a
DataLoader with random batches padded to the longest clip, and an nn.LSTM or nn.GRU of the same size as the
specrnn model it is compared with (the default: 2 x 128 unidirectional GRU) reading `out[:, -1]` of the padded
batch, Adam, cross-entropy. librosa is a benchmark-only dependency (extra `bench`).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

SR, N_FFT, WIN, HOP, N_MELS = 16000, 512, 400, 160, 64  # specrnn's default features


def librosa_logmel(path: str) -> np.ndarray:
    """Decode (librosa.load, resampled to 16 kHz) and log-mel (T, 64) of one file, as tutorials do it."""
    import librosa

    y, _ = librosa.load(path, sr=SR)
    return logmel_of(y)


def logmel_of(y: np.ndarray) -> np.ndarray:
    import librosa

    S = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP, win_length=WIN, n_mels=N_MELS,
                                       center=True, pad_mode="constant")
    return librosa.power_to_db(S, ref=1.0, top_db=80.0).T.astype(np.float32)


class AudioFileDataset(Dataset):
    """(features, label) per item, extracted on every access: no cache."""

    def __init__(self, paths: list[str], labels: list[int]):
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        x = torch.from_numpy(librosa_logmel(self.paths[i]))
        return (x - x.mean()) / (x.std() + 1e-5), self.labels[i]  # per-clip standardisation, the usual shortcut


def pad_collate(items):
    xs, ys = zip(*items)
    return nn.utils.rnn.pad_sequence(list(xs), batch_first=True), torch.tensor([x.shape[0] for x in xs]), torch.tensor(ys)


class PlainRNN(nn.Module):
    """nn.LSTM / nn.GRU on a zero-padded batch, logits from out[:, -1]: the common recipe."""

    def __init__(self, cell: str = "gru", hidden: int = 128, layers: int = 2, bidirectional: bool = False,
                 n_in: int = N_MELS, n_out: int = 10):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(n_in, hidden, layers, batch_first=True, bidirectional=bidirectional, dropout=0.15)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), n_out)
        self.desc = f"nn.{rnn.__name__} {layers}x{hidden}{' bi' if bidirectional else ''}"

    @classmethod
    def like(cls, model_cfg, n_out: int) -> "PlainRNN":
        """The plain twin of a specrnn model config: same cell, width, depth and directions."""
        m = model_cfg
        return cls(m.cell, m.hidden, m.layers, m.bidirectional, n_out=n_out)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def loader(paths: list[str], labels: list[int], batch_size: int = 32, shuffle: bool = True, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(AudioFileDataset(paths, labels), batch_size=batch_size, shuffle=shuffle, collate_fn=pad_collate,
                      num_workers=0, generator=g)


def train_epoch(model: nn.Module, dl: DataLoader, opt, max_batches: int | None = None) -> dict:
    """One training epoch (or its first `max_batches`): seconds, real frames, padded frames, clips."""
    model.train()
    t0 = time.perf_counter()
    real = padded = clips = 0
    for i, (x, lengths, y) in enumerate(dl):
        if max_batches is not None and i >= max_batches:
            break
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        real += int(lengths.sum())
        padded += x.shape[0] * x.shape[1]
        clips += x.shape[0]
    return {"seconds": time.perf_counter() - t0, "frames": real, "padded_frames": padded, "clips": clips}


@torch.no_grad()
def accuracy(model: nn.Module, dl: DataLoader) -> float:
    model.eval()
    right = n = 0
    for x, _, y in dl:
        right += int((model(x).argmax(-1) == y).sum())
        n += len(y)
    return right / max(n, 1)
