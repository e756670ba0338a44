"""Features against librosa (the reference implementation), batch exactness, normalisation on real frames."""
import numpy as np
import pytest
import torch

from specrnn.audio import load_audio
from specrnn.config import FeatureConfig
from specrnn.features import FeatureExtractor, Normalizer, lengths_to_mask, mel_filterbank, normalize_frames

from .conftest import tone, write

librosa = pytest.importorskip("librosa")


@pytest.mark.parametrize("n_fft,n_mels,sr,fmin,fmax", [(512, 64, 16000, 0, None), (256, 40, 8000, 20, 3800), (2048, 128, 44100, 50, 16000)])
def test_mel_filterbank_matches_librosa(n_fft, n_mels, sr, fmin, fmax):
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).T
    ours = mel_filterbank(n_fft, n_mels, sr, fmin, fmax).numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-7)


@pytest.mark.parametrize("kind", ["logmel", "mfcc", "logpower"])
def test_features_match_librosa(kind):
    y = tone(523.0, 0.73) + tone(3000, 0.73, amp=0.05, seed=1)
    cfg = FeatureConfig(kind=kind, top_db=80.0)
    ours, frames = FeatureExtractor(cfg)(torch.from_numpy(y)[None], torch.tensor([len(y)]))
    kw = dict(n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length)
    if kind == "logmel":
        ref = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=cfg.sample_rate, n_mels=cfg.n_mels, **kw), top_db=80)
    elif kind == "mfcc":
        ref = librosa.feature.mfcc(y=y, sr=cfg.sample_rate, n_mfcc=cfg.n_mfcc, n_mels=cfg.n_mels, **kw)
    else:
        ref = librosa.power_to_db(np.abs(librosa.stft(y, **kw)) ** 2, top_db=80)
    assert int(frames[0]) == ref.shape[1]
    # float32 FFT rounding, relative to the clip's peak, grows in dB far below it and depends on the CPU's FFT code:
    # one bin 42 dB down differed by 0.0026 dB on one machine (0.002 passed on another); 0.005 dB is far below audible
    np.testing.assert_allclose(ours[0].numpy(), ref.T, atol=5e-3)


