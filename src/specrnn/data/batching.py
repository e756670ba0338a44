"""Batches: pad to the batch's longest clip and carry lengths; bucket by length so little is padding."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


class FeatureDataset(Dataset):
    """Indexable (features, target[, group]) over features in memory or in the store's mapped shards (made
    tensors one item at a time: no per-clip tensor objects held); groups only where a task needs them."""

    def __init__(self, features: list[np.ndarray], targets: np.ndarray, groups: np.ndarray | None = None):
        self.features = features
        self.targets = torch.as_tensor(targets)
        self.groups = None if groups is None else torch.as_tensor(groups)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int):
        f = torch.from_numpy(self.features[i])
        if self.groups is None:
            return f, self.targets[i]
        return f, self.targets[i], self.groups[i]


def pad_batch(features: list[Tensor]) -> tuple[Tensor, Tensor]:
    """List of (T_i, F) -> zero-padded (B, T_max, F) and lengths (B,)."""
    lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.int64)
    return torch.nn.utils.rnn.pad_sequence(features, batch_first=True), lengths


def collate(items) -> dict:
    feats, targets, *groups = zip(*items)
    x, lengths = pad_batch(list(feats))
    batch = {"features": x, "lengths": lengths, "targets": torch.stack(list(targets))}
    if groups:
        batch["groups"] = torch.stack(list(groups[0]))
    return batch


class BucketBatchSampler(torch.utils.data.Sampler):
    """Shuffled batches of similar-length clips.

    Each epoch: shuffle, cut into pools of `pool` batches, sort each pool by length, batch it, shuffle
    the batches. Seeded by (seed, epoch) so runs and resumes are reproducible. Without shuffling, batches
    are sorted by length (evaluation). Under DDP each rank takes every world-th batch, all ranks equal.
    """

    def __init__(self, lengths, batch_size: int, shuffle: bool = True, bucket: bool = True, seed: int = 0, pool: int = 50):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.bucket, self.seed, self.pool = batch_size, shuffle, bucket, seed, pool
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable") if self.bucket else np.arange(n)
            return [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(n)
        batches = []
        step = self.batch_size * self.pool if self.bucket else n
        for s in range(0, n, step):
            chunk = order[s : s + step]
            if self.bucket:
                chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch."""
        batches = self._all_batches()
        rank, world = _dist()
        if world > 1 and self.shuffle:  # training: equal batch counts on every rank (a few batches repeat)
            per_rank = math.ceil(len(batches) / world)
            batches = (batches * 2)[: per_rank * world][rank::world]
        elif world > 1:  # evaluation: every clip exactly once over all ranks, so summed metrics stay exact
            order = np.argsort(self.lengths, kind="stable")
            mine = order[rank::world] if len(order) >= world else order[:1]  # fewer clips than ranks: one repeats
            batches = [mine[i : i + self.batch_size].tolist() for i in range(0, len(mine), self.batch_size)]
        return batches

    def __iter__(self):
        # lazy: the epoch's batches are drawn at the first next(), so a set_epoch() after iter() (Lightning creates
        # the iterator before on_train_epoch_start when resuming) still applies
        yield from self.batches()

    def __len__(self) -> int:
        return len(self.batches())


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def padding_fraction(lengths, batches: list[list[int]]) -> float:
    """Share of padded frames over all frames fed to the model (a benchmark figure)."""
    lengths = np.asarray(lengths)
    real = sum(int(lengths[b].sum()) for b in batches)
    total = sum(int(lengths[b].max()) * len(b) for b in batches)
    return 1.0 - real / max(total, 1)
