"""The invariants on real recordings (FSDD 8 kHz WAV, ESC-10 44.1 kHz OGG, yesno): the same log-mel as librosa,
a clip scored the same alone and inside a padded batch, streaming equal to offline, and ESC-10's official folds
kept apart. Each test skips with a reason when ../shared/data is absent."""
from pathlib import Path

import numpy as np
import pytest
import torch

from specrnn.audio import load_audio, load_many
from specrnn.config import FeatureConfig, load_config
from specrnn.experiments.cv import fold_ids, fold_manifest
from specrnn.data.batching import pad_batch
from specrnn.data.manifest import load_manifest
from specrnn.features import FeatureExtractor
from specrnn.models import build_model
from specrnn.inference.streaming import StreamingClassifier

from .conftest import YESNO, need


def _fsdd_clips(fsdd: Path, n: int = 8) -> list[Path]:
    """n FSDD recordings of different speakers and lengths."""
    files = sorted(fsdd.glob("*.wav"))
    return files[:: len(files) // n][:n]


def _librosa_logmel(path: Path) -> np.ndarray:
    """Decode and log-mel the way tutorials do it, with specrnn's default settings."""
    librosa = pytest.importorskip("librosa")
    c = FeatureConfig()
    y, _ = librosa.load(str(path), sr=c.sample_rate)
    S = librosa.feature.melspectrogram(y=y, sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length,
                                       win_length=c.win_length, n_mels=c.n_mels, center=True, pad_mode="constant")
    return librosa.power_to_db(S, ref=1.0, top_db=c.top_db).T


def test_real_recordings_give_librosas_log_mel(fsdd, esc10):
    files = _fsdd_clips(fsdd, 3) + sorted(esc10.rglob("*.ogg"))[::200][:2]
    yesno = sorted((need(YESNO) / "waves_yesno").glob("*.wav"))[:2]
    c = FeatureConfig()
    ours = FeatureExtractor(c).extract([load_audio(f, c.sample_rate) for f in files + yesno])
    for f, x in zip(files + yesno, ours):
        ref = _librosa_logmel(f)
        assert x.shape == ref.shape, f
        assert np.abs(x - ref).max() < 0.01, f  # dB


def _features(files: list[Path], cfg: FeatureConfig) -> list[torch.Tensor]:
    waves = load_many(files, cfg.sample_rate)
    return [torch.from_numpy(x) for x in FeatureExtractor(cfg).extract(waves)]


@pytest.mark.parametrize("preset", ["gru", "bilstm", "crnn"])
def test_a_real_clip_scores_the_same_alone_and_in_a_padded_batch(fsdd, preset):
    cfg = load_config(preset)
    clips = _features(_fsdd_clips(fsdd), cfg.features)
    assert len({len(c) for c in clips}) > 4  # lengths really differ
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.features.n_features, 10)
    model.normalizer.fit([c.numpy() for c in clips])
    model.eval()
    x, lengths = pad_batch(clips)
    with torch.no_grad():
        batch = model(x, lengths)
        alone = torch.cat([model(c[None], torch.tensor([len(c)])) for c in clips])
    torch.testing.assert_close(alone, batch, atol=1e-5, rtol=0)


def test_streaming_a_real_recording_equals_offline(fsdd):
    cfg = FeatureConfig(top_db=None)  # with top-dB clipping the running peak stands in for the clip's (documented)
    ex = FeatureExtractor(cfg)
    torch.manual_seed(0)
    model = build_model(load_config("lstm").model, cfg.n_features, 10)
    wave = load_audio(_fsdd_clips(fsdd, 1)[0], cfg.sample_rate)
    feats = torch.from_numpy(ex.extract([wave])[0])
    model.normalizer.fit([feats.numpy()])
    model.eval()
    s = StreamingClassifier(model, ex)
    for i in range(0, len(wave), 1600):  # 100 ms chunks
        s.push_audio(wave[i : i + 1600])
    s.finish()
    with torch.no_grad():
        offline = model(feats[None], torch.tensor([len(feats)]))
    torch.testing.assert_close(s.logits(), offline, atol=1e-5, rtol=0)


def test_esc10_official_folds_never_share_a_recording(esc10):
    man = load_manifest(esc10 / "labels.csv")
    man.groups = list(man.extra["freesound_id"])
    ids = fold_ids(man)  # the manifest's own fold column
    assert sorted(set(ids)) == ["1", "2", "3", "4", "5"] and len(man) == 400
    for fold in sorted(set(ids)):
        fm = fold_manifest(man, ids, fold)  # raises if a recording would be in train and test
        assert fm.splits.count("test") == 80
