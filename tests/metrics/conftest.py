"""Fixtures for the metric tests: a linear model with known region contributions, float64 CNN/MLP copies,
and random image batches. The root conftest's fixtures (cnn, mlp, digit_batch, helpers) are available too."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from xaicore.data import load_digits28


def linear_model(shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 3, seed: int = 0,
                 dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """f(x) = W x + b on the flattened image: the drop of disabling a region r is exactly w_r · (x_r − x'_r)."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(int(torch.tensor(shape).prod()), n_classes).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=dtype))
        lin.bias.copy_(torch.randn(n_classes, generator=g, dtype=dtype))
    return nn.Sequential(nn.Flatten(), lin).eval()


@pytest.fixture
def linear() -> nn.Sequential:
    return linear_model()


@pytest.fixture(scope="session")
def digits16() -> tuple[torch.Tensor, torch.Tensor]:
    """16 test digits (float32) and their labels."""
    d = load_digits28()
    return d.x_test[:16].clone(), d.y_test[:16].clone()


@pytest.fixture
def images() -> torch.Tensor:
    """Random (6, 2, 13, 10) images in [0, 1]: two channels, sides not divisible by the region sizes."""
    return torch.rand(6, 2, 13, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
