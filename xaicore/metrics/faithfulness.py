"""Faithfulness (Bhatt et al. 2020; Samek et al.'s single-region variant; survey §4.5.2), on images, tables and
text.

Per sample: Δ_r = f(x) − f(x_r), x_r being x with only region r disabled (g(x, r), one region at a time,
never recursive), and Faithfulness_x = ρ(R_r, Δ_r), the Pearson correlation over the L regions of the summed
relevance R_r and the drop Δ_r. The survey's extra 1/n factor is left out: ρ is in [−1, 1] as in Bhatt et al.
and Quantus' ``FaithfulnessCorrelation``; the data-set figure is the mean over samples.

All B·L single-region inputs go through the forward-pass engine (:func:`xaicore.engine.perturbed_scores`, one
keep-mask per region over :class:`xaicore.features.Regions`), up to ``forward_batch`` inputs at a time; there is
no loop over samples. Tables and text: a feature is a column or a token, removed as in :mod:`xaicore.metrics.aopc`
(the single-feature drops of :mod:`xaicore.features.drops`, which occlusion shares), R_j its own relevance, and
padding positions are left out of ρ.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from xaicore.engine import FORWARD_BATCH, SCORES
from xaicore.errors import XaiCoreError, require_same_shape
from xaicore.features import ColumnStats
from xaicore.features.drops import removal_drops, removal_features
from xaicore.kinds import check_inputs
from xaicore.metrics.aopc import check_relevance


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson ρ of two (B, F) tensors in float64 over the entries where ``b`` is finite (a NaN in b
    leaves that entry out); fewer than two entries or a constant row: NaN (as scipy)."""
    require_same_shape(a, b, "pearson_rows compares rows of the same shape")
    b = b.to(torch.float64)
    mask = torch.isfinite(b)
    n = mask.sum(1, keepdim=True).clamp_min(1).to(torch.float64)
    a = torch.where(mask, a.to(torch.float64), torch.zeros_like(b))
    b = torch.where(mask, b, torch.zeros_like(b))
    a = torch.where(mask, a - a.sum(1, keepdim=True) / n, torch.zeros_like(a))
    b = torch.where(mask, b - b.sum(1, keepdim=True) / n, torch.zeros_like(b))
    den = ((a * a).sum(1) * (b * b).sum(1)).sqrt()
    return torch.where(den > 0, (a * b).sum(1) / den.where(den > 0, torch.ones_like(den)),
                       torch.full_like(den, float("nan")))


def faithfulness(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
                 perturbation: str = "uniform", region: int = 4, score: str = "logit", seed: int = 0,
                 reference: torch.Tensor | ColumnStats | None = None, backend: str = "auto",
                 forward_batch: int = FORWARD_BATCH) -> torch.Tensor:
    """(B,) Pearson ρ between each feature's relevance (an image region's summed relevance) and the drop Δ of
    removing it alone (survey §4.5.2; higher is better). Arguments as :func:`~xaicore.metrics.aopc`; a sample
    whose relevance or drops are constant has no correlation: NaN."""
    target = check_inputs(x, target)
    check_relevance(x, relevance)
    if score not in SCORES:
        raise XaiCoreError(f"unknown score {score!r}; expected one of {', '.join(SCORES)}")
    x = x.detach()
    features, fill = removal_features(x, perturbation=perturbation, region=region, seed=seed, reference=reference,
                                      backend=backend, owner="faithfulness")
    drops = removal_drops(model, x, target, features, fill, score=score, forward_batch=forward_batch)
    return pearson_rows(features.pool(relevance).to(drops.device), drops).float()
