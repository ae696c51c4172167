"""Tolerances derived from the floating-point error of what a test compares (docs/reproducibility.md).

Two computations of a network's output that differ in batch composition or threads differ by the rounding of
the output's own terms: a logit z = Σ_j w_j a_j + b computed in float32 errs by about eps·Σ_j |w_j a_j| + |b| (the
magnitude of its terms, not of z, which may be far smaller after cancellation), and earlier layers add theirs
in proportion. A heatmap that is a difference of logits (occlusion, PDA, AOPC curves) errs as its logits do,
not in proportion to its own magnitude.
"""

from __future__ import annotations

import torch
import torch.nn as nn

#: ulps of the logits' term magnitude two float32 evaluations of a zoo network may differ by (a few per layer:
#: measured ≤ 3 on an AVX-512 host and under the last-bit test mode, XAICORE_LAST_BIT_NOISE=1)
LOGIT_ULPS = 16


def logit_magnitude(model: nn.Module, x: torch.Tensor) -> float:
    """max over the batch and the classes of Σ_j |w_ij a_j| + |b_i| at the model's last ``nn.Linear``: the
    magnitude of the terms each logit is rounded from."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    seen: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    a = seen[0].abs()
    terms = a @ last.weight.detach().abs().T
    if last.bias is not None:
        terms = terms + last.bias.detach().abs()
    return float(terms.max())


def logit_atol(model: nn.Module, x: torch.Tensor, ulps: int = LOGIT_ULPS) -> float:
    """The absolute tolerance of a comparison of quantities made of ``model``'s logits on inputs like ``x``."""
    return ulps * torch.finfo(x.dtype).eps * logit_magnitude(model, x)


#: ulps of a heatmap's largest value that two evaluations of a gradient-based heatmap on other batches may
#: differ by: each layer's forward and backward products round at eps of their own terms (measured ≤ 8 under the
#: last-bit test mode on the zoo's CNN; IG and SmoothGrad average several such passes)
HEATMAP_ULPS = 64


def assert_equal_to_rounding(ours: torch.Tensor, ref: torch.Tensor, ulps: int = HEATMAP_ULPS) -> None:
    """``ours`` equals ``ref`` up to ``ulps`` of ``ref``'s dtype at ``ref``'s largest magnitude: for two
    computations whose batches differ (the contract promises no more, docs/reproducibility.md)."""
    scale = float(ref.abs().max())
    torch.testing.assert_close(ours, ref, rtol=0.0, atol=ulps * torch.finfo(ref.dtype).eps * scale)
