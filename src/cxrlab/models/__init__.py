"""Model registry, pretrained weights, heads and model cards."""

from cxrlab.models.registry import MODELS, Classifier, build_model, model_entry
from cxrlab.models.weights import load_weights, pretrained_available

__all__ = ["MODELS", "Classifier", "build_model", "load_weights", "model_entry", "pretrained_available"]
