"""Fixtures for the signal methods, SmoothGrad and Grad-CAM: float64 zoo models with non-trivial BatchNorm."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from tests.zoo_models import seeded_zoo_model

CONV_ARCHS = ["cnn", "vgg_bn", "resnet", "densenet"]


def zoo_model(arch: str, seed: int = 3, input_shape: tuple[int, int, int] = (1, 28, 28)) -> nn.Module:
    """A seeded float64 zoo model in eval mode with non-trivial BatchNorm layers."""
    return seeded_zoo_model(arch, seed=seed, input_shape=input_shape).double().eval()


def assert_close(ours: torch.Tensor, ref: torch.Tensor, atol: float = 1e-5) -> None:
    """Agreement to ``atol`` relative to the reference's largest magnitude, on a non-trivial reference."""
    ref = ref.detach()
    scale = max(1e-12, float(ref.abs().max()))
    torch.testing.assert_close(ours, ref, rtol=0.0, atol=atol * scale)
    assert float(ref.abs().max()) > 0


@pytest.fixture(params=CONV_ARCHS)
def conv_model(request) -> nn.Module:
    return zoo_model(request.param)


@pytest.fixture(params=CONV_ARCHS + ["mlp"])
def any_zoo_model(request) -> nn.Module:
    return zoo_model(request.param)


@pytest.fixture
def batch64(digit_batch) -> tuple[torch.Tensor, torch.Tensor]:
    x, target = digit_batch
    return x[:4].double(), target[:4]
