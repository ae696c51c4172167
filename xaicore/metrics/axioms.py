"""The axioms of survey §4.3 per heatmap: conservativity (eq. 1) and positivity; consistency is both."""

from __future__ import annotations

import torch

from xaicore.errors import XaiCoreError, require_finite


def conservation_error(relevance: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """(B,) |Σᵢ Rᵢ − f(x)| / |f(x)|: 0 for a conservative heatmap (eq. 1)."""
    if tuple(score.shape) != (relevance.shape[0],):
        raise XaiCoreError(f"score must be (B,) = ({relevance.shape[0]},), one f(x) per heatmap, got "
                           f"{tuple(score.shape)}")
    require_finite(relevance, "relevance")
    total = relevance.detach().flatten(1).to(torch.float64).sum(1)
    f = score.detach().to(torch.float64)
    return ((total - f).abs() / f.abs().clamp_min(1e-12)).float()


def positive_fraction(relevance: torch.Tensor) -> torch.Tensor:
    """(B,) share of input variables with Rᵢ ≥ 0: 1 for a positive heatmap."""
    require_finite(relevance, "relevance")
    return (relevance.detach().flatten(1) >= 0).float().mean(1)
