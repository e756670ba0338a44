"""The recognition baseline: the seed-style recipe with a CTC head, written the common way in a plain loop.

librosa log-mels at 16 kHz (per-clip standardised, benchmarks/baseline.py), a 2 x 128 nn.LSTM over the padded
batch with a linear layer scoring every frame (unidirectional, so padding after a clip cannot change its frames'
scores, and the CTC loss reads each clip's real frames only; packing would be exact too, but on utterances of 2 to 7
digits one packed training epoch took about 6 minutes here, FACTS.md measured packing 45x slower on mixed lengths), torch's CTC loss, Adam at 1e-3, a fixed number of epochs,
greedy decoding (best class per frame, repeats merged, blanks dropped). Scored with the same sequence metrics as
specrnn, on the same train/test rows.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from .defaults import LastStateLSTM


class LSTMCTC(LastStateLSTM):
    """The defaults suite's 2 x 128 LSTM, scoring every frame of the padded batch: log-probabilities (B, T, C), blank
    last (`lengths` unused: the loss and the decoding cut each clip at its length)."""

    def forward(self, x, lengths):
        return self.head(self.rnn(x)[0]).log_softmax(-1)


def ctc_baseline(train: list[tuple[str, str]], test: list[tuple[str, str]], epochs: int, batch_size: int = 32,
                 seed: int = 0) -> dict:
    """Train on (path, "tok tok ...") rows; test word error, sequence error and seconds (features included)."""
    from specrnn.evaluation import sequence_metrics
    from specrnn.decoding.greedy import collapse

    from .baseline import librosa_logmel

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    tokens = sorted({t for _, lab in train for t in lab.split()})
    index, blank = {t: i for i, t in enumerate(tokens)}, len(tokens)

    def feats(rows):
        out = []
        for p, _ in rows:
            x = torch.from_numpy(librosa_logmel(p))
            out.append((x - x.mean()) / (x.std() + 1e-5))
        return out

    xtr, xte = feats(train), feats(test)
    ytr = [torch.tensor([index[t] for t in lab.split()]) for _, lab in train]
    model = LSTMCTC(xtr[0].shape[1], len(tokens) + 1)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for b in torch.randperm(len(xtr), generator=g).split(batch_size):
            xs, ys = [xtr[i] for i in b], [ytr[i] for i in b]
            lengths = torch.tensor([len(v) for v in xs])
            lp = model(nn.utils.rnn.pad_sequence(xs, batch_first=True), lengths)
            loss = nn.functional.ctc_loss(lp.transpose(0, 1), torch.cat(ys), lengths, torch.tensor([len(y) for y in ys]),
                                          blank=blank, zero_infinity=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    hyps = []
    with torch.no_grad():
        for s in range(0, len(xte), 64):
            xs = xte[s : s + 64]
            lengths = torch.tensor([len(v) for v in xs])
            best = model(nn.utils.rnn.pad_sequence(xs, batch_first=True), lengths).argmax(-1)
            hyps += [collapse(row[: int(n)].numpy(), blank) for row, n in zip(best, lengths)]
    refs = [[index[t] for t in lab.split()] for _, lab in test]
    m = sequence_metrics(refs, hyps, tokens)
    return {"wer": m["token_error_rate"], "ser": m["sequence_error_rate"], "seconds": time.perf_counter() - t0}