def test_batched_features_equal_single_clip_features():
    cfg = FeatureConfig()
    fe = FeatureExtractor(cfg)
    waves = [tone(300 + 100 * i, s, seed=i) for i, s in enumerate([0.11, 0.9, 0.37, 1.5, 0.2])]
    batched = fe.extract(waves, batch_size=8)
    for w, b in zip(waves, batched):
        alone = fe.extract([w])[0]
        assert alone.shape == b.shape == (1 + len(w) // cfg.hop_length, cfg.n_mels)
        np.testing.assert_allclose(alone, b, atol=1e-4)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32"])
def test_integer_and_float_files_give_the_same_features(tmp_path, subtype):
    import soundfile as sf

    bits = {"PCM_16": 16, "PCM_24": 24, "PCM_32": 32}[subtype]
    q = np.round(tone(440, 0.5) * 2 ** (bits - 1)) / 2 ** (bits - 1)  # exactly representable in the integer file
    write(tmp_path / "int.wav", q, subtype=subtype)
    write(tmp_path / "float.wav", q.astype(np.float32), subtype="FLOAT")
    assert sf.info(str(tmp_path / "int.wav")).subtype == subtype
    cfg = FeatureConfig()
    fe = FeatureExtractor(cfg)
    a = fe.extract([load_audio(tmp_path / "int.wav", cfg.sample_rate)])[0]
    b = fe.extract([load_audio(tmp_path / "float.wav", cfg.sample_rate)])[0]
    np.testing.assert_allclose(a, b, atol=1e-4)


def _padded_pair():
    torch.manual_seed(0)
    x = torch.randn(3, 50, 8) * 3 + 5
    lengths = torch.tensor([50, 20, 7])
    garbage = x.clone()
    mask = lengths_to_mask(lengths, 50)
    garbage[~mask] = 1e4  # whatever sits in padding must not matter
    return x, garbage, lengths, mask


@pytest.mark.parametrize("mode", ["utterance", "frame", "global", "none"])
def test_normalisation_uses_real_frames_only(mode):
    x, garbage, lengths, mask = _padded_pair()
    norm = Normalizer(mode, 8)
    norm.fit([x[0].numpy(), x[1, :20].numpy()])
    a, b = norm(x, lengths), norm(garbage, lengths)
    assert torch.equal(a[~mask], torch.zeros_like(a[~mask]))
    torch.testing.assert_close(a[mask], b[mask])
    if mode == "utterance":  # each clip's real frames come out with zero mean, unit variance per bin
        for i, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(a[i, :n].mean(0), torch.zeros(8), atol=1e-5, rtol=0)
            torch.testing.assert_close(a[i, :n].std(0, unbiased=False), torch.ones(8), atol=1e-3, rtol=0)


def test_global_statistics_count_every_real_frame_once():
    rng = np.random.default_rng(1)
    clips = [rng.normal(3, 2, size=(n, 5)).astype(np.float32) for n in (10, 200, 33)]
    norm = Normalizer("global", 5)
    norm.fit(clips)
    allf = np.concatenate(clips)
    np.testing.assert_allclose(norm.mean.numpy(), allf.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.std.numpy(), allf.std(0), rtol=1e-4)


def test_frame_normalisation_keeps_silent_frames_finite():
    x = torch.zeros(1, 4, 16)
    x[0, 1] = torch.arange(16.0)
    y = normalize_frames(x)
    assert torch.isfinite(y).all() and torch.equal(y[0, 0], torch.zeros(16))


def _tone_in_silence(sr=8000, before=0.3, tone=0.25, after=0.2, level=0.3, floor=1e-4, seed=0):
    rng = np.random.default_rng(seed)
    n0, n1, n2 = int(sr * before), int(sr * tone), int(sr * after)
    x = rng.normal(0, floor, n0 + n1 + n2).astype(np.float32)
    x[n0 : n0 + n1] += level * np.sin(2 * np.pi * 440 * np.arange(n1) / sr).astype(np.float32)
    return x, n0, n1


def test_trim_drops_leading_and_trailing_silence_only():
    from specrnn.features import FeatureExtractor

    cfg = FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=40, trim_db=30)
    ex = FeatureExtractor(cfg)
    x, n0, n1 = _tone_in_silence()
    feats, frames = ex(torch.from_numpy(x)[None], torch.tensor([len(x)]))
    # the tone covers frames n0/hop .. (n0+n1)/hop; a window reaching into it is loud too: at most n_fft/2 either side
    expected = n1 / 80
    assert expected <= int(frames[0]) <= expected + 256 / 80 + 1, int(frames[0])
    untrimmed = FeatureExtractor(FeatureConfig(**{**cfg.__dict__, "trim_db": None}))(torch.from_numpy(x)[None], torch.tensor([len(x)]))[1]
    assert int(untrimmed[0]) == 1 + len(x) // 80
    # a silent clip keeps its frames, and a clip trims the same alone as inside a padded batch
    quiet = np.zeros(4000, np.float32)
    short, _, _ = _tone_in_silence(before=0.05, tone=0.1, after=0.4, seed=1)
    clips = [x, quiet, short]
    batch = torch.zeros(3, len(x))
    for i, c in enumerate(clips):
        batch[i, : len(c)] = torch.from_numpy(c)
    bf, bl = ex(batch, torch.tensor([len(c) for c in clips]))
    assert int(bl[1]) == 1 + 4000 // 80
    for i, c in enumerate(clips):
        f, n = ex(torch.from_numpy(c)[None], torch.tensor([len(c)]))
        assert int(bl[i]) == int(n[0])
        torch.testing.assert_close(bf[i, : int(n[0])], f[0], atol=1e-4, rtol=1e-5)


def test_streaming_refuses_trimmed_features():
    from specrnn.errors import SpecrnnError
    from specrnn.features import FeatureExtractor
    from specrnn.inference.streaming import StreamingSTFT

    with pytest.raises(SpecrnnError, match="trim_db"):
        StreamingSTFT(FeatureExtractor(FeatureConfig(trim_db=40)))
