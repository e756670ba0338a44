"""The served model, loaded once: PyTorch (`Predictor`), or onnxruntime on ONNX graphs exported at start-up (`--onnx`).

Both decode and extract features the same way (PyTorch's STFT); only the network runs on the chosen runtime.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import SpecrnnError
from ..inference import Predictor
from ..inference.streaming import check_streamable


class OnnxPredictor(Predictor):
    """A Predictor whose network runs on onnxruntime (an offline graph from `specrnn export`)."""

    def attach(self, path: str | Path, threads: int) -> "OnnxPredictor":
        from ..inference.graphs import time_multiple
        from ..inference.onnx_stream import session

        self.session, self.multiple = session(path, threads), time_multiple(self.model)
        return self

    def _run(self, features: list[np.ndarray], batch_size: int):
        """(row indices, onnxruntime outputs, lengths) per length-sorted batch."""
        from ..inference.graphs import pad_time

        order = np.argsort([len(f) for f in features], kind="stable")
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            lengths = np.array([len(features[i]) for i in idx], dtype=np.int64)
            x = np.zeros((len(idx), int(lengths.max()), features[idx[0]].shape[1]), dtype=np.float32)
            for row, i in enumerate(idx):
                x[row, : lengths[row]] = features[i]
            yield idx, self.session.run(None, {"features": pad_time(x, self.multiple), "lengths": lengths}), lengths

    def logits_from_features(self, features: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        from ..tasks.classification import clip_logits

        out = np.zeros((len(features), len(self.classes)), dtype=np.float32)
        for idx, outs, _ in self._run(features, batch_size):
            out[idx] = outs[0] if len(outs) == 1 else clip_logits(tuple(torch.from_numpy(o) for o in outs)).numpy()
        return out

    def frame_log_probs(self, features: list[np.ndarray], batch_size: int = 64) -> list[np.ndarray]:
        out: list = [None] * len(features)
        for idx, (frames, steps), _ in self._run(features, batch_size):
            log_probs = torch.log_softmax(torch.from_numpy(frames), -1).numpy()
            for i, lp, n in zip(idx, log_probs, steps):
                out[i] = lp[: int(n)]
        return out


class Backend:
    """What the server runs: `predict_waves` for batches of uploads, `new_stream()` for a WebSocket."""

    def __init__(self, run: str | Path, onnx: bool = False, threads: int = 1, log=print):
        self.run, self.kind = Path(run), "onnxruntime" if onnx else "pytorch"
        self.predictor = Predictor.load(run, device="cpu")
        cfg = self.predictor.cfg
        if cfg.model.normalize == "group":
            raise SpecrnnError(f"{run}: this model normalises per speaker (model.normalize: group), and a server has no "
                               "one speaker to enrol; export it for one speaker (specrnn export --enroll) or train with "
                               "another model.normalize to serve it")
        try:
            check_streamable(cfg.model, cfg.features)
            self.stream_error = None
        except SpecrnnError as e:
            self.stream_error = str(e)
        self.stream_session = None
        if onnx:
            self._export(threads, log)

    def _export(self, threads: int, log) -> None:
        from ..export import export_run
        from ..inference.onnx_stream import session

        self._tmp = tempfile.TemporaryDirectory(prefix="specrnn-serve-")
        log(f"exporting {self.run} to ONNX (offline graph{', streaming step' if self.stream_error is None else ''}) ...")
        offline = export_run(self.run, Path(self._tmp.name) / "offline.onnx")
        p = self.predictor
        self.predictor = OnnxPredictor(p.model, p.cfg, p.classes, p.meta).attach(offline["path"], threads)
        self.max_abs_diff = {"offline": offline.get("max_abs_diff")}
        if self.stream_error is None:
            try:
                streaming = export_run(self.run, Path(self._tmp.name) / "streaming.onnx", streaming=True)
            except SpecrnnError as e:  # a model the streaming graph cannot express yet: /stream says why
                self.stream_error = f"the ONNX streaming graph cannot express this model: {e}"
            else:
                self.stream_session = session(streaming["path"], 1)
                self.max_abs_diff["streaming"] = streaming.get("max_abs_diff")

    def new_stream(self):
        """A fresh stream with carried state (PyTorch StreamingClassifier or onnxruntime OnnxStreamingClassifier)."""
        if self.stream_error:
            raise SpecrnnError(self.stream_error)
        if self.stream_session is not None:
            from ..inference.onnx_stream import OnnxStreamingClassifier

            return OnnxStreamingClassifier(self.stream_session)
        return self.predictor.stream()

    def info(self) -> dict:
        from .. import __version__

        p = self.predictor
        meta = p.meta or {}
        return {"version": __version__, "run": self.run.name, "backend": self.kind, "task": p.task.name,
                "classes": p.classes, "features": p.cfg.features.model_dump(), "sample_rate": p.cfg.features.sample_rate,
                "model": {"cell": p.cfg.model.cell, "layers": p.cfg.model.layers, "hidden": p.cfg.model.hidden,
                          "bidirectional": p.cfg.model.bidirectional, "head": "ctc" if p.task.sequence else p.cfg.model.head,
                          "parameters": sum(t.numel() for t in p.model.parameters()),
                          "bytes": (self.run / "model.pt").stat().st_size if (self.run / "model.pt").is_file() else None},
                "streaming": self.stream_error is None, "streaming_error": self.stream_error,
                "trained": {k: meta[k] for k in ("created", "epochs") if k in meta}}
