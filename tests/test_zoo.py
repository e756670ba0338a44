"""The model zoo: property tests over random architectures (padding never changes an output), presets,
the frame head, and the seed-style baselines whose outputs do change with padding (the known-wrong way)."""
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specrnn.config import FrontendConfig, ModelConfig, load_config, preset_path
from specrnn.data.batching import pad_batch
from specrnn.models import build_model, summarize

POOLINGS = ["last", "mean", "max", "meanstd", "attention", "dot"]
PRESETS = ["lstm", "gru", "bilstm", "crnn", "att-rnn"]


@st.composite
def architectures(draw):
    cnn = draw(st.booleans())
    frontend = FrontendConfig(
        type="cnn" if cnn else "none",
        channels=draw(st.lists(st.sampled_from([2, 4]), min_size=1, max_size=2)),
        kernel=draw(st.sampled_from([3, [5, 1], [3, 3]])),
        time_strides=draw(st.lists(st.sampled_from([1, 2]), min_size=2, max_size=2)),
        freq_pools=draw(st.lists(st.sampled_from([1, 2]), min_size=2, max_size=2)),
    )
    head = draw(st.sampled_from(["clip", "frame"]))
    return ModelConfig(
        normalize=draw(st.sampled_from(["global", "utterance", "frame", "none"])),
        stack=draw(st.sampled_from([1, 2, 3])),
        frontend=frontend,
        cell=draw(st.sampled_from(["lstm", "gru"])),
        hidden=draw(st.sampled_from([4, 8])),
        layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        layer_norm=draw(st.booleans()),
        projection=draw(st.sampled_from([None, 6])),
        pooling=draw(st.sampled_from(POOLINGS)),
        attention_heads=draw(st.integers(1, 2)),
        head=head,
        head_hidden=draw(st.sampled_from([[], [5]])),
        rnn_impl=draw(st.sampled_from(["padded", "packed"])),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=architectures(), lengths=st.lists(st.integers(1, 40), min_size=2, max_size=5), seed=st.integers(0, 2**16))
def test_any_architecture_scores_a_clip_alone_as_in_a_padded_batch(cfg, lengths, seed):
    torch.manual_seed(seed)
    model = build_model(cfg, 12, 3)
    model.train()
    x, lens = pad_batch([torch.randn(t, 12) for t in lengths])
    model(x, lens)  # one training-mode pass moves batch-norm statistics off their initial values
    model.eval()
    clips = [torch.randn(t, 12) * 3 for t in lengths]
    x, lens = pad_batch(clips)
    with torch.no_grad():
        batch = model(x, lens)
        for i, c in enumerate(clips):
            alone = model(c[None], torch.tensor([len(c)]))
            if cfg.head == "frame":
                (fb, lb), (fa, la) = batch, alone
                assert int(lb[i]) == int(la[0]) == fa.shape[1]
                torch.testing.assert_close(fb[i, : int(lb[i])], fa[0], atol=1e-5, rtol=0)
            else:
                torch.testing.assert_close(batch[i], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_build_and_summarise(name):
    cfg = load_config(name)
    assert preset_path(name).is_file()
    model = build_model(cfg.model, cfg.features.n_features, 10)
    text = summarize(model, cfg.features.n_features)
    assert "total" in text and f"{sum(p.numel() for p in model.parameters()):,}" in text


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_documented_configs_load_and_build(path):
    cfg = load_config(str(path))  # the experiment configs docs/experiments.md quotes: a stale key fails here
    build_model(cfg.model, cfg.features.n_features, 10, cfg.augment)


def test_cnn_frontend_input_size_is_inferred():
    for pools, channels in (([2, 2], [8, 8]), ([1, 4], [3, 5]), ([2, 1], [16])):
        cfg = ModelConfig(frontend=FrontendConfig(type="cnn", channels=channels, freq_pools=pools), stack=1)
        model = build_model(cfg, 40, 3)
        f = 40
        for p in pools[: len(channels)]:
            f //= p
        assert model.encoder.fwd[0].input_size == channels[-1] * f
        model(torch.randn(2, 30, 40), torch.tensor([30, 11]))  # and it runs


def test_cnn_frontend_refuses_pooling_frequency_away():
    from specrnn.errors import SpecrnnError

    with pytest.raises(SpecrnnError, match="nothing"):
        build_model(ModelConfig(frontend=FrontendConfig(type="cnn", channels=[4, 4], freq_pools=[8, 8]), stack=1), 16, 3)


@pytest.mark.parametrize("name", ["seed-lstm", "seed-bilstm"])
def test_seed_style_baselines_change_with_padding_and_ours_do_not(name):
    torch.manual_seed(0)
    clips = [torch.randn(t, 64) for t in (20, 90)]
    x, lens = pad_batch(clips)
    for preset, should_change in ((name, True), ("bilstm" if "bi" in name else "lstm", False)):
        model = build_model(load_config(preset).model, 64, 10).eval()
        with torch.no_grad():
            alone = model(clips[0][None], torch.tensor([20]))[0]
            batched = model(x, lens)[0]
        changed = (alone - batched).abs().max().item() > 1e-4
        assert changed == should_change, (preset, (alone - batched).abs().max().item())


def test_attention_weights_are_available_and_zero_on_padding():
    model = build_model(ModelConfig(pooling="attention", attention_heads=2), 16, 3).eval()
    x, lens = pad_batch([torch.randn(t, 16) for t in (30, 8)])
    weights, out_lens = model.attention(x, lens)
    assert weights.shape[-1] == 2
    torch.testing.assert_close(weights.sum(1), torch.ones(2, 2))
    assert torch.all(weights[1, int(out_lens[1]):] == 0)
