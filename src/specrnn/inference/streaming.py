"""Streaming inference on PyTorch: feed audio or feature chunks of any size, carry every layer's state, read a
running prediction (or, for a CTC model, the sequence decoded so far). After `finish()` the result equals the
offline pass over the whole clip.

The model runs as its streaming step (`graphs.StreamingStep`: the states carried explicitly, the graph that
`specrnn export --streaming` traces), driven by `StepStream`, the driver onnxruntime's `OnnxStreamingClassifier`
uses too. Each stage is causal and keeps only the context it needs: the STFT keeps n_fft/2 samples of history,
frame stacking an incomplete group, each CNN block a fixed buffer of input frames, the RNN (h, c), and pooling its
running sums (mean, mean+std), running max, last state, or running log-sum-exp of attention scores.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..errors import ENROL, SpecrnnError
from ..models.build import SpecRNN
from .audio_stream import FINISHED, RESTART_DB, AudioStream, StreamingSTFT, check_features_stream
from .graphs import StreamingStep
from .step_stream import CTCStreamDecoding, StepPlan, StepStream

__all__ = ["FINISHED", "RESTART_DB", "AudioStream", "StreamingSTFT", "StreamingClassifier", "CTCStreamDecoding",
           "check_streamable", "stream"]


def _on_cpu(module: nn.Module) -> nn.Module:
    """The module itself when it is on the CPU, else a copy there."""
    on_cpu = all(t.device.type == "cpu" for t in [*module.parameters(), *module.buffers()])
    return module if on_cpu else copy.deepcopy(module).cpu()


def check_streamable(cfg, features=None) -> None:
    """Raise a clear error when a model (its ModelConfig, and FeatureConfig for audio streams) cannot stream; called
    before any work (e.g. enrolment) is spent on a stream that would be refused."""
    if cfg.bidirectional:
        raise SpecrnnError("this model is bidirectional: it reads each clip backwards from its end, so it cannot stream. "
                           "Train a unidirectional model (model.bidirectional=false) for streaming.")
    if cfg.normalize == "utterance":
        raise SpecrnnError("this model normalises each clip with statistics of the whole clip (model.normalize=utterance), "
                           "which a stream does not have yet; use global or frame normalisation for streaming.")
    if cfg.pooling in ("dot", "padded_last") or cfg.rnn_impl == "naive":
        raise SpecrnnError(f"pooling '{cfg.pooling}' needs the whole clip before it can score any frame; "
                           "use last, mean, max, meanstd or attention pooling for streaming.")
    if features is not None:
        check_features_stream(features)


class StreamingClassifier(StepStream):
    """Run a trained unidirectional model on a stream. `push_audio`/`push_features` return the running class
    probabilities (None until the first step; frame and CTC heads: the latest frame's); `finish()` flushes the
    right context. A CTC model also decodes as it goes: `tokens()` is the sequence so far. `logits()` and
    `frame_outputs` are tensors."""

    def __init__(self, model: SpecRNN, feature_extractor=None, classes: list[str] | None = None, multilabel: bool = False,
                 decoding=None):
        check_streamable(model.cfg)
        if model.cfg.normalize == "group":  # Predictor.enrolled_model() folds the speaker's mean in: a constant, it streams
            raise SpecrnnError(ENROL)
        # Streams run on the CPU; a model on a GPU stays there for its other users, and the stream runs on a CPU copy.
        self.model = _on_cpu(model).eval()
        self.step = StreamingStep(self.model)
        self.extractor = _on_cpu(feature_extractor) if feature_extractor is not None else None
        super().__init__(StepPlan.of(self.step, classes, multilabel), decoding)

    def _initial_states(self) -> dict:
        return dict(zip(self.names, self.step.initial_states()))

    @torch.no_grad()
    def _step(self, x: np.ndarray, n: np.ndarray, states: dict):
        outs = self.step(torch.from_numpy(x), torch.from_numpy(n), [states[k] for k in self.names])
        valid = outs[1] if self.plan.frame_head and self.plan.cnn else None
        return outs[0], valid, dict(zip(self.names, outs[2 if valid is not None else 1 :]))

    def _audio_stream(self):
        if self.extractor is None:
            raise SpecrnnError("no feature extractor: use push_features, or build the stream from a Predictor")
        return AudioStream(self.extractor)

    def push_features(self, chunk) -> np.ndarray | None:
        """A (t, F) chunk of un-normalised features (as the FeatureExtractor makes them)."""
        return super().push_features(chunk.numpy() if isinstance(chunk, torch.Tensor) else chunk)


def stream(predictor) -> StreamingClassifier:
    """A StreamingClassifier for a loaded Predictor (`specrnn.load(run).stream()`)."""
    return StreamingClassifier(predictor.enrolled_model(), predictor.extractor, predictor.classes,
                               predictor.task.multilabel, predictor.decoding)
