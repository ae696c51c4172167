"""Faithfulness (Bhatt et al. 2020; Samek et al.'s single-region variant; survey §4.5.2).

Per sample: Δ_r = f(x) − f(x_r), x_r being x with only region r disabled (g(x, r), one region at a time,
never recursive), and Faithfulness_x = ρ(R_r, Δ_r), the Pearson correlation over the L regions of the summed
relevance R_r and the drop Δ_r. The survey's extra 1/n factor is left out: ρ is in [−1, 1] as in Bhatt et al.
and Quantus' ``FaithfulnessCorrelation``; the data-set figure is the mean over samples.

All B·L single-region inputs are built by the in-place kernels from copies of the batch and go through the
model up to ``forward_batch`` inputs at a time (``copies_per_pass``); there is no loop over samples. Between
passes only the regions disabled in the previous pass are written back from x (no whole-batch copy).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from xaicore.errors import XaiCoreError
from xaicore.explain.registry import check_inputs
from xaicore.kernels import get_backend
from xaicore.kernels.torch_kernels import region_sums
from xaicore.metrics.aopc import SCORES, _score, check_relevance
from xaicore.metrics.perturbation import copies_per_pass, make_disabler


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson ρ of two (B, L) tensors in float64; a constant row gives NaN (as scipy)."""
    a = a.to(torch.float64) - a.to(torch.float64).mean(1, keepdim=True)
    b = b.to(torch.float64) - b.to(torch.float64).mean(1, keepdim=True)
    den = ((a * a).sum(1) * (b * b).sum(1)).sqrt()
    return torch.where(den > 0, (a * b).sum(1) / den.where(den > 0, torch.ones_like(den)),
                       torch.full_like(den, float("nan")))


@torch.no_grad()
def region_drops(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, perturbation: str = "uniform",
                 region: int = 4, score: str = "logit", seed: int = 0, reference: torch.Tensor | None = None,
                 backend: str = "auto", forward_batch: int = 256) -> torch.Tensor:
    """(B, L) float64 Δ_r = f(x) − f(x with region r alone disabled), regions in row-major grid order."""
    target = check_inputs(x, target)
    if x.ndim != 4:
        raise XaiCoreError(f"faithfulness perturbs image regions: x must be (B, C, H, W), got {tuple(x.shape)}")
    if score not in SCORES:
        raise XaiCoreError(f"unknown score {score!r}; expected logit or probability")
    kern = get_backend(backend, x.device)
    disable = make_disabler(x, perturbation, kern, region, seed=seed, reference=reference, recursive=False)
    b, n_regions = x.shape[0], disable.grid.shape[0]
    per_pass = copies_per_pass(x, forward_batch, n_regions)  # regions per forward pass, each for the whole batch
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        fx = _score(model, x, target, score).to(torch.float64)
        out = torch.empty(b, n_regions, dtype=torch.float64, device=x.device)
        clean = x.detach().contiguous()
        buf = clean.repeat(per_pass, 1, 1, 1)
        tgt = target.repeat(per_pass)
        regions = None
        for r0 in range(0, n_regions, per_pass):  # row j·B + i of buf: sample i with region r0 + j disabled
            n = min(per_pass, n_regions - r0)
            part = buf[:n * b]
            if regions is not None:  # back to clean copies of x: only the regions disabled last pass changed
                kern.perturb_regions(part, clean, regions[:n * b], disable.grid)
            regions = torch.arange(r0, r0 + n, device=x.device).repeat_interleave(b)
            disable(part, regions)
            out[:, r0:r0 + n] = fx[:, None] - _score(model, part, tgt[:n * b], score).to(torch.float64).view(n, b).T
    finally:
        for m, flag in flags:
            m.training = flag
    return out


def faithfulness(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
                 perturbation: str = "uniform", region: int = 4, score: str = "logit", seed: int = 0,
                 reference: torch.Tensor | None = None, backend: str = "auto", forward_batch: int = 256
                 ) -> torch.Tensor:
    """(B,) Pearson ρ between each region's summed relevance and the drop Δ_r of disabling it alone
    (survey §4.5.2; higher is better). Arguments as :func:`~xaicore.metrics.aopc`; a sample whose region sums
    or drops are constant has no correlation: NaN."""
    check_relevance(x, relevance)
    drops = region_drops(model, x, target, perturbation=perturbation, region=region, score=score, seed=seed,
                         reference=reference, backend=backend, forward_batch=forward_batch)
    return pearson_rows(region_sums(relevance.detach(), region).to(drops.device), drops).float()
