"""Invariant 2: streaming over chunks equals the offline pass, for every unidirectional preset, every pooling,
with frame stacking and a CNN front-end, from feature chunks (1, 7, 32 frames) and from raw audio."""
import numpy as np
import pytest
import torch

from specrnn.config import FeatureConfig, FrontendConfig, ModelConfig, load_config
from specrnn.errors import SpecrnnError
from specrnn.features import FeatureExtractor
from specrnn.models import build_model
from specrnn.tasks import CTCTask
from specrnn.inference.streaming import StreamingClassifier, StreamingSTFT

STREAMING_PRESETS = ["lstm", "gru"]


def _offline(model, x):
    with torch.no_grad():
        return model(x[None], torch.tensor([x.shape[0]]))


def _stream(model, x, chunk):
    s = StreamingClassifier(model)
    for i in range(0, x.shape[0], chunk):
        s.push_features(x[i : i + chunk])
    s.finish()
    return s


def _randomise(model):
    torch.manual_seed(1)
    model.normalizer.mean.normal_()
    model.normalizer.std.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize("name", STREAMING_PRESETS)
@pytest.mark.parametrize("chunk", [1, 7, 32])
def test_streaming_presets_equal_offline(name, chunk):
    cfg = load_config(name)
    model = _randomise(build_model(cfg.model, 64, 10))
    x = torch.randn(83, 64) * 5
    torch.testing.assert_close(_stream(model, x, chunk).logits(), _offline(model, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "meanstd", "attention"])
@pytest.mark.parametrize("chunk", [1, 7, 32])
@pytest.mark.parametrize("stack", [1, 2])
def test_streaming_with_cnn_frontend_equals_offline(pooling, chunk, stack):
    fe = FrontendConfig(type="cnn", channels=[4, 6], kernel=3, time_strides=[2, 1], freq_pools=[2, 1])
    cfg = ModelConfig(frontend=fe, stack=stack, bidirectional=False, pooling=pooling, hidden=16, layer_norm=True)
    model = build_model(cfg, 16, 4)
    model.train()
    model(torch.randn(3, 40, 16), torch.tensor([40, 12, 5]))  # real batch-norm statistics
    model = _randomise(model)
    for T in (1, 2, 29, 64):
        x = torch.randn(T, 16) * 3
        torch.testing.assert_close(_stream(model, x, chunk).logits(), _offline(model, x), atol=1e-5, rtol=0)


