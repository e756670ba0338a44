"""Load a run folder and predict: decoding, features and the model only (no training framework).

A clip's scores are the same alone or in a batch, because every part of the model is padding-exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import load_audio
from ..config import Config, config_from_dict
from ..errors import ENROL, AudioError, SpecrnnError
from ..formatting import significant
from ..features import FeatureExtractor, group_means
from ..models import SpecRNN, build_model
from ..files import load_model_file
from ..tasks import make_task
from ..tasks.classification import clip_logits


BEAM = 16  # CTC n-best: prefixes kept per step

@dataclass
class Prediction:
    path: str
    label: str | None
    probabilities: dict[str, float]
    error: str | None = None
    path_probability: float | None = None  # CTC: the label's probability: its best path's (greedy), or its kept paths' (beam)
    timings: list[dict] | None = None  # CTC: each decoded token with its start and end (seconds) in the alignment
    beam: bool = False  # CTC: decoded by beam search (else greedy best path)

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most probable labels with their probabilities, most probable first."""
        if k < 1:
            raise ValueError(f"top-k must be at least 1, got {k}")
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]

    def to_dict(self, top_k: int | None = None) -> dict:
        if self.error:
            return {"path": self.path, "error": self.error}
        items = self.top(top_k or len(self.probabilities))
        out = {"path": self.path, "label": self.label, "top": [{"label": lab, "probability": significant(p)} for lab, p in items]}
        if self.path_probability is not None:
            out["sequence_probability" if self.beam else "best_path_probability"] = significant(self.path_probability)
        if self.timings is not None:
            out["tokens"] = self.timings
        return out


