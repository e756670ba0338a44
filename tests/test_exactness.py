"""Invariant 1: padding never changes a result. A clip scored alone equals the same clip inside a padded
batch of longer clips, for every cell, direction, pooling and front-end; padded and packed agree, and the
bidirectional encoder equals PyTorch's own packed bidirectional RNN."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from specrnn.config import FrontendConfig, ModelConfig
from specrnn.data.batching import pad_batch
from specrnn.models import build_model
from specrnn.models.encoders import RNNEncoder, reverse_within_length

POOLINGS = ["last", "mean", "max", "meanstd", "attention"]


def _clips(F=16, lengths=(9, 40, 1, 23, 64), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t, F, generator=g) * 4 + 2 for t in lengths]


def _alone_vs_batch(model, clips):
    model.eval()
    x, lengths = pad_batch(clips)
    with torch.no_grad():
        batch = model(x, lengths)
        alone = torch.cat([model(c[None], torch.tensor([len(c)])) for c in clips])
    return alone, batch


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_clip_alone_equals_clip_in_padded_batch(cell, bidirectional, pooling):
    torch.manual_seed(1)
    cfg = ModelConfig(cell=cell, bidirectional=bidirectional, pooling=pooling, hidden=24, layers=2, normalize="utterance")
    alone, batch = _alone_vs_batch(build_model(cfg, 16, 5), _clips())
    torch.testing.assert_close(alone, batch, atol=1e-5, rtol=0)


@pytest.mark.parametrize("stack", [1, 3])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_cnn_frontend_and_stacking_stay_exact(stack, pooling):
    torch.manual_seed(2)
    fe = FrontendConfig(type="cnn", channels=[8, 8], time_strides=[2, 1], freq_pools=[2, 2])
    cfg = ModelConfig(frontend=fe, stack=stack, pooling=pooling, hidden=16, normalize="global")
    model = build_model(cfg, 16, 4)
    model.train()  # move the running statistics away from their initial values with a few masked batches
    for _ in range(3):
        x, lengths = pad_batch(_clips(seed=7))
        model(x, lengths)
    alone, batch = _alone_vs_batch(model, _clips())
    torch.testing.assert_close(alone, batch, atol=1e-5, rtol=0)


def test_masked_batch_norm_ignores_padding_in_training():
    torch.manual_seed(3)
    fe = FrontendConfig(type="cnn", channels=[4], time_strides=[1], freq_pools=[1])
    model = build_model(ModelConfig(frontend=fe, hidden=8), 16, 3)
    model.train()
    clips = _clips()
    x, lengths = pad_batch(clips)
    x2 = torch.cat([x, torch.zeros(x.shape[0], 50, x.shape[2])], dim=1)  # more padding, same clips
    bn = model.frontend.blocks[0].norm
    model.frontend.blocks[0](x[:, None], lengths)
    mean1 = bn.running_mean.clone()
    bn.reset_running_stats()
    model.frontend.blocks[0](x2[:, None], lengths)
    torch.testing.assert_close(bn.running_mean, mean1)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_and_packed_implementations_agree(cell, bidirectional):
    torch.manual_seed(4)
    enc = RNNEncoder(16, cell, 20, 2, bidirectional, impl="padded").eval()
    x, lengths = pad_batch(_clips())
    a = enc(x, lengths)
    enc.impl = "packed"
    torch.testing.assert_close(enc(x, lengths), a, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bidirectional_encoder_equals_pytorch_packed_birnn(cell):
    """Our one-module-per-direction encoder, run padded, equals nn.LSTM/GRU(bidirectional) run packed."""
    torch.manual_seed(5)
    ref = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](16, 12, batch_first=True, bidirectional=True)
    enc = RNNEncoder(16, cell, 12, 1, True, impl="padded")
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(enc.fwd[0], f"{name}_l0").copy_(getattr(ref, f"{name}_l0"))
            getattr(enc.bwd[0], f"{name}_l0").copy_(getattr(ref, f"{name}_l0_reverse"))
    x, lengths = pad_batch(_clips())
    out, _ = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    torch.testing.assert_close(enc(x, lengths), out, atol=1e-6, rtol=0)


def test_reverse_within_length_is_an_involution_that_keeps_padding():
    x = torch.arange(12.0).reshape(2, 6)
    lengths = torch.tensor([4, 6])
    r = reverse_within_length(x, lengths)
    assert r.tolist() == [[3, 2, 1, 0, 4, 5], [11, 10, 9, 8, 7, 6]]
    assert torch.equal(reverse_within_length(r, lengths), x)


def test_last_state_of_bidirectional_reads_forward_end_and_backward_start():
    from specrnn.models.pooling import last_state

    h = torch.arange(2 * 5 * 4, dtype=torch.float).reshape(2, 5, 4)
    out = last_state(h, torch.tensor([3, 5]), bidirectional=True)
    assert out[0].tolist() == h[0, 2, :2].tolist() + h[0, 0, 2:].tolist()
    assert out[1].tolist() == h[1, 4, :2].tolist() + h[1, 0, 2:].tolist()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_orthogonal_init_makes_every_gate_orthogonal_and_biases_zero(cell):
    torch.manual_seed(0)
    enc = RNNEncoder(12, cell, 8, layers=2, bidirectional=True, init="orthogonal")
    for rnn in [*enc.fwd, *enc.bwd]:
        for name, p in rnn.named_parameters():
            if name.startswith("weight_hh"):
                for gate in p.detach().split(8):
                    assert torch.allclose(gate @ gate.T, torch.eye(8), atol=1e-5)
            elif name.startswith("bias"):
                assert not p.detach().any()
    default = RNNEncoder(12, cell, 8, layers=1, bidirectional=False)
    assert default.fwd[0].bias_ih_l0.detach().any()  # PyTorch's uniform init when not asked
