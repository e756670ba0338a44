"""Augmentation: batched, correct, and never applied outside training."""
import pytest
import torch

from specrnn.augment import BatchAugment, SpecAugment, roll_within_length
from specrnn.config import AugmentConfig, Config, ModelConfig
from specrnn.data.batching import pad_batch
from specrnn.models import build_model
from specrnn.tasks import ClassificationTask


def _batch(B=6, F=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, lengths = pad_batch([torch.randn(t, F, generator=g) * 10 - 40 for t in (30, 7, 18, 25, 3, 30)[:B]])
    return {"features": x, "lengths": lengths, "targets": torch.arange(B) % 3}


def test_roll_keeps_each_clips_frames_and_padding():
    b = _batch()
    shifts = torch.tensor([3, 1, 17, 0, 2, 29])
    r = roll_within_length(b["features"], b["lengths"], shifts)
    for i, n in enumerate(b["lengths"].tolist()):
        torch.testing.assert_close(r[i, :n], torch.roll(b["features"][i, :n], shifts[i].item() % n, 0))
        torch.testing.assert_close(r[i, n:], b["features"][i, n:])


def test_frequency_warp():
    from specrnn.augment import warp_frequency

    x = torch.arange(8.0).repeat(2, 3, 1)  # bin index as value
    same = warp_frequency(x, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(same, x)
    up = warp_frequency(x, torch.tensor([2.0, 0.5]))
    torch.testing.assert_close(up[0, 0], torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]))  # content moves up
    torch.testing.assert_close(up[1, 0], torch.tensor([0.0, 2, 4, 6, 7, 7, 7, 7]))  # moves down, edge clamped


def test_speed_perturbation_stretches_each_clip_within_its_length():
    from specrnn.augment import stretch_time

    x = torch.arange(10.0)[None, :, None].repeat(2, 1, 2)  # frame index as value
    lengths = torch.tensor([10, 6])
    y, new = stretch_time(x, lengths, torch.tensor([2.0, 0.5]))
    assert new.tolist() == [5, 12] and y.shape[1] == 12
    torch.testing.assert_close(y[0, :5, 0], torch.tensor([0.0, 2, 4, 6, 8]))  # twice as fast: every other frame
    torch.testing.assert_close(y[1, :12, 0], torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5]))  # never past frame 5


def test_gain_mixup_and_noise():
    torch.manual_seed(0)
    b = _batch()
    out = BatchAugment(AugmentConfig(gain_db=6), 3)(b)
    delta = (out["features"] - b["features"])[0, :30]
    assert delta.abs().max() <= 6 + 1e-4 and delta.std() < 1e-4  # one gain per clip
    mixed = BatchAugment(AugmentConfig(mixup=0.4), 3)(b)
    torch.testing.assert_close(mixed["targets"].sum(1), torch.ones(6))
    assert (mixed["targets"].max(1).values >= 0.5).all() and (mixed["lengths"] >= b["lengths"]).all()
    # noise at a fixed SNR: the added power is that SNR below the clip's mean power
    noise = [torch.full((50, 8), -30.0)]
    cfg = AugmentConfig(noise_snr_db=[10.0, 10.0])
    noisy = BatchAugment(cfg, 3, noise)(b)["features"]
    p = lambda t: torch.pow(10.0, t / 10)  # noqa: E731
    for i, n in enumerate(b["lengths"].tolist()):
        added = (p(noisy[i, :n]) - p(b["features"][i, :n])).mean()
        ratio = p(b["features"][i, :n]).mean() / added
        assert 10 * torch.log10(ratio) == pytest.approx(10.0, abs=1e-3)


def test_specaugment_only_in_training_mode_and_never_masks_a_short_clip_away():
    sa = SpecAugment(time_masks=2, time_width=50, freq_masks=0, time_fraction=0.2)
    x = torch.ones(1, 10, 4)
    sa.eval()
    assert torch.equal(sa(x, torch.tensor([10])), x)
    sa.train()
    for _ in range(50):
        assert (sa(x, torch.tensor([10]))[0, :, 0] == 1).sum() >= 6  # two masks of at most 2 frames each


