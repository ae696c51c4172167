"""The architectures the survey is run on. Layers carry names (``conv1``, ``fc2`` ...), which the
randomized controls and the archive's ``model`` coordinate use."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch.nn as nn

from xaicore.errors import XaiCoreError


def small_cnn(input_shape: tuple[int, int, int], n_classes: int) -> nn.Sequential:
    """conv-relu-pool x2, then two dense layers."""
    c, h, w = input_shape
    if h % 4 or w % 4:
        raise XaiCoreError(f"cnn needs height and width divisible by 4, got {h}x{w}")
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(c, 16, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(32 * (h // 4) * (w // 4), 128)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(128, n_classes)),
    ]))


def mlp(input_shape: tuple[int, int, int], n_classes: int) -> nn.Sequential:
    """Three dense layers with ReLU, on the flattened image."""
    c, h, w = input_shape
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(c * h * w, 256)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(256, 128)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(128, n_classes)),
    ]))


ARCHS: dict[str, Callable[[tuple[int, int, int], int], nn.Module]] = {"cnn": small_cnn, "mlp": mlp}


def build_model(arch: str, input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """A fresh, untrained model of the zoo (its init follows the global torch seed)."""
    if arch not in ARCHS:
        raise XaiCoreError(f"unknown model architecture {arch!r}; known: {', '.join(ARCHS)}")
    return ARCHS[arch](tuple(input_shape), int(n_classes))
