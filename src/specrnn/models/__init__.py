"""Models: normaliser -> front-end -> RNN encoder -> pooling -> head, each exact on padded batches."""
from .build import SpecRNN, build_model, summarize

__all__ = ["SpecRNN", "build_model", "summarize"]