def test_validation_step_ignores_augmentation():
    from specrnn.training.module import LitClassifier

    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(hidden=8, layers=1), augment=AugmentConfig(gain_db=20, mixup=1.0, time_shift=0.5))
    model = build_model(cfg.model, 8, 3, cfg.augment)
    task = ClassificationTask(["a", "b", "c"])
    lit = LitClassifier(model, task, cfg, 1, BatchAugment(cfg.augment, 3))
    lit.eval()
    b = _batch()
    lit.validation_step(b, 0)
    loss, correct, n, clips = lit._val[-1]
    assert n == clips == b["targets"].shape[0]  # a classifier counts clips both ways
    with torch.no_grad():
        expected = task.loss(model(b["features"], b["lengths"]), b["targets"], reduction="sum", smoothing=False)
    torch.testing.assert_close(loss, expected)


def test_mfcc_are_augmented_as_the_log_mel_spectrum_they_encode():
    """Gain on MFCCs moves only c0 (the level); frequency warping moves formants in mel, not cepstral indices."""
    from specrnn.augment import warp_frequency
    from specrnn.features import dct_matrix

    dct = dct_matrix(40, 13)
    torch.manual_seed(0)
    logmel = torch.randn(4, 20, 40) * 10 - 40
    b = {"features": logmel @ dct, "lengths": torch.tensor([20, 20, 15, 9]), "targets": torch.arange(4) % 3}
    mask = torch.arange(20)[None, :, None] < b["lengths"][:, None, None]
    b["features"] = b["features"] * mask
    out = BatchAugment(AugmentConfig(gain_db=6), 3, dct=dct)(b)["features"]
    delta = (out - b["features"])[0]
    torch.testing.assert_close(delta[:, 1:], torch.zeros(20, 12), atol=1e-4, rtol=0)  # shape untouched
    assert 0 < delta[:, 0].abs().max() <= 6 * 40**0.5 + 1e-3 and delta[:, 0].std() < 1e-3
    torch.manual_seed(1)
    warped = BatchAugment(AugmentConfig(freq_warp=0.2), 3, dct=dct)(b)["features"]
    torch.manual_seed(1)
    factors = 1 + (torch.rand(4) * 2 - 1) * 0.2
    expected = warp_frequency(b["features"] @ dct.T, factors) @ dct * mask
    torch.testing.assert_close(warped, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(warped, warp_frequency(b["features"], factors) * mask, atol=1e-2)  # not the cepstra


def test_colored_noise_has_the_spectral_slope_of_its_colour():
    from specrnn.augment import colored_noise

    g = torch.Generator().manual_seed(0)
    for exponent, db_per_octave in [(0, 0.0), (1, -3.01), (2, -6.02)]:
        x = colored_noise(exponent, 2**16, g)
        assert x.abs().max() == pytest.approx(1.0)
        power = torch.fft.rfft(x.double()).abs().square()
        band = lambda lo: power[lo : 2 * lo].mean()  # noqa: E731  one octave
        slope = 10 * torch.log10(band(4096) / band(2048)).item()
        assert slope == pytest.approx(db_per_octave, abs=0.5)


def test_builtin_noise_colours_reach_the_training_batches_for_mfcc_too():
    from specrnn.config import load_config
    from specrnn.errors import SpecrnnError
    from specrnn.training.fit import batch_augment

    cfg = load_config(None, ["features.kind=mfcc", "features.n_mfcc=13", "features.n_mels=40", "augment.noise_colors=[white,pink]",
                             "augment.noise_snr_db=[0,0]"])
    aug = batch_augment(cfg, 3)
    assert len(aug.noise) == 2 and all(n.shape[1] == 40 for n in aug.noise)  # log-mel bank for MFCC features
    torch.manual_seed(0)
    b = _batch(F=13)
    noisy = aug(b)["features"]
    mask = torch.arange(30)[None, :, None] < b["lengths"][:, None, None]
    assert ((noisy - b["features"]).abs() * mask).amax((1, 2)).min() > 0.1  # every clip got noise at 0 dB SNR
    with pytest.raises(SpecrnnError, match="noise_colors"):
        load_config(None, ["augment.noise_colors=[violet]"])


def test_noise_rows_are_wrapped_slices_of_one_bank_clip():
    short = torch.arange(100.0, 103.0)[:, None].repeat(1, 4)  # frame value = position, two clips told apart
    long = torch.arange(5.0)[:, None].repeat(1, 4)
    aug = BatchAugment(AugmentConfig(), 3, [long, short])
    torch.manual_seed(0)
    rows = aug.noise_slices(64, 11)
    assert rows.shape == (64, 11, 4) and (rows == rows[..., :1]).all()
    seen = set()
    for r in rows[..., 0]:
        clip = long if r[0] < 100 else short
        n, first = len(clip), int(r[0].item()) % 100
        torch.testing.assert_close(r, clip[(first + torch.arange(11)) % n, 0])  # consecutive frames, wrapping round
        seen.add((n, first))
    assert len(seen) == 8  # every clip and every start is drawn


def _word_clip(tokens: list[int], word: int = 40, pause: int = 20, lead: int = 30, F: int = 8) -> torch.Tensor:
    """(T, F) dB features: quiet (-60 dB) lead and pauses, each token a loud (-10 dB) run whose first bin holds
    the token's index, so a frame says which token it came from."""
    frames = [torch.full((lead, F), -60.0)]
    for k in tokens:
        w = torch.full((word, F), -10.0)
        w[:, 0] = float(k)
        frames += [w, torch.full((pause, F), -60.0)]
    frames[-1] = torch.full((lead, F), -60.0)
    return torch.cat(frames)


def test_concat_appends_the_partners_frames_and_tokens():
    from specrnn.augment import concat_clips

    x = torch.arange(2 * 5, dtype=torch.float32).reshape(2, 5, 1)
    x[0, 3:] = 0  # row 0 is 3 frames long
    lengths, targets = torch.tensor([3, 5]), torch.tensor([[0, 1, -1], [1, 1, 0]])
    out, new_len, tok = concat_clips(x, lengths, targets, torch.tensor([1, -1]))
    assert new_len.tolist() == [8, 5]
    assert out[0, :, 0].tolist() == [0, 1, 2, 5, 6, 7, 8, 9]
    assert out[1, :5, 0].tolist() == [5, 6, 7, 8, 9] and out[1, 5:].abs().sum() == 0  # padding stays zero
    assert tok.tolist() == [[0, 1, 1, 1, 0], [1, 1, 0, -1, -1]]


def test_pause_cuts_fall_in_the_pauses_between_tokens():
    from specrnn.augment import pause_cuts

    x = _word_clip([0, 1, 1, 0, 1])
    energy = (10 * torch.log10(torch.pow(10.0, x / 10).sum(-1))).numpy()
    cuts = pause_cuts(energy, 5)
    # words start at 30 + 60 k; pause k (between words k and k + 1) spans 70 + 60 k .. 90 + 60 k
    assert cuts is not None and all(70 + 60 * k <= c < 90 + 60 * k for k, c in enumerate(cuts))
    assert pause_cuts(energy, 3) is None  # 3 tokens in 5 loud runs: pieces of implausible lengths, not cut
    assert pause_cuts(energy, 7) is None  # more tokens than pauses can split


def test_crop_at_pauses_keeps_a_run_of_tokens_with_their_own_audio():
    from specrnn.augment import crop_at_pauses

    seqs = [[0, 1, 1, 0, 1], [1, 0, 0]]
    clips = [_word_clip(s) for s in seqs]
    x, lengths = pad_batch(clips)
    targets = torch.tensor([seqs[0], seqs[1] + [-1, -1]])
    torch.manual_seed(0)
    seen = set()
    for _ in range(30):
        out, new_len, tok = crop_at_pauses(x, lengths, targets, torch.tensor([True, True]))
        for b in range(2):
            n = int(new_len[b])
            kept = [int(t) for t in tok[b] if t >= 0]
            assert kept and " ".join(map(str, kept)) in " ".join(map(str, seqs[b]))  # consecutive tokens
            loud = out[b, :n, 1] > -30
            starts = torch.nonzero(loud[1:] & ~loud[:-1]).flatten() + 1
            assert len(starts) + int(loud[0]) == len(kept)  # as many words in the audio as in the label
            assert [int(out[b, s, 0]) for s in starts] == kept[len(kept) - len(starts):]  # and the same words
            assert out[b, n:].abs().sum() == 0
            seen.add((b, tuple(kept)))
    assert len(seen) > 6  # different runs on different draws
    out, new_len, tok = crop_at_pauses(x, lengths, targets, torch.tensor([False, False]))
    assert torch.equal(out, x) and torch.equal(new_len, lengths) and torch.equal(tok[:, : targets.shape[1]], targets)


def test_sequence_augmentation_needs_a_ctc_task():
    with pytest.raises(Exception, match="augment.concat"):
        Config.model_validate({"task": {"kind": "classification"}, "augment": {"concat": 0.5}})
    with pytest.raises(Exception, match="augment.pause_crop"):
        Config.model_validate({"task": {"kind": "multilabel"}, "augment": {"pause_crop": 0.5}})
