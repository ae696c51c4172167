"""Area Over the Perturbation Curve, MoRF and LeRF (Samek et al. 2017; survey §4.5.1, eqs. 2–5), on images,
tables and text.

The features removed step by step: on images the regions of ``region``×``region`` pixels, ranked by summed
relevance; on tables the columns (to their training mean or mode, ``reference=ColumnStats``) and on text the
tokens (to the unknown word UNK; padding is never removed and a sentence of n tokens has n steps), ranked by
their relevance, ties in feature order. Images: regions are ranked by summed relevance. Step k disables one more region:
x⁽ᵏ⁾ = g(x⁽ᵏ⁻¹⁾, r_k) for MoRF, r_{L+1−k} for LeRF. The curve holds f(x⁽ᵏ⁾) for k = 0..L and
AOPC = 1/(L+1) Σ_k f(x⁽⁰⁾) − f(x⁽ᵏ⁾) per sample (the data-set figure is its mean).

The K = L+1 perturbed copies of each sample are fed to the forward-pass engine
(:func:`xaicore.engine.perturbed_scores`) as keep-masks over the regions (:class:`xaicore.features.Regions`)
with the perturbation's values as fill; several steps are packed into one forward pass (``forward_batch``).
The recursive ``blur`` is run once, all L steps in order, before the passes: its last image x⁽ᴸ⁾ holds every
region's step-k value (a region is written at its step and never again), so each step copies its region from
there (:func:`~xaicore.features.fill_for`).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from xaicore.engine import FORWARD_BATCH, SCORES, perturbed_scores
from xaicore.errors import XaiCoreError
from xaicore.features import ColumnStats, adapter_for, fill_for
from xaicore.features.base import Features
from xaicore.features.fills import PERTURBATIONS
from xaicore.kinds import check_inputs
from xaicore.metrics.declarations import metric

ORDERS = ("morf", "lerf")


@dataclasses.dataclass(frozen=True)
class AOPCResult:
    """``curve``: (B, L+1) model score f(x⁽ᵏ⁾); ``aopc``: (B,) mean drop f(x⁽⁰⁾) − f(x⁽ᵏ⁾) over k = 0..L."""

    curve: torch.Tensor
    aopc: torch.Tensor
    order: str
    #: MoRF: a higher AOPC is better (the heatmap found what matters); LeRF: lower is better (declarations.py).
    higher_is_better: bool

    @property
    def drop(self) -> torch.Tensor:
        return self.curve[:, :1] - self.curve


def check_relevance(x: torch.Tensor, relevance: torch.Tensor) -> None:
    if not isinstance(relevance, torch.Tensor) or relevance.shape != x.shape:
        raise XaiCoreError(f"relevance shape {tuple(getattr(relevance, 'shape', ()))} differs from x "
                           f"{tuple(x.shape)}")
    if not torch.isfinite(relevance).all():
        raise XaiCoreError("relevance holds NaN or inf values; fix the heatmaps before scoring them")


@torch.no_grad()
def aopc(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
         order: str = "morf", perturbation: str = "uniform", region: int = 4, score: str = "logit",
         seed: int = 0, reference: torch.Tensor | ColumnStats | None = None, backend: str = "auto",
         forward_batch: int = FORWARD_BATCH) -> AOPCResult:
    """AOPC of ``relevance`` for ``model`` on the batch ``x``; see the module docstring.

    Images (B, C, H, W): ``perturbation`` ``uniform``, ``dirichlet``, ``mean`` (of ``reference`` samples;
    without it, of the batch) or ``blur`` (exact recursive Gaussian blur), see :mod:`xaicore.features.fills`;
    ``region``, ``seed`` and ``backend`` apply. Tables (B, F): ``reference`` is the training
    :class:`~xaicore.features.ColumnStats`. Text (B, T) token ids: nothing to choose.
    ``score``: ``logit`` (the target logit), ``probability`` (its softmax) or ``log_probability``.
    ``forward_batch``: up to this many perturbed inputs go through the model at once (several steps are packed
    when B is smaller; on the CPU no more than ``PACK_BYTES`` of input, see :func:`xaicore.engine.copies_per_pass`).
    """
    target = check_inputs(x, target)
    check_relevance(x, relevance)
    if order not in ORDERS:
        raise XaiCoreError(f"unknown order {order!r}; expected morf or lerf")
    if score not in SCORES:
        raise XaiCoreError(f"unknown score {score!r}; expected one of {', '.join(SCORES)}")
    x = x.detach()
    features = adapter_for(x, image="regions", region=region, reference=reference, owner="aopc")
    ranking = features.ranking(relevance, descending=order == "morf", backend=backend)
    fill = fill_for(x, perturbation, features=features, seed=seed, reference=reference, ranking=ranking,
                    backend=backend, fills=PERTURBATIONS, owner="aopc")
    return removal_curve(model, x, target, features, fill, ranking, order=order, score=score,
                         forward_batch=forward_batch)


def removal_curve(model: nn.Module, x: torch.Tensor, target: torch.Tensor, features: Features, fill: torch.Tensor,
                  ranking: torch.Tensor, *, order: str, score: str = "logit",
                  forward_batch: int = FORWARD_BATCH) -> AOPCResult:
    """The curve f(x⁽ᵏ⁾), k = 0..F, of removing ``features`` to ``fill`` in the order ``ranking`` (B, F): step k
    removes the features ranked before k. Each pass writes only the features that change
    (:meth:`xaicore.features.Features.builder`)."""
    n = features.n_features
    # step k keeps the features ranked k or later: keep[i, k, f] = rank of f in sample i >= k
    rank = torch.empty_like(ranking)
    rank.scatter_(1, ranking, torch.arange(n, device=x.device).expand_as(ranking))
    keep = torch.arange(n + 1, device=x.device)[None, :, None] <= rank[:, None, :]
    curve = perturbed_scores(model, x, target, features, keep, fill, score=score,
                             forward_batch=forward_batch).float()
    return AOPCResult(curve, (curve[:, :1] - curve).mean(1), order, metric(f"aopc_{order}").higher_is_better)
