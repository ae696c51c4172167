"""Seeded, untrained zoo models for tests, with BatchNorm layers holding non-trivial statistics and affine
maps (a freshly built BatchNorm is the identity in eval mode and would hide mistakes)."""

from __future__ import annotations

import torch
import torch.nn as nn

from xaicore.models import build_model


def seeded_zoo_model(arch: str, *, seed: int, input_shape: tuple[int, int, int] = (1, 28, 28),
                     n_classes: int = 10) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(arch, input_shape, n_classes)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
    return model
