"""ONNX export: the offline model and the streaming step model give PyTorch's logits under onnxruntime
(padded batches of random lengths, streams in chunks of any size). Small models: each export takes seconds."""
import numpy as np
import pytest
import torch

from specrnn.config import load_config
from specrnn.errors import SpecrnnError
from specrnn.models import build_model
from specrnn.files import save_model
from specrnn.tasks import CTCTask, with_task

from .conftest import onnx_export_skip_reason

if onnx_export_skip_reason():
    pytest.skip(onnx_export_skip_reason(), allow_module_level=True)

from specrnn import export  # noqa: E402

TOL = 1e-4
N_FEATURES = 16
CLASSES = [f"c{i}" for i in range(5)]


def _model(preset, *sets):
    """A small model of a preset with non-trivial normaliser statistics and batch-norm statistics."""
    cfg = load_config(preset, ["model.hidden=16", f"features.n_mels={N_FEATURES}", *sets])
    torch.manual_seed(0)
    model = build_model(cfg.model, N_FEATURES, CTCTask(CLASSES[:-1]) if cfg.task.kind == "ctc" else len(CLASSES))
    if model.frontend is not None:
        model.train()
        with torch.no_grad():
            model(torch.randn(4, 30, N_FEATURES), torch.tensor([30, 21, 9, 4]))
    model.normalizer.mean.normal_()
    model.normalizer.std.uniform_(0.5, 2.0)
    return cfg, model.eval()


