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
from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.features.base import Features
from xaicore.features.fills import fill_values
from xaicore.features.image import Regions
from xaicore.features.tabular import Columns, ColumnStats, Tokens
from xaicore.kinds import UNK, check_inputs, describe_kind, input_kind


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


def removal_features(x: torch.Tensor, reference: ColumnStats | None = None, *, unk: int = UNK
                     ) -> tuple[Features, torch.Tensor]:
    """The features adapter of a tabular or text batch and the values a removed feature takes: a column its
    training mean or mode (:meth:`ColumnStats.fill`), a token the unknown word UNK."""
    kind = input_kind(x)
    if kind == "tabular":
        if not isinstance(reference, ColumnStats):
            raise XaiCoreError("removing tabular columns needs their training statistics: pass "
                               "reference=xaicore.features.ColumnStats.fit(x_train, nominal=...)")
        cols = Columns(x, reference)
        return cols, cols.default_fill()
    if kind == "text":
        toks = Tokens(x)
        return toks, toks.default_fill(unk)
    raise NotApplicable(f"columns and tokens are removed from tables and text; {describe_kind(x)} has "
                        "regions (xaicore.features.Regions) or windows instead")


def feature_drops(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, reference: ColumnStats | None = None,
                  score: str = "logit", forward_batch: int = FORWARD_BATCH) -> torch.Tensor:
    """(B, F) float64 Δ_j = f(x) − f(x with column/token j alone removed); NaN at padding positions."""
    target = check_inputs(x, target)
    if score not in SCORES:
        raise XaiCoreError(f"unknown score {score!r}; expected one of {', '.join(SCORES)}")
    features, fill = removal_features(x.detach(), reference)
    drops = single_drops(model, x.detach(), target, features, fill, score=score, forward_batch=forward_batch,
                         dtype=torch.float64)
    real = torch.arange(features.n_features, device=x.device)[None] < features.counts[:, None]
    return torch.where(real, drops, torch.full_like(drops, float("nan")))


def region_drops(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, perturbation: str = "uniform",
                 region: int = 4, score: str = "logit", seed: int = 0, reference: torch.Tensor | None = None,
                 backend: str = "auto", forward_batch: int = FORWARD_BATCH) -> torch.Tensor:
    """(B, L) float64 Δ_r = f(x) − f(x with region r alone disabled by ``perturbation``), regions in row-major
    grid order (:class:`Regions`). A region left unchanged keeps the two passes' difference (the faithfulness
    archive of the default survey is kept bit for bit; occlusion and the feature drops give it exactly 0)."""
    target = check_inputs(x, target)
    if x.ndim != 4:
        raise XaiCoreError(f"faithfulness perturbs image regions: x must be (B, C, H, W), got {tuple(x.shape)}")
    if score not in SCORES:
        raise XaiCoreError(f"unknown score {score!r}; expected one of {', '.join(SCORES)}")
    x = x.detach()
    features = Regions(x, region)
    fill = fill_values(x, perturbation, region=region, seed=seed, reference=reference, backend=backend)
    return single_drops(model, x, target, features, fill, score=score, forward_batch=forward_batch,
                        dtype=torch.float64, exact_zeros=False)
