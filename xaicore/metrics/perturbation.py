"""Sample-perturbation functions g(x, r) of Samek et al. (survey §4.5.1): what a disabled region becomes.

Each returns a replacement image per sample; a perturbation step copies one region of it into the input.
Noise is drawn per sample from (seed, sample content), so scores do not depend on batching.
"""

from __future__ import annotations

import torch

from xaicore._rng import per_sample_uniform
from xaicore.errors import XaiCoreError

PERTURBATIONS = ("uniform",)
_STREAM = 2


def replacement_values(x: torch.Tensor, perturbation: str, *, seed: int, low: float = 0.0,
                       high: float = 1.0) -> torch.Tensor:
    """The values that replace disabled input variables, of ``x``'s shape.

    ``uniform``: U(low, high) per input variable (Samek et al.'s first choice; [0, 1] is the data range).
    """
    if perturbation == "uniform":
        return per_sample_uniform(x, seed, _STREAM, low, high).to(x.dtype)
    raise XaiCoreError(f"unknown perturbation {perturbation!r}; available: {', '.join(PERTURBATIONS)}")