def _run_folder(tmp_path, cfg, model):
    """A run folder as training writes it (model.pt with config and classes)."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = with_task(cfg, ["a b"] if model.blank is not None else CLASSES)  # training writes the task it inferred
    save_model(run / "model.pt", model.state_dict(), {"config": cfg.to_dict(), "classes": CLASSES, "epoch": 0})
    return run


def test_offline_export_matches_pytorch_on_padded_batches(tmp_path, capsys):
    from specrnn.cli import main

    cfg, model = _model("bilstm")  # bidirectional: the backward direction reverses each clip within its length
    run = _run_folder(tmp_path, cfg, model)
    assert main(["export", str(run), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "max |onnxruntime - PyTorch|" in capsys.readouterr().out
    path = tmp_path / "m.onnx"
    for seed, batch, max_len in [(0, 8, 300), (1, 1, 7), (2, 5, 40)]:  # other batch sizes and lengths than traced
        assert export.check_offline(model, path, batch, max_len, seed) < TOL
    sess = export.session(path)
    assert export.metadata(sess)["specrnn_kind"] == "offline"
    assert int(export.metadata(sess)["time_multiple"]) == cfg.model.stack
    with pytest.raises(SpecrnnError, match="not a specrnn streaming model"):
        export.OnnxStreamingClassifier(path)
    with pytest.raises(SpecrnnError, match="cannot open as an ONNX model"):
        export.OnnxStreamingClassifier(tmp_path / "nosuch.onnx")
    with pytest.raises(SpecrnnError, match="a folder is there"):
        export.export_run(run, tmp_path)


def test_offline_export_of_gru_with_cnn_frontend(tmp_path):
    cfg, model = _model("crnn", "model.frontend.channels=[4,4]")
    path = export.export_offline(model, tmp_path / "crnn.onnx", cfg, CLASSES)
    assert export.time_multiple(model) == 2  # the CNN's time stride
    assert export.check_offline(model, path, batch=6, max_len=123) < TOL


def test_streaming_export_matches_streaming_classifier_and_offline(tmp_path):
    from specrnn.export import OnnxStreamingClassifier, export_run

    cfg, model = _model("lstm")
    run = _run_folder(tmp_path, cfg, model)
    report = export_run(run, tmp_path / "s.onnx", streaming=True)
    assert report["max_abs_diff"] < TOL
    path = tmp_path / "s.onnx"
    for chunk in (1, 3, 10, 64):
        assert export.check_streaming(model, path, frames=41, chunk=chunk) < TOL
    x = np.random.default_rng(0).standard_normal((41, N_FEATURES)).astype(np.float32) * 3
    s = OnnxStreamingClassifier(path)
    for i in range(0, 41, 7):
        s.push_features(x[i : i + 7])
    p = s.finish()
    with torch.no_grad():
        offline = model(torch.from_numpy(x)[None], torch.tensor([41]))
    np.testing.assert_allclose(s.logits(), offline.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("preset, sets", [("lstm", ["features.top_db=null"]), ("lstm", ["features.top_db=30"]),
                                          ("crnn", ["model.bidirectional=false", "model.frontend.channels=[4,4]"])])
def test_onnx_stream_takes_audio_like_the_pytorch_stream(tmp_path, preset, sets):
    """push_audio builds the features from the settings stored in the ONNX metadata: audio at another rate,
    in chunks that split frames, ends where PyTorch's StreamingClassifier and the offline model end. The audio
    starts quiet and grows louder, so a top-dB floor rises over frames already sent and both streams start over."""
    import soxr

    from specrnn.features import FeatureExtractor
    from specrnn.inference.streaming import StreamingClassifier

    cfg, model = _model(preset, *sets)
    path = export.export_streaming(model, tmp_path / "s.onnx", cfg, CLASSES)
    ex = FeatureExtractor(cfg.features)
    loudness = np.geomspace(1e-4, 0.5, 6001) * np.random.default_rng(0).uniform(0.5, 1.0, 6001)
    wave8k = (np.sin(np.arange(6001) * 0.3) * loudness).astype(np.float32)
    wave = soxr.resample(wave8k, 8000, cfg.features.sample_rate, quality="HQ").astype(np.float32)
    with torch.no_grad():
        feats, n = ex(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
        offline = model(feats, n).numpy()
    ours, ref = export.OnnxStreamingClassifier(path), StreamingClassifier(model, ex)
    restarts = 0
    for i in range(0, len(wave8k), 777):
        ours.push_audio(wave8k[i : i + 777], sample_rate=8000)
        ref.push_audio(wave8k[i : i + 777], sample_rate=8000)
        restarts += ours.audio.restart
    assert restarts >= (cfg.features.top_db == 30)  # the 30 dB floor rises over frames already sent
    p = ours.finish()
    ref.finish()
    np.testing.assert_allclose(ours.logits(), ref.logits().numpy(), atol=TOL, rtol=0)
    np.testing.assert_array_equal(ours.finish(), p)  # finishing again changes nothing
    with pytest.raises(SpecrnnError, match="stream has finished"):
        ours.push_audio(wave8k[:100], sample_rate=8000)
    np.testing.assert_allclose(ours.logits(), offline, atol=1e-3, rtol=0)  # soxr's stream vs one call: 1e-3
    ours.reset()  # a new stream, at the model's own rate
    for i in range(0, len(wave), 1601):
        ours.push_audio(wave[i : i + 1601])
    ours.finish()
    np.testing.assert_allclose(ours.logits(), offline, atol=TOL, rtol=0)
    ours.reset()
    with pytest.raises(SpecrnnError, match="mono"):
        ours.push_audio(np.zeros((2, 100), np.float32))


@pytest.mark.parametrize("pooling, stack, strides, cell", [
    ("last", 1, [2, 1], "lstm"), ("mean", 2, [1, 1], "lstm"), ("meanstd", 1, [1, 1], "gru"),
    ("max", 2, [2, 1], "gru"), ("attention", 1, [1, 1], "lstm"),
])
def test_streaming_export_with_a_cnn_frontend_equals_offline(tmp_path, pooling, stack, strides, cell):
    """Each CNN block carries k - s frames; the junk outputs at the stream's start are skipped, and finish()
    pushes the last real frames through with zeros: the end result equals the offline model on every length,
    and at every step the running logits equal PyTorch's StreamingClassifier fed the same frames."""
    from specrnn.inference.streaming import StreamingClassifier

    cfg, model = _model("crnn", "model.bidirectional=false", f"model.pooling={pooling}", f"model.stack={stack}",
                        f"model.frontend.time_strides={strides}", "model.frontend.channels=[4,6]", f"model.cell={cell}")
    path = export.export_streaming(model, tmp_path / "s.onnx", cfg, CLASSES)
    step = export.StreamingStep(model)
    least = export.time_multiple(model) * (step.junk + 1)  # the smallest step the driver takes
    for frames in (1, 2, 5, 29, 64):
        x = export._random_features(model, [frames], frames)[0]
        with torch.no_grad():
            offline = model(torch.from_numpy(x)[None], torch.tensor([frames])).numpy()
        for chunk in (1, 7, least, 3 * least):
            ours, ref = export.OnnxStreamingClassifier(path), StreamingClassifier(model)
            for i in range(0, frames, chunk):
                ours.push_features(x[i : i + chunk])
                ref.push_features(x[i : i + chunk])
                if chunk % least == 0 and i + chunk <= frames:  # both have taken exactly these frames
                    np.testing.assert_allclose(ours.logits(), ref.logits().numpy(), atol=TOL, rtol=0)
            ours.finish()
            np.testing.assert_allclose(ours.logits(), offline, atol=TOL, rtol=0, err_msg=f"{frames} frames, chunk {chunk}")


