"""Inference without the training stack: a loaded run (`Predictor`) for files, waveforms or features, and
streaming over chunks with carried state (`inference.streaming`)."""
from __future__ import annotations

from .predictor import BEAM, ENROL, Prediction, Predictor, load

__all__ = ["BEAM", "ENROL", "Prediction", "Predictor", "load"]
