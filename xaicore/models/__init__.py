"""Model zoo, deterministic training, saved weights and the randomized controls of Adebayo et al."""

from xaicore.models.controls import (
    cascading_controls,
    control_layers,
    independent_controls,
    parameter_layers,
    randomize_layers,
)
from xaicore.models.io import load_model, save_model
from xaicore.models.spec import ModelSpec, Normalize, Normalized, load_weights, split_normalization
from xaicore.models.train import TrainResult, accuracy, predict_logits, train_model
from xaicore.models.zoo import ARCHS, build_model

__all__ = [
    "ARCHS",
    "ModelSpec",
    "Normalize",
    "Normalized",
    "TrainResult",
    "accuracy",
    "build_model",
    "cascading_controls",
    "control_layers",
    "independent_controls",
    "load_model",
    "load_weights",
    "parameter_layers",
    "predict_logits",
    "randomize_layers",
    "save_model",
    "split_normalization",
    "train_model",
]
