"""Feature removal on tabular and text data: AOPC MoRF/LeRF and faithfulness over columns and tokens.

The image metrics (:mod:`xaicore.metrics.aopc`, :mod:`xaicore.metrics.faithfulness`) perturb square regions; here
a feature is a column of a table or a token of a sentence (:class:`xaicore.features.Columns`,
:class:`xaicore.features.Tokens`), and removing it replaces it by what carries no information about the sample:

* a column by its training mean (numeric) or mode (nominal), :meth:`xaicore.features.ColumnStats.fill`;
* a token by the unknown word UNK (word erasure, Li et al. 2016; survey §6.2). Padding is no feature: it is never
  removed, and a sentence of n tokens has n steps (its curve stays flat after them).

``feature_aopc``: features ranked by relevance (MoRF: most relevant first; LeRF: least), step k removes one more,
the curve holds f(x⁽ᵏ⁾) for k = 0..F and AOPC = 1/(F+1) Σ_k f(x⁽⁰⁾) − f(x⁽ᵏ⁾) (eqs. 2–5, as the image AOPC).
``feature_faithfulness``: the Pearson ρ over a sample's features of relevance R_j and the drop Δ_j = f(x) − f(x
with j alone removed) (Bhatt et al. 2020, survey §4.5.2). Every copy goes through the forward-pass engine
(:func:`xaicore.engine.perturbed_scores`), packed ``forward_batch`` inputs per pass.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from xaicore.engine import FORWARD_BATCH, SCORES, perturbed_scores
from xaicore.errors import XaiCoreError
from xaicore.features import ColumnStats
from xaicore.features.drops import feature_drops, removal_features
from xaicore.kinds import check_inputs
from xaicore.metrics.aopc import ORDERS, AOPCResult, check_relevance
from xaicore.metrics.declarations import metric


def _check(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, score: str
           ) -> torch.Tensor:
    target = check_inputs(x, target)
    check_relevance(x, relevance)
    if score not in SCORES:
        raise XaiCoreError(f"unknown score {score!r}; expected one of {', '.join(SCORES)}")
    return target


@torch.no_grad()
def feature_aopc(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
                 order: str = "morf", reference: ColumnStats | None = None, score: str = "logit",
                 forward_batch: int = FORWARD_BATCH) -> AOPCResult:
    """AOPC of removing the columns/tokens of ``x`` in the order of ``relevance`` (see the module docstring);
    ties keep the feature order. ``reference``: the training :class:`ColumnStats` (tabular)."""
    target = _check(model, x, target, relevance, score)
    if order not in ORDERS:
        raise XaiCoreError(f"unknown order {order!r}; expected morf or lerf")
    features, fill = removal_features(x.detach(), reference)
    real = torch.arange(features.n_features, device=x.device)[None] < features.counts[:, None]
    key = relevance.detach().to(torch.float64)
    key = torch.where(real, key if order == "morf" else -key, torch.full_like(key, float("-inf")))
    ranking = torch.sort(key, dim=1, descending=True, stable=True).indices  # pads last
    rank = torch.empty_like(ranking)
    rank.scatter_(1, ranking, torch.arange(features.n_features, device=x.device).expand_as(ranking))
    keep = torch.arange(features.n_features + 1, device=x.device)[None, :, None] <= rank[:, None, :]
    curve = perturbed_scores(model, x.detach(), target, features, keep, fill, score=score,
                             forward_batch=forward_batch).float()
    return AOPCResult(curve, (curve[:, :1] - curve).mean(1), order, metric(f"aopc_{order}").higher_is_better)


def masked_pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson ρ over the finite entries of ``b`` (B, F); fewer than two or a constant row: NaN."""
    mask = torch.isfinite(b)
    n = mask.sum(1, keepdim=True).clamp_min(1).to(torch.float64)
    a = torch.where(mask, a.to(torch.float64), torch.zeros_like(b))
    b = torch.where(mask, b, torch.zeros_like(b))
    a = torch.where(mask, a - a.sum(1, keepdim=True) / n, torch.zeros_like(a))
    b = torch.where(mask, b - b.sum(1, keepdim=True) / n, torch.zeros_like(b))
    den = ((a * a).sum(1) * (b * b).sum(1)).sqrt()
    return torch.where(den > 0, (a * b).sum(1) / den.where(den > 0, torch.ones_like(den)),
                       torch.full_like(den, float("nan")))


def feature_faithfulness(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
                         reference: ColumnStats | None = None, score: str = "logit",
                         forward_batch: int = FORWARD_BATCH) -> torch.Tensor:
    """(B,) Pearson ρ between each feature's relevance and the drop of removing it alone (higher is better);
    padding positions are left out, a constant row gives NaN."""
    _check(model, x, target, relevance, score)
    drops = feature_drops(model, x, target, reference=reference, score=score, forward_batch=forward_batch)
    return masked_pearson(relevance.detach().to(drops.device), drops).float()
