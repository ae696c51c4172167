"""Area Over the Perturbation Curve, MoRF and LeRF (Samek et al. 2017; survey §4.5.1, eqs. 2–5).

Regions of ``region``×``region`` pixels are ranked by summed relevance. Step k disables one more region:
x⁽ᵏ⁾ = g(x⁽ᵏ⁻¹⁾, r_k) for MoRF, r_{L+1−k} for LeRF. The curve holds f(x⁽ᵏ⁾) for k = 0..L and
AOPC = 1/(L+1) Σ_k f(x⁽⁰⁾) − f(x⁽ᵏ⁾) per sample (the data-set figure is its mean).

Each step changes one region, so the perturbed batch is updated in place (a numba or torch kernel) and fed
to the model as it is; when the batch is small, several steps are packed into one forward pass as lanes
that each move on by several regions per pass (no whole-image copies). The recursive ``blur`` is run once,
all L steps in order, before the passes: its last image x⁽ᴸ⁾ holds every region's step-k value (a region is
written at its step and never again), so each step copies its region from there.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from xaicore.errors import XaiCoreError
from xaicore.explain.registry import check_inputs
from xaicore.kernels import get_backend
from xaicore.metrics.perturbation import copies_per_pass, make_disabler

ORDERS = ("morf", "lerf")
SCORES = ("logit", "probability")


@dataclasses.dataclass(frozen=True)
class AOPCResult:
    """``curve``: (B, L+1) model score f(x⁽ᵏ⁾); ``aopc``: (B,) mean drop f(x⁽⁰⁾) − f(x⁽ᵏ⁾) over k = 0..L."""

    curve: torch.Tensor
    aopc: torch.Tensor
    order: str
    #: MoRF: a higher AOPC is better (the heatmap found what matters); LeRF: lower is better.
    higher_is_better: bool

    @property
    def drop(self) -> torch.Tensor:
        return self.curve[:, :1] - self.curve


def _score(model: nn.Module, x: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    out = model(x)
    if kind == "probability":
        out = out.softmax(1)
    return out.gather(1, target[:, None])[:, 0]


def check_relevance(x: torch.Tensor, relevance: torch.Tensor) -> None:
    if not isinstance(relevance, torch.Tensor) or relevance.shape != x.shape:
        raise XaiCoreError(f"relevance shape {tuple(getattr(relevance, 'shape', ()))} differs from x "
                           f"{tuple(x.shape)}")
    if not torch.isfinite(relevance).all():
        raise XaiCoreError("relevance holds NaN or inf values; fix the heatmaps before scoring them")


@torch.no_grad()
def aopc(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
         order: str = "morf", perturbation: str = "uniform", region: int = 4, score: str = "logit",
         seed: int = 0, reference: torch.Tensor | None = None, backend: str = "auto",
         forward_batch: int = 256) -> AOPCResult:
    """AOPC of ``relevance`` for ``model`` on the image batch ``x`` (B, C, H, W); see the module docstring.

    ``perturbation``: ``uniform``, ``dirichlet``, ``mean`` (of ``reference`` samples; without it, of the batch)
    or ``blur`` (exact recursive Gaussian blur), see :mod:`xaicore.metrics.perturbation`.
    ``score``: ``logit`` (the target logit) or ``probability`` (its softmax). ``forward_batch``: up to
    this many perturbed inputs go through the model at once (several steps are packed when B is smaller; on
    the CPU no more than ``PACK_BYTES`` of input, see :func:`~xaicore.metrics.perturbation.copies_per_pass`).
    """
    target = check_inputs(x, target)
    if x.ndim != 4:
        raise XaiCoreError(f"aopc perturbs image regions: x must be (B, C, H, W), got {tuple(x.shape)}")
    check_relevance(x, relevance)
    if order not in ORDERS:
        raise XaiCoreError(f"unknown order {order!r}; expected morf or lerf")
    if score not in SCORES:
        raise XaiCoreError(f"unknown score {score!r}; expected logit or probability")
    kern = get_backend(backend, x.device)
    b = x.shape[0]
    disable = make_disabler(x, perturbation, kern, region, seed=seed, reference=reference)
    n_regions = disable.grid.shape[0]
    ranking = kern.region_order(relevance, region).to(x.device)
    if order == "lerf":
        ranking = ranking.flip(1)
    if disable.replacement is None:  # blur: the recursion run once, all L steps in order
        # x^(L) holds each region's step-k value: a region is written at its step and never again, so from
        # here on every step is a copy of its region from x^(L), as for the replacement perturbations
        final = x.detach().clone()
        disable(final, ranking)
        disable = dataclasses.replace(disable, replacement=final)
    # `lanes` copies of the batch go through the model at once, lane j holding step k + j; each round moves
    # every lane on by `lanes` steps, which writes lanes² regions per sample instead of copying whole images
    lanes = copies_per_pass(x, forward_batch, n_regions + 1)
    buf = x.detach().repeat(lanes, 1, 1, 1)  # a copy even for one lane: x is never written
    for j in range(1, lanes):  # lane j starts at step j: ranked region j is disabled in lanes j, j+1, ...
        disable(buf[j * b:], ranking[:, j - 1].repeat(lanes - j))
    tgt = target.repeat(lanes)
    lane = torch.arange(lanes, device=x.device)
    shift = lane[:, None] + lane[None, :]  # (lane j, q): lane j disables ranked region k + j + q next
    flags = [(m, m.training) for m in model.modules()]  # per module: a model may mix train and eval parts
    model.eval()
    try:
        curve = torch.empty(b, n_regions + 1, dtype=torch.float32, device=x.device)
        for k in range(0, n_regions + 1, lanes):
            n = min(lanes, n_regions + 1 - k)
            curve[:, k:k + n] = _score(model, buf[:n * b], tgt[:n * b], score).view(n, b).T
            n_next = min(lanes, n_regions + 1 - k - lanes)
            if n_next > 0:
                regions = ranking[:, k + shift[:n_next]].transpose(0, 1).reshape(n_next * b, lanes)
                disable(buf[:n_next * b], regions)
    finally:
        for m, flag in flags:
            m.training = flag
    curve = curve.float()
    return AOPCResult(curve, (curve[:, :1] - curve).mean(1), order, order == "morf")
