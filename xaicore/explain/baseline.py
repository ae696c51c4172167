"""The ``random`` baseline: uniform noise relevance that every metric must beat."""

from __future__ import annotations

import torch
import torch.nn as nn

from xaicore._rng import per_sample_uniform
from xaicore.explain.registry import register

_STREAM = 1


@register("random", family="baseline", kinds=("image", "tabular", "text"),
          paper="uniform noise baseline (Hooker et al. 2019, 'random')")
def random_relevance(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """U(0, 1) relevance, drawn per sample from (seed, sample content): independent of the model."""
    noise = per_sample_uniform(x, seed, _STREAM)
    return noise.to(x.dtype) if x.is_floating_point() else noise
