"""SmoothGrad (Smilkov et al. 2017, eq. 3): the gradient averaged over noisy copies of the input.

    M̂_c(x) = 1/n Σ_{k=1..n} ∂f_c/∂x (x + ε_k),    ε_k ~ N(0, σ²),   σ = noise_level · (max(x) − min(x))

σ is set per sample from that sample's own range, as Smilkov et al. state the noise level (σ/(x_max − x_min)
in their experiments), so a heatmap depends neither on the other samples of its batch nor on the data's scaling.
With ``squared=True`` the squared gradients are averaged (SmoothGrad², 1/n Σ (∂f_c/∂x)², the variant ROAR found
best; Hooker et al. 2019). The noise of each sample is drawn from a generator keyed by (seed, sample content), and
the copies are summed in order: batched results equal per-sample results, whatever ``forward_batch``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn

from xaicore._rng import iter_per_sample_normal
from xaicore.engine import FORWARD_BATCH, check_forward_batch, copies_per_pass
from xaicore.errors import XaiCoreError
from xaicore.explain.gradient import target_gradient
from xaicore.explain.registry import register

_STREAM = 11


def noise_scale(x: torch.Tensor, noise_level: float) -> torch.Tensor:
    """σ per sample, (B, 1, ..., 1): ``noise_level`` times the sample's value range max(x) − min(x)."""
    flat = x.detach().flatten(1)
    rng = flat.amax(1) - flat.amin(1)
    return (float(noise_level) * rng).view(-1, *(1,) * (x.ndim - 1))


def smoothgrad_from_noise(model: nn.Module, x: torch.Tensor, target: torch.Tensor, noise: Iterable[torch.Tensor],
                          *, squared: bool) -> torch.Tensor:
    """Mean (squared) gradient over x + ε for the noise blocks ε of shape (B, k, *x.shape[1:]).

    Each block is one forward/backward pass of B·k inputs, laid out sample-major (sample i's copies are rows
    i·k ... i·k + k − 1, as Captum's ``NoiseTunnel`` lays them out).
    """
    b, rest = x.shape[0], x.shape[1:]
    total = torch.zeros_like(x)
    n = 0
    for eps in noise:
        k = eps.shape[1]
        noisy = (x.unsqueeze(1) + eps.to(x.dtype)).reshape(b * k, *rest)
        grad, _ = target_gradient(model, noisy, target.repeat_interleave(k))
        grad = grad.view(b, k, *rest)
        for j in range(k):  # copy by copy: the sum does not depend on how the copies are packed into passes
            g = grad[:, j]
            total += g * g if squared else g
        n += k
    if n == 0:
        raise XaiCoreError("smoothgrad: no noise samples")
    return total / n


@register("smoothgrad", family="function",
          reference="Smilkov et al. 2017, eq. (3): mean gradient over noisy inputs; squared: SmoothGrad² "
                    "(Hooker et al. 2019)")
def smoothgrad(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, n_samples: int = 50,
               noise_level: float = 0.15, squared: bool = False, seed: int = 0,
               forward_batch: int = FORWARD_BATCH) -> torch.Tensor:
    """SmoothGrad over ``n_samples`` copies with σ = ``noise_level`` · (max(x) − min(x)) per sample, in passes of at
    most ``forward_batch`` inputs (at least one copy of every sample per pass; 256 is CPU-cache sized, raise
    it on a GPU)."""
    if int(n_samples) < 1:
        raise XaiCoreError(f"smoothgrad: n_samples={n_samples} must be at least 1")
    if not float(noise_level) >= 0:
        raise XaiCoreError(f"smoothgrad: noise_level={noise_level} must be a number >= 0")
    check_forward_batch(forward_batch, "smoothgrad")
    sigma = noise_scale(x, noise_level).unsqueeze(1)  # (B, 1, 1, ...) against blocks (B, k, ...)
    per_pass = copies_per_pass(x, forward_batch, int(n_samples), max_bytes=None)  # no byte cap: same draws as before
    blocks = (eps.to(x.dtype) * sigma for eps in iter_per_sample_normal(x, int(seed), _STREAM, int(n_samples),
                                                                         per_pass))
    return smoothgrad_from_noise(model, x, target, blocks, squared=bool(squared))
