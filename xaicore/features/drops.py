"""Single-feature drops: Δ_f = f(x) − f(x with feature f alone removed), for every feature of every sample.

One computation serves occlusion (Zeiler & Fergus 2014; windows, columns, tokens; survey §6.2) and the
faithfulness metric (Bhatt et al. 2020, survey §4.5.2; regions, columns, tokens): each copy of the batch removes
one feature (``keep`` = ¬I), all copies go through the forward-pass engine (:func:`xaicore.engine.perturbed_scores`,
``forward_batch`` inputs per pass). A feature whose removal leaves the sample exactly as it is (a zero window on
a zero background) drops exactly 0, not the difference of two passes over other batches, whose sign the host's
last bits would decide (docs/reproducibility.md).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from xaicore.engine import FORWARD_BATCH, SCORES, eval_mode, perturbed_scores, target_scores
from xaicore.errors import XaiCoreError
from xaicore.features.base import Features
from xaicore.features.fills import PERTURBATIONS
from xaicore.features.image import Regions
from xaicore.features.select import features_for
from xaicore.features.tabular import ColumnStats
from xaicore.kinds import check_inputs


@torch.no_grad()
def single_drops(model: nn.Module, x: torch.Tensor, target: torch.Tensor, features: Features, fill: torch.Tensor,
                 *, score: str = "logit", forward_batch: int = FORWARD_BATCH, dtype: torch.dtype | None = None,
                 exact_zeros: bool = True) -> torch.Tensor:
    """(B, F) Δ_f of removing each feature of ``features`` alone (to ``fill``), computed in ``dtype`` (None:
    the scores' own); ``exact_zeros``: 0 where the removal changes nothing (``features.unchanged``)."""
    if score not in SCORES:
        raise XaiCoreError(f"unknown score {score!r}; expected one of {', '.join(SCORES)}")
    with eval_mode(model):
        fx = target_scores(model, x, target, score)
    keep = ~torch.eye(features.n_features, dtype=torch.bool, device=x.device)  # copy f: feature f alone removed
    scores = perturbed_scores(model, x, target, features, keep, fill, score=score, forward_batch=forward_batch)
    if dtype is not None:
        fx, scores = fx.to(dtype), scores.to(dtype)
    drops = fx[:, None] - scores
    if exact_zeros:
        drops = torch.where(features.unchanged(fill), torch.zeros_like(drops), drops)
    return drops


def feature_drops(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, perturbation: str = "uniform",
                  region: int = 4, score: str = "logit", seed: int = 0,
                  reference: torch.Tensor | ColumnStats | None = None, backend: str = "auto",
                  forward_batch: int = FORWARD_BATCH) -> torch.Tensor:
    """(B, F) float64 Δ_f = f(x) − f(x with feature f alone removed) over the removal metrics' features
    (:func:`removal_features`: image regions, table columns, text tokens); see :func:`removal_drops`."""
    target = check_inputs(x, target)
    if score not in SCORES:
        raise XaiCoreError(f"unknown score {score!r}; expected one of {', '.join(SCORES)}")
    x = x.detach()
    features, fill = removal_features(x, perturbation=perturbation, region=region, seed=seed, reference=reference,
                                      backend=backend)
    return removal_drops(model, x, target, features, fill, score=score, forward_batch=forward_batch)


def removal_drops(model: nn.Module, x: torch.Tensor, target: torch.Tensor, features: Features, fill: torch.Tensor,
                  *, score: str = "logit", forward_batch: int = FORWARD_BATCH) -> torch.Tensor:
    """(B, F) float64 single-feature drops of the removal metrics; NaN for the empty features of a sample (text
    padding). A column or token whose removal changes nothing drops exactly 0; an image region keeps the two
    passes' difference (the faithfulness archive of the default survey is kept bit for bit)."""
    drops = single_drops(model, x, target, features, fill, score=score, forward_batch=forward_batch,
                         dtype=torch.float64, exact_zeros=not isinstance(features, Regions))
    real = torch.arange(features.n_features, device=x.device)[None] < features.counts[:, None]
    return torch.where(real, drops, torch.full_like(drops, float("nan")))


def removal_features(x: torch.Tensor, *, perturbation: str = "uniform", region: int = 4, seed: int = 0,
                     reference: torch.Tensor | ColumnStats | None = None, backend: str = "auto",
                     owner: str = "perturbation") -> tuple[Features, torch.Tensor]:
    """The features of the removal metrics (AOPC, faithfulness) and their fill: image regions of side
    ``region`` disabled by ``perturbation`` (:data:`~xaicore.features.fills.PERTURBATIONS`), table columns,
    text tokens (:func:`~xaicore.features.features_for`)."""
    return features_for(x, image="regions", region=region, fill=perturbation, fills=PERTURBATIONS, seed=seed,
                        reference=reference, backend=backend, owner=owner)
