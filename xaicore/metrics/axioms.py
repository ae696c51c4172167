"""The axioms of survey §4.3 per heatmap: conservativity (eq. 1) and positivity; consistency is both."""

from __future__ import annotations

import torch


def conservation_error(relevance: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """(B,) |Σᵢ Rᵢ − f(x)| / |f(x)|: 0 for a conservative heatmap (eq. 1)."""
    total = relevance.detach().flatten(1).to(torch.float64).sum(1)
    f = score.detach().to(torch.float64)
    return ((total - f).abs() / f.abs().clamp_min(1e-12)).float()


def positive_fraction(relevance: torch.Tensor) -> torch.Tensor:
    """(B,) share of input variables with Rᵢ ≥ 0: 1 for a positive heatmap."""
    return (relevance.detach().flatten(1) >= 0).float().mean(1)