class Predictor:
    """A trained model with its feature settings and class names, ready for files, waveforms or features."""

    def __init__(self, model: SpecRNN, cfg: Config, classes: list[str], meta: dict | None = None, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.cfg, self.classes, self.meta, self.device = cfg, classes, meta or {}, device
        self.task = make_task(cfg.task, classes)  # what the model learnt: its outputs, decoding and metrics
        self.extractor = FeatureExtractor(cfg.features).to(device)
        self.group_mean: np.ndarray | None = None  # model.normalize: group: the enrolled speaker's mean features
        self.enrolled = 0
        self._enrolled_model: SpecRNN | None = None
        self.decoding = None  # CTC: a decoding.Decoding (None: greedy best path); set_decoding() chooses

    def set_decoding(self, beam: int | None = None, vocabulary: list[str] | None = None, grammar: str | Path | None = None,
                     lm: str | Path | None = None, lm_weight: float = 0.5, token_bonus: float = 0.0) -> "Predictor":
        """CTC models: decode by prefix beam search over `beam` prefixes (None: greedy best path, the default), with
        optional constraints: only the `vocabulary` tokens, only sequences of a `grammar` file's patterns, an
        n-gram prior from an ARPA file (`lm`, weighted by `lm_weight`, plus `token_bonus` per token). A constraint
        without a beam searches 16 prefixes. Used by decode(), predict(), evaluate and stream(). Returns self."""
        from ..decoding import Decoding

        if not self.task.sequence:
            raise SpecrnnError("beam search and decoding constraints are for CTC models (token-sequence labels)")
        self.decoding = Decoding.of(self.classes, beam, vocabulary, grammar, lm, lm_weight, token_bonus)
        return self

    @property
    def needs_enrolment(self) -> bool:
        """True for a model trained with per-speaker normalisation (model.normalize: group) until enroll()."""
        return self.cfg.model.normalize == "group" and self.group_mean is None

    def enroll(self, paths: list[str | Path], skip_unusable: bool = False) -> "Predictor":
        """Models trained with `model.normalize: group`: the speaker (group) whose clips come next, given by some of
        its recordings (files or folders; no labels needed; the clips to predict may be among them). Their mean features are
        subtracted from every later clip, as each speaker's own mean was in training. An unusable file is an error
        unless `skip_unusable`. Returns self."""
        if self.cfg.model.normalize != "group":
            raise SpecrnnError(f"this model normalises with '{self.cfg.model.normalize}', not per speaker: it needs no enrolment")
        from ..data.manifest import expand_audio_paths

        paths = expand_audio_paths([paths] if isinstance(paths, (str, Path)) else list(paths))
        if not paths:
            raise SpecrnnError("enrolment needs at least one recording of the speaker")
        f = self.cfg.features
        waves = []
        for p in paths:
            try:
                waves.append(load_audio(p, f.sample_rate, f.max_seconds, f.crop))
            except AudioError:
                if not skip_unusable:
                    raise
        feats = self.extractor.extract(waves) if waves else []
        if not sum(len(x) for x in feats):
            raise SpecrnnError(f"enrolment: the {len(paths)} recording(s) give no usable feature frames (unreadable, silent or too short)")
        self.group_mean = group_means(feats, ["speaker"] * len(feats))["speaker"]
        self.enrolled = len(feats)  # clips the mean came from
        self._enrolled_model = None
        return self

    def enrolled_model(self) -> SpecRNN:
        """The model for plain features: a per-speaker model with the enrolled speaker's mean folded into its
        normaliser ((x - speaker - mean) / std is (x - (mean + speaker)) / std, a `global` model on the CPU), for
        streaming and export; any other model as it is."""
        if self.cfg.model.normalize != "group":
            return self.model
        if self.group_mean is None:
            raise SpecrnnError(ENROL)
        if self._enrolled_model is None:
            import copy

            model = copy.deepcopy(self.model).cpu().eval()
            model.normalizer.mean += torch.from_numpy(self.group_mean)
            model.cfg.normalize = model.normalizer.mode = "global"
            self._enrolled_model = model
        return self._enrolled_model

    @classmethod
    def load(cls, run: str | Path, device: str | None = None) -> "Predictor":
        state, meta = load_model_file(run)
        cfg = config_from_dict(meta["config"])
        model = build_model(cfg.model, cfg.features.n_features, make_task(cfg.task, meta["classes"]))
        model.load_state_dict(state)
        if device is not None and str(device).startswith("cuda") and not torch.cuda.is_available():
            raise SpecrnnError(f"device '{device}': this torch ({torch.__version__}) sees no CUDA GPU; use device='cpu'")
        return cls(model, cfg, meta["classes"], meta, device or ("cuda" if torch.cuda.is_available() else "cpu"))

    @torch.no_grad()
    def logits_from_features(self, features: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Logits (N, C) for (T, F) feature arrays, batched by length."""
        if self.task.sequence:
            raise SpecrnnError("a CTC model has no clip logits: use decode() or predict()")
        out = np.zeros((len(features), len(self.classes)), dtype=np.float32)
        for idx, x, lengths in self._batches(features, batch_size):
            out[idx] = clip_logits(self.model(x, lengths)).float().cpu().numpy()
        return out

    def _batches(self, features: list[np.ndarray], batch_size: int):
        """(row indices, padded batch, lengths) on the model's device, rows grouped by length."""
        from ..data.batching import pad_batch

        order = np.argsort([len(f) for f in features], kind="stable")
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            x, lengths = pad_batch([torch.from_numpy(features[i]) for i in idx])
            yield idx, x.to(self.device), lengths.to(self.device)

    @torch.no_grad()
    def frame_log_probs(self, features: list[np.ndarray], batch_size: int = 64) -> list[np.ndarray]:
        """CTC models: each (T, F) feature array's (T', tokens + blank) log-probabilities over its real steps."""
        if not self.task.sequence:
            raise SpecrnnError("frame log-probabilities are for CTC models; a classifier's come from logits_from_features()")
        out: list = [None] * len(features)
        for idx, x, lengths in self._batches(features, batch_size):
            frames, steps = self.model(x, lengths)
            log_probs = torch.log_softmax(frames.float(), -1).cpu().numpy()
            for i, lp, n in zip(idx, log_probs, steps.cpu().numpy()):
                out[i] = lp[: int(n)]
        return out

    def decode(self, features: list[np.ndarray], batch_size: int = 64) -> list[tuple[list[int], float]]:
        """CTC models: each (T, F) feature array's decoded token indices and their probability: greedy, the best
        path and that path's probability; with a beam (set_decoding), the best sequence and its probability over
        the kept paths (an empty sequence and 0 when no sequence meets the constraints)."""
        return [self._decode_one(lp) for lp in self.frame_log_probs(features, batch_size)]

    def _decode_one(self, lp: np.ndarray) -> tuple[list[int], float]:
        from ..decoding.greedy import best_path

        if self.decoding is None or self.decoding.beam is None:
            return best_path(lp, len(self.classes))
        search = self.decoding.start(len(self.classes))
        search.update(lp)
        best = search.results()[:1]
        return (best[0][0], best[0][1]) if best else ([], 0.0)

    def n_best(self, features: list[np.ndarray], k: int, batch_size: int = 64) -> list[list[tuple[list[int], float]]]:
        """CTC models: the k most probable token sequences of each (T, F) feature array, each with its probability
        over all of its paths (prefix beam search: a beam of BEAM prefixes, or k if larger, so the figures do not
        depend on k up to BEAM; pruned paths are not counted, so they are lower bounds). Files: predict(n_best=k)."""
        return [self._n_best_one(lp, k) for lp in self.frame_log_probs(features, batch_size)]

    def _n_best_one(self, lp: np.ndarray, k: int) -> list[tuple[list[int], float]]:
        from ..decoding import BeamSearch

        d = self.decoding
        search = BeamSearch(len(self.classes), max(k, BEAM, d.beam if d and d.beam else 0), d.constraints if d else ())
        search.update(lp)
        return search.results()[:k]

    @property
    def step_seconds(self) -> float:
        """Audio per CTC step: feature hop x frame stacking x the CNN's time strides."""
        from .graphs import time_multiple

        f = self.cfg.features
        return time_multiple(self.model) * f.hop_length / f.sample_rate

    def _spans(self, lp: np.ndarray, seq: list[int]) -> list[tuple[int, int, int]]:
        """Where each decoded token lies: on the best path (greedy), or the forced alignment of a beam's sequence."""
        from ..tasks.ctc import forced_align, path_spans

        if self.decoding is None or self.decoding.beam is None:
            return path_spans(lp.argmax(-1), len(self.classes))
        return forced_align(lp, seq, len(self.classes)) if seq else []

    def timings(self, spans: list[tuple[int, int, int]]) -> list[dict]:
        """(token, first step, last step) -> [{"token", "start", "end"}] in seconds."""
        dt = self.step_seconds
        return [{"token": self.classes[k], "start": round(a * dt, 3), "end": round((b + 1) * dt, 3)} for k, a, b in spans]

    def align(self, paths: list[str | Path], transcripts: list[str], batch_size: int = 64) -> list[list[dict]]:
        """CTC models: where each known transcript's tokens are in its file (Viterbi forced alignment), as
        [{"token", "start", "end"}] per file."""
        from ..tasks.ctc import forced_align

        if not self.task.sequence:
            raise SpecrnnError("align() is for CTC models (token-sequence labels)")
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        transcripts = [transcripts] if isinstance(transcripts, str) else list(transcripts)
        if len(paths) != len(transcripts):
            raise SpecrnnError(f"align: {len(paths)} files but {len(transcripts)} transcripts")
        index = {c: i for i, c in enumerate(self.classes)}
        f = self.cfg.features
        waves = [load_audio(p, f.sample_rate, f.max_seconds, f.crop) for p in paths]
        out = []
        for path, text, lp in zip(paths, transcripts, self.frame_log_probs(self.features_of(waves), batch_size)):
            unknown = [t for t in text.split() if t not in index]
            if unknown:
                raise SpecrnnError(f"{path}: transcript tokens {unknown} are not in this model's vocabulary {self.classes}")
            try:
                out.append(self.timings(forced_align(lp, [index[t] for t in text.split()], len(self.classes))))
            except ValueError as e:
                raise SpecrnnError(f"{path}: cannot align '{text}': {e}") from None
        return out

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(logits)
        return (torch.sigmoid(t) if self.task.multilabel else torch.softmax(t, -1)).numpy()

    def features_of(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """The model's input features of waveforms (minus the enrolled speaker's mean for a per-speaker model)."""
        if self.cfg.model.normalize != "group":
            return self.extractor.extract(waves)
        if self.group_mean is None:
            raise SpecrnnError(ENROL)
        return [x - self.group_mean for x in self.extractor.extract(waves)]

    def stream(self):
        """A StreamingClassifier (unidirectional models): push audio chunks, read running probabilities."""
        from .streaming import stream

        return stream(self)

    def predict(self, paths: list[str | Path], batch_size: int = 64, n_best: int = 1) -> list[Prediction]:
        """One Prediction per path; an unusable file gives a Prediction with `error` set (others still run).

        A CTC model's label is its best path's sequence (what `evaluate` scores), with that path's probability; with
        `n_best` > 1 the probabilities are instead those of the n_best most probable sequences (`n_best()`)."""
        # one path is not a sequence of characters; a generator is read once, into a list
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        f = self.cfg.features
        decoded: list[np.ndarray | AudioError] = []
        for p in paths:
            try:
                decoded.append(load_audio(p, f.sample_rate, f.max_seconds, f.crop))
            except AudioError as e:
                decoded.append(e)
        return self.predict_waves(decoded, [str(p) for p in paths], batch_size, n_best)

    def predict_waves(self, decoded: list[np.ndarray | AudioError], names: list[str], batch_size: int = 64,
                      n_best: int = 1) -> list[Prediction]:
        """`predict` on decoded mono waveforms at the model's rate (e.g. uploads), each named by `names`; an
        AudioError in place of a waveform gives that entry's error."""
        waves = [w for w in decoded if not isinstance(w, AudioError)]
        errors = {i: w.reason for i, w in enumerate(decoded) if isinstance(w, AudioError)}
        paths = names
        if self.task.sequence:
            lps = self.frame_log_probs(self.features_of(waves), batch_size) if waves else []  # one pass: decoding and n-best
            probs = [self._decode_one(lp) for lp in lps]
            spans = [self._spans(lp, seq) for lp, (seq, _) in zip(lps, probs)]
            alternatives = [self._n_best_one(lp, n_best) for lp in lps] if n_best > 1 else None
        else:
            probs = self.probabilities(self.logits_from_features(self.features_of(waves), batch_size)) if waves else []
        out, k = [], 0
        for i, p in enumerate(paths):
            if i in errors:
                out.append(Prediction(str(p), None, {}, errors[i]))
                continue
            row = probs[k]
            k += 1
            if self.task.sequence:  # the decoded sequence, with its best path's probability (or the n best)
                label = " ".join(self.classes[t] for t in row[0])
                named = {label: row[1]}
                if alternatives is not None:
                    named = {" ".join(self.classes[t] for t in seq): prob for seq, prob in alternatives[k - 1]}
                out.append(Prediction(str(p), label, named, path_probability=row[1], timings=self.timings(spans[k - 1]),
                                      beam=self.decoding is not None and self.decoding.beam is not None))
                continue
            label = self.classes[int(np.argmax(row))]
            if self.task.multilabel:
                label = ";".join(c for c, v in zip(self.classes, row) if v >= 0.5)
            out.append(Prediction(str(p), label, dict(zip(self.classes, map(float, row)))))
        return out


def load(run: str | Path, device: str | None = None) -> Predictor:
    """`specrnn.load(run_dir).predict(paths)`."""
    return Predictor.load(run, device)
