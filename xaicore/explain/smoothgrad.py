"""SmoothGrad (Smilkov et al. 2017, eq. 3): the gradient averaged over noisy copies of the input.

    M̂_c(x) = 1/n Σ_{k=1..n} ∂f_c/∂x (x + ε_k),    ε_k ~ N(0, σ²),   σ = noise_level · (max(x) − min(x))

σ is set per sample from that sample's own range, as Smilkov et al. state the noise level (σ/(x_max − x_min)
in their experiments), so a heatmap depends neither on the other samples of its batch nor on the data's scaling.
With ``squared=True`` the squared gradients are averaged (SmoothGrad², 1/n Σ (∂f_c/∂x)², the variant ROAR found
best; Hooker et al. 2019). The noise of each sample is drawn from a generator keyed by (seed, sample content), and
the copies are summed in order: batched results equal per-sample results, whatever ``forward_batch``.

VarGrad (Adebayo et al. 2018, "Local explanation methods for deep neural networks lack sensitivity to parameter
values"; the variant Hooker et al. 2019 found best with SmoothGrad² under ROAR) is the variance of the same
noisy gradients, 1/n Σ (∂f_c/∂x)² − (1/n Σ ∂f_c/∂x)², over the same noise (the population variance, as Captum's
``NoiseTunnel(nt_type="vargrad")``). It is 0 where the gradient does not depend on x, e.g. on a linear model.
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


def gradient_moments(model: nn.Module, x: torch.Tensor, target: torch.Tensor, noise: Iterable[torch.Tensor],
                     *, first: bool = True, second: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(1/n Σ g, 1/n Σ g²) of the gradients g at x + ε for the noise blocks ε of shape (B, k, *x.shape[1:]); a
    moment not asked for is None.

    Each block is one forward/backward pass of B·k inputs, laid out sample-major (sample i's copies are rows
    i·k ... i·k + k − 1, as Captum's ``NoiseTunnel`` lays them out).
    """
    b, rest = x.shape[0], x.shape[1:]
    total = torch.zeros_like(x) if first else None
    total_sq = torch.zeros_like(x) if second else None
    n = 0
    for eps in noise:
        k = eps.shape[1]
        noisy = (x.unsqueeze(1) + eps.to(x.dtype)).reshape(b * k, *rest)
        grad, _ = target_gradient(model, noisy, target.repeat_interleave(k))
        grad = grad.view(b, k, *rest)
        for j in range(k):  # copy by copy: the sum does not depend on how the copies are packed into passes
            g = grad[:, j]
            if total is not None:
                total += g
            if total_sq is not None:
                total_sq += g * g
        n += k
    if n == 0:
        raise XaiCoreError("smoothgrad: no noise samples")
    return (None if total is None else total / n), (None if total_sq is None else total_sq / n)


def smoothgrad_from_noise(model: nn.Module, x: torch.Tensor, target: torch.Tensor, noise: Iterable[torch.Tensor],
                          *, squared: bool) -> torch.Tensor:
    """Mean (squared) gradient over x + ε for the noise blocks ε of shape (B, k, *x.shape[1:])
    (:func:`gradient_moments`)."""
    mean, mean_sq = gradient_moments(model, x, target, noise, first=not squared, second=squared)
    out = mean_sq if squared else mean
    assert out is not None
    return out


def _noise_blocks(x: torch.Tensor, n_samples: int, noise_level: float, seed: int, forward_batch: int,
                  owner: str) -> Iterable[torch.Tensor]:
    if int(n_samples) < 1:
        raise XaiCoreError(f"{owner}: n_samples={n_samples} must be at least 1")
    if not float(noise_level) >= 0:
        raise XaiCoreError(f"{owner}: noise_level={noise_level} must be a number >= 0")
    check_forward_batch(forward_batch, owner)
    sigma = noise_scale(x, noise_level).unsqueeze(1)  # (B, 1, 1, ...) against blocks (B, k, ...)
    per_pass = copies_per_pass(x, forward_batch, int(n_samples), max_bytes=None)  # no byte cap: same draws as before
    return (eps.to(x.dtype) * sigma for eps in iter_per_sample_normal(x, int(seed), _STREAM, int(n_samples),
                                                                       per_pass))


@register("smoothgrad", family="function", at_embedding=True,
          paper="Smilkov et al. 2017, eq. (3): mean gradient over noisy inputs; squared: SmoothGrad² "
                    "(Hooker et al. 2019)")
def smoothgrad(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, n_samples: int = 50,
               noise_level: float = 0.15, squared: bool = False, seed: int = 0,
               forward_batch: int = FORWARD_BATCH) -> torch.Tensor:
    """SmoothGrad over ``n_samples`` copies with σ = ``noise_level`` · (max(x) − min(x)) per sample, in passes of at
    most ``forward_batch`` inputs (at least one copy of every sample per pass; 256 is CPU-cache sized, raise
    it on a GPU)."""
    blocks = _noise_blocks(x, n_samples, noise_level, seed, forward_batch, "smoothgrad")
    return smoothgrad_from_noise(model, x, target, blocks, squared=bool(squared))


@register("vargrad", family="function", at_embedding=True,
          paper="Adebayo et al. 2018 (VarGrad); Hooker et al. 2019: variance of the gradient over noisy inputs")
def vargrad(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, n_samples: int = 50,
            noise_level: float = 0.15, seed: int = 0, forward_batch: int = FORWARD_BATCH) -> torch.Tensor:
    """VarGrad: 1/n Σ (∂f_c/∂x)² − (1/n Σ ∂f_c/∂x)² over SmoothGrad's ``n_samples`` noisy copies (the same
    noise as ``smoothgrad`` with the same ``seed`` and ``noise_level``)."""
    blocks = _noise_blocks(x, n_samples, noise_level, seed, forward_batch, "vargrad")
    mean, mean_sq = gradient_moments(model, x, target, blocks, first=True, second=True)
    assert mean is not None and mean_sq is not None
    return mean_sq - mean * mean