def test_streaming_export_refuses_what_cannot_stream():
    _, bi = _model("bilstm")
    with pytest.raises(SpecrnnError, match="bidirectional"):
        export.StreamingStep(bi)


@pytest.mark.parametrize("sets", [["model.head=frame"], ["task.kind=ctc", "features.max_seconds=null"],
                                  ["model.frontend.kernel=5", "model.frontend.time_strides=[2,1]"]])
def test_cnn_frame_heads_and_any_kernel_stream_through_onnx_like_offline(tmp_path, sets):
    """Once refused: a CNN front-end with frame outputs (frame head, CTC), and a time kernel whose stride does not
    line up with k - s carried frames (kernel 5, stride 2: the buffer grows by one). Streamed on onnxruntime and on
    PyTorch (the same driver), the frame outputs equal the offline model's real frames."""
    from specrnn.inference.streaming import StreamingClassifier

    cfg, model = _model("crnn", "model.bidirectional=false", "model.frontend.channels=[4,6]", *sets)
    classes = CLASSES[:-1] if cfg.task.kind == "ctc" else CLASSES  # CTC: the last output is the blank
    path = export.export_streaming(model, tmp_path / "s.onnx", cfg, classes)
    for frames in (3, 29, 64):
        x = export._random_features(model, [frames], frames)[0]
        with torch.no_grad():
            offline = model(torch.from_numpy(x)[None], torch.tensor([frames]))
        for chunk in (1, 7, 16):
            ours, ref = export.OnnxStreamingClassifier(path), StreamingClassifier(model, classes=classes)
            for i in range(0, frames, chunk):
                ours.push_features(x[i : i + chunk])
                ref.push_features(x[i : i + chunk])
            ours.finish()
            ref.finish()
            if ref.ctc is not None:
                assert ours.tokens() == ref.tokens()
            if isinstance(offline, tuple):  # frame outputs: every real frame, in order
                want = offline[0][0, : int(offline[1][0])].numpy()
                np.testing.assert_allclose(np.concatenate(ours.frame_outputs), want, atol=TOL, rtol=0)
                np.testing.assert_allclose(torch.cat(ref.frame_outputs).numpy(), want, atol=TOL, rtol=0)
            else:
                np.testing.assert_allclose(ours.logits(), offline.numpy(), atol=TOL, rtol=0)
                np.testing.assert_allclose(ref.logits().numpy(), offline.numpy(), atol=TOL, rtol=0)
