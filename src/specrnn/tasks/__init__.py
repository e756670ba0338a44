"""Tasks: what is learned (labels, loss, metrics), separate from the model that learns it."""
from .classification import ClassificationTask

__all__ = ["ClassificationTask"]