def test_frame_head_streams_every_frame():
    cfg = ModelConfig(bidirectional=False, head="frame", stack=2, hidden=8)
    model = _randomise(build_model(cfg, 16, 3))
    x = torch.randn(41, 16)
    frames, lengths = _offline(model, x)
    s = _stream(model, x, 5)
    torch.testing.assert_close(torch.cat(s.frame_outputs), frames[0, : int(lengths[0])], atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk", [1, 7, 32])
def test_ctc_stream_decodes_what_the_offline_pass_decodes(chunk):
    """Greedy CTC decoding carried across chunks: the running sequence only grows, and at the end it equals the
    offline best path of the whole clip (a repeat split by a chunk boundary is merged, as offline)."""
    from specrnn.decoding.greedy import greedy_decode

    fe = FrontendConfig(type="cnn", channels=[4], kernel=3, time_strides=[2], freq_pools=[1])
    torch.manual_seed(3)  # the same weights whichever tests ran before (ones whose best path changes often)
    model = _randomise(build_model(ModelConfig(bidirectional=False, stack=2, hidden=8, frontend=fe), 16, CTCTask(["a", "b", "c"])))
    last = model.head.net[-1]  # large, unbiased outputs, so the best path changes often (and repeats tokens)
    last.weight.data.normal_(0, 3)
    last.bias.data.zero_()
    for T in (3, 50, 161):
        x = torch.randn(T, 16) * 3
        frames, lengths = _offline(model, x)
        expected = greedy_decode(frames, lengths, blank=3)[0]
        s = StreamingClassifier(model, classes=["a", "b", "c"])
        seen = []
        for i in range(0, T, chunk):
            s.push_features(x[i : i + chunk])
            now = s.tokens()
            assert now[: len(seen)] == seen  # never takes back a token it has emitted
            seen = now
        s.finish()
        assert s.tokens() == ["abc"[k] for k in expected] and (T < 161 or len(expected) >= 5)
        best = torch.log_softmax(frames[0, : int(lengths[0])], -1).max(-1).values.sum().exp()
        assert s.path_probability() == pytest.approx(float(best), rel=1e-4)
    with pytest.raises(SpecrnnError, match="CTC"):
        StreamingClassifier(build_model(ModelConfig(bidirectional=False, hidden=8), 16, 3)).tokens()


def test_running_prediction_is_causal():
    """A prediction after k frames equals the offline pass over exactly those k frames (no look-ahead)."""
    model = _randomise(build_model(ModelConfig(bidirectional=False, stack=1, hidden=8, pooling="mean"), 16, 3))
    x = torch.randn(30, 16)
    s = StreamingClassifier(model)
    for k in range(1, 31):
        s.push_features(x[k - 1 : k])
        torch.testing.assert_close(s.logits(), _offline(model, x[:k]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk", [1, 160, 1000, 1601])
def test_audio_stream_equals_offline_features_and_model(chunk):
    fcfg = FeatureConfig(top_db=None)
    ex = FeatureExtractor(fcfg)
    wave = (np.random.default_rng(0).standard_normal(8123) * 0.1).astype(np.float32)
    feats, _ = ex(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    stft = StreamingSTFT(ex)
    frames = [stft.push(wave[i : i + chunk]) for i in range(0, len(wave), chunk)] + [stft.finish()]
    torch.testing.assert_close(torch.cat(frames), feats[0], atol=1e-4, rtol=1e-5)
    model = _randomise(build_model(load_config("lstm").model, fcfg.n_features, 5))
    s = StreamingClassifier(model, ex)
    for i in range(0, len(wave), chunk):
        s.push_audio(wave[i : i + chunk])
    s.finish()
    torch.testing.assert_close(s.logits(), _offline(model, feats[0]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("cfg,message", [
    (ModelConfig(bidirectional=True), "bidirectional"),
    (ModelConfig(bidirectional=False, normalize="utterance"), "whole clip"),
    (ModelConfig(bidirectional=False, pooling="dot"), "whole clip"),
])
def test_models_that_read_the_future_refuse_to_stream(cfg, message):
    with pytest.raises(SpecrnnError, match=message):
        StreamingClassifier(build_model(cfg, 16, 3))


def test_predict_stream_cli_prints_running_labels_and_matches_offline(tone_folder, tmp_path):
    import json

    from .test_cli import cli

    run = tmp_path / "uni"
    cli("train", tone_folder, "--out", run, "--config", "lstm", "--max-epochs", 3, "--set", "model.hidden=16",
        "--set", "features.top_db=null")
    f = sorted(tone_folder.rglob("*.wav"))[0]
    lines = [json.loads(x) for x in cli("predict", run, f, "--stream", "--chunk-ms", 100, "--json").stdout.splitlines()]
    assert len(lines) >= 3 and lines[-1]["final"] and all(x["path"] == str(f) for x in lines)
    offline = json.loads(cli("predict", run, f, "--json").stdout)[0]["top"][0]
    assert lines[-1]["label"] == offline["label"] and abs(lines[-1]["probability"] - offline["probability"]) < 1e-3
    text = cli("predict", run, f, "--stream").stdout
    assert "end" in text
    top3 = [json.loads(x) for x in cli("predict", run, f, "--stream", "--top-k", 3, "--json").stdout.splitlines()]
    final = top3[-1]["top"]
    assert final[0]["label"] == lines[-1]["label"] and len(final) == 2  # the tone folder has two classes
    assert final[0]["probability"] >= final[1]["probability"] and abs(sum(x["probability"] for x in final) - 1) < 1e-3
    assert text.splitlines()[-1].count("%") == 1
    assert cli("predict", run, f, "--stream", "--top-k", 2).stdout.splitlines()[-1].count("%") == 2
    r = cli("predict", tmp_path / "nope", f, "--stream", check=False)
    assert r.returncode == 2 and "nope: no such run folder" in r.stderr


@pytest.mark.parametrize("chunk", [160, 1000, 3001])
@pytest.mark.parametrize("kind", ["logmel", "mfcc"])
def test_top_db_stream_starts_over_when_the_floor_rises_and_ends_equal_to_offline(chunk, kind):
    """features.top_db floors each clip at its loudest frame minus top_db, which a stream learns late: digital
    silence, then a quiet tone, then a loud one raise the floor twice over frames already sent. The stream starts
    the model over on the refloored frames, so after the last chunk it equals the offline pass."""
    fcfg = FeatureConfig(kind=kind, top_db=40.0)
    ex = FeatureExtractor(fcfg)
    t = np.arange(4000) / 16000
    wave = np.concatenate([np.zeros(3000), 1e-3 * np.sin(2 * np.pi * 300 * t), 0.5 * np.sin(2 * np.pi * 900 * t),
                           np.zeros(1234)]).astype(np.float32)
    feats, _ = ex(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    model = _randomise(build_model(load_config("lstm").model, fcfg.n_features, 5))
    s = StreamingClassifier(model, ex)
    restarts = 0
    for i in range(0, len(wave), chunk):
        s.push_audio(wave[i : i + chunk])
        restarts += s.audio.restart
    s.finish()
    assert restarts >= 1
    torch.testing.assert_close(s.logits(), _offline(model, feats[0]), atol=1e-5, rtol=0)
    s.reset()  # a second stream on the same object starts from nothing
    for i in range(0, len(wave), chunk):
        s.push_audio(wave[i : i + chunk])
    s.finish()
    torch.testing.assert_close(s.logits(), _offline(model, feats[0]), atol=1e-5, rtol=0)


def test_top_db_stream_keeps_frames_for_restarts_only_up_to_max_seconds():
    """Memory stays bounded on a long stream: frames are kept for restarts up to features.max_seconds (what the
    offline pass reads); a louder sound after that floors only the frames still to come."""
    ex = FeatureExtractor(FeatureConfig(top_db=40.0, max_seconds=0.5))
    t = np.arange(12000) / 16000
    quiet_then_loud = np.concatenate([1e-3 * np.sin(2 * np.pi * 300 * t), 0.5 * np.sin(2 * np.pi * 300 * t)])
    stft = StreamingSTFT(ex)
    for i in range(0, len(quiet_then_loud), 800):
        frames = stft.push(quiet_then_loud[i : i + 800].astype(np.float32))
        assert not stft.restart and len(frames) <= 6  # the loud half comes at 0.75 s: no restart
    assert stft.kept <= 0.5 * 16000 / 160 + 6
    stft.finish()
    assert not stft.restart


def test_audio_at_another_rate_is_resampled_on_the_fly():
    import soxr

    fcfg = FeatureConfig(top_db=None)
    ex = FeatureExtractor(fcfg)
    model = _randomise(build_model(load_config("lstm").model, fcfg.n_features, 5))
    wave8k = (np.random.default_rng(1).standard_normal(8000) * 0.1).astype(np.float32)
    wave16k = soxr.resample(wave8k, 8000, 16000, quality="HQ").astype(np.float32)
    feats, _ = ex(torch.from_numpy(wave16k)[None], torch.tensor([len(wave16k)]))
    s = StreamingClassifier(model, ex)
    for i in range(0, len(wave8k), 800):
        s.push_audio(wave8k[i : i + 800], sample_rate=8000)
    p = s.finish()
    torch.testing.assert_close(s.logits(), _offline(model, feats[0]), atol=1e-3, rtol=0)
    np.testing.assert_array_equal(s.finish(), p)  # finishing again changes nothing
    with pytest.raises(SpecrnnError, match="stream has finished; call reset"):
        s.push_audio(wave8k[:10], sample_rate=8000)
    s.reset()
    s.push_audio(wave8k[:10], sample_rate=8000)
    with pytest.raises(SpecrnnError, match="rate changed from 8000 to 16000 Hz"):
        s.push_audio(wave8k[:10])  # no rate given: the model's own


@pytest.mark.parametrize("samples, rate, message", [
    ((np.ones(100) * 1000).astype(np.int16), None, "float samples in"),
    (np.full(100, np.nan, np.float32), None, "NaN or infinite"),
    (np.zeros(100, np.float32), 0, "sample_rate must be"),
    (np.zeros(100, np.float32), 8000.5, "sample_rate must be"),
    (np.zeros((2, 100), np.float32), None, "mono samples"),
])
def test_audio_that_a_stream_cannot_take_is_refused(samples, rate, message):
    s = StreamingClassifier(_randomise(build_model(load_config("lstm").model, 64, 3)), FeatureExtractor(FeatureConfig()))
    with pytest.raises(SpecrnnError, match=message):
        s.push_audio(samples, sample_rate=rate)


def test_features_pushed_to_an_audio_capable_stream_equal_offline():
    """Predictor.stream() can take audio, but fed features it must not add the STFT's end-of-audio frame."""
    fcfg = FeatureConfig(top_db=None)
    model = _randomise(build_model(load_config("lstm").model, fcfg.n_features, 5))
    x = torch.randn(25, fcfg.n_features) * 3
    s = StreamingClassifier(model, FeatureExtractor(fcfg))
    s.push_features(x.numpy())
    s.finish()
    torch.testing.assert_close(s.logits(), _offline(model, x), atol=1e-5, rtol=0)
    empty = StreamingClassifier(model, FeatureExtractor(fcfg))
    assert empty.finish() is None  # nothing pushed, nothing to say
