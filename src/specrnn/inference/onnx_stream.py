"""Streaming on onnxruntime: the streaming step model exported by `specrnn export --streaming`, driven by the same
`StepStream` driver as PyTorch's `StreamingClassifier`, with the carried states as numpy arrays named in the model's
metadata."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import SpecrnnError
from .audio_stream import AudioStream
from .step_stream import StepPlan, StepStream


# ---------------------------------------------------------------- onnxruntime side
def session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session with `threads` intra-op threads (1 is fastest for one stream)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def metadata(sess) -> dict[str, str]:
    return dict(sess.get_modelmeta().custom_metadata_map)


class OnnxStreamingClassifier(StepStream):
    """Drive a streaming step model exported by `specrnn export --streaming` on onnxruntime, like
    `StreamingClassifier` (the same driver): push audio or feature chunks of any size, read running probabilities
    (a CTC model also decodes as it goes: `tokens()`). Audio becomes features with the feature settings stored in
    the model's metadata (PyTorch's STFT). `decoding`: a decoding.Decoding for a CTC model (default greedy)."""

    def __init__(self, path_or_session, threads: int = 1, decoding=None):
        if isinstance(path_or_session, (str, Path)):
            try:
                self.sess = session(path_or_session, threads)
            except Exception as e:  # onnxruntime's NoSuchFile, InvalidProtobuf, ...
                raise SpecrnnError(f"{path_or_session}: cannot open as an ONNX model ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
        else:
            self.sess = path_or_session
        meta = metadata(self.sess)
        if meta.get("specrnn_kind") != "streaming":
            raise SpecrnnError("not a specrnn streaming model (export it with `specrnn export RUN --streaming`)")
        self.features = json.loads(meta["features"])
        cnn = json.loads(meta.get("cnn", "[]"))
        frame_head = json.loads(meta.get("frame_head", "false"))
        plan = StepPlan(json.loads(meta["classes"]), int(meta["blank"]) if meta.get("head") == "ctc" else None,
                        json.loads(meta["multilabel"]), int(meta["stack"]),
                        int(json.loads(meta.get("time_multiple", meta["stack"]))), cnn, int(json.loads(meta.get("junk", "0"))),
                        json.loads(meta["states"]), frame_head, int(self.sess.get_inputs()[0].shape[2]))
        self.valid = frame_head and bool(cnn)  # the step model also says which frame outputs are real
        self.out_names = ["logits", *(["valid"] if self.valid else []), *[s["name"] + "_out" for s in plan.states]]
        super().__init__(plan, decoding)

    def _initial_states(self) -> dict:
        return {s["name"]: np.full(s["shape"], s["init"], dtype=s["dtype"]) for s in self.plan.states}

    def _step(self, x: np.ndarray, n: np.ndarray, states: dict):
        outs = self.sess.run(self.out_names, {"features": x, "length": n, **states})
        k = 2 if self.valid else 1
        return outs[0], outs[1].astype(bool) if self.valid else None, dict(zip(self.names, outs[k:]))

    def _audio_stream(self):
        from ..config import FeatureConfig
        from ..features import FeatureExtractor

        return AudioStream(FeatureExtractor(FeatureConfig(**self.features)))
