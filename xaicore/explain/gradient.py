"""Gradient-based methods that need nothing but autograd (survey §3.1, §5).

* ``gradient`` — the sensitivity ∂f_c/∂x (Simonyan et al. 2014), signed.
* ``gradient_x_input`` — x ⊙ ∂f_c/∂x (Shrikumar et al. 2016).
* ``integrated_gradients`` — (x − x̄) ⊙ ∫₀¹ ∂f_c(x̄ + α(x − x̄))/∂x dα (Sundararajan et al. 2017, eq. 1),
  a quadrature over ``n_steps`` points, run in forward passes of at most ``forward_batch`` inputs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from xaicore.engine import FORWARD_BATCH, batch_slices, check_forward_batch, copies_per_pass, target_scores
from xaicore.errors import XaiCoreError
from xaicore.explain.registry import register


def target_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂f_target/∂x, f_target(x)) for a batch; parameters' ``.grad`` are not touched."""
    x = x.detach().requires_grad_(True)
    score = target_scores(model, x, target)
    (grad,) = torch.autograd.grad(score.sum(), x)
    return grad, score.detach()


@register("gradient", family="function", at_embedding=True,
          paper="Simonyan et al. 2014, eq. (2): the sensitivity df/dx")
def gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return target_gradient(model, x, target)[0]


@register("gradient_x_input", family="attribution", at_embedding=True, paper="Shrikumar et al. 2016: x * df/dx")
def gradient_x_input(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return x * target_gradient(model, x, target)[0]


def quadrature(n_steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Points α ∈ [0, 1] and weights of a quadrature of ∫₀¹ g(α) dα with ``n_steps`` points (float64)."""
    if n_steps < 1 or (rule == "riemann_trapezoid" and n_steps < 2):
        raise XaiCoreError(f"integrated_gradients: n_steps={n_steps} is too small for {rule}")
    if rule == "riemann_trapezoid":
        alphas = np.linspace(0.0, 1.0, n_steps)
        weights = np.full(n_steps, 1.0 / (n_steps - 1))
        weights[[0, -1]] *= 0.5
    elif rule == "riemann_middle":
        alphas = (np.arange(n_steps) + 0.5) / n_steps
        weights = np.full(n_steps, 1.0 / n_steps)
    elif rule == "riemann_left":
        alphas = np.arange(n_steps) / n_steps
        weights = np.full(n_steps, 1.0 / n_steps)
    elif rule == "riemann_right":
        alphas = np.arange(1, n_steps + 1) / n_steps
        weights = np.full(n_steps, 1.0 / n_steps)
    elif rule == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n_steps)
        alphas, weights = 0.5 * (nodes + 1.0), 0.5 * w
    else:
        raise XaiCoreError(f"integrated_gradients: unknown rule {rule!r}; expected riemann_trapezoid, "
                           "riemann_middle, riemann_left, riemann_right or gausslegendre")
    return alphas, weights


def resolve_baseline(x: torch.Tensor, baseline: float | torch.Tensor | None) -> torch.Tensor:
    """``None``/number → a constant image; a tensor of ``x``'s shape (or one sample's) is broadcast."""
    if baseline is None:
        baseline = 0.0
    if not isinstance(baseline, torch.Tensor):
        return torch.full_like(x, float(baseline))
    b = baseline.to(x.device, x.dtype)
    if b.shape == x.shape[1:]:
        b = b.expand_as(x)
    if b.shape != x.shape:
        raise XaiCoreError(f"baseline shape {tuple(baseline.shape)} matches neither x {tuple(x.shape)} "
                           "nor one sample")
    return b


@register("integrated_gradients", family="attribution", conservative=True, at_embedding=True,
          paper="Sundararajan et al. 2017, eq. (1); Riemann/Gauss-Legendre quadrature")
def integrated_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, n_steps: int = 64,
                         baseline: float | torch.Tensor | None = None, rule: str = "riemann_trapezoid",
                         forward_batch: int = FORWARD_BATCH) -> torch.Tensor:
    """IG with the path points of several steps stacked into one forward/backward of ≤ ``forward_batch`` inputs
    (at least one step of every sample per pass).

    The default 256 is CPU-cache sized: on CPU, passes of 1,024+ digits cost twice as much per input (measured by
    benchmarks/explain.py); on a GPU, raise it. The result does not depend on it (steps are summed in order)."""
    check_forward_batch(forward_batch, "integrated_gradients")
    alphas, weights = quadrature(int(n_steps), rule)
    base = resolve_baseline(x, baseline)
    delta = x - base
    b = x.shape[0]
    per_pass = copies_per_pass(x, forward_batch, len(alphas), max_bytes=None)  # no byte cap: same passes as before
    total = torch.zeros_like(x)
    view = (-1, 1) + (1,) * (x.ndim - 1)
    for s in batch_slices(len(alphas), per_pass):
        a = torch.as_tensor(alphas[s], dtype=x.dtype, device=x.device).view(view)
        w = torch.as_tensor(weights[s], dtype=x.dtype, device=x.device).view(view)
        k = a.shape[0]
        path = (base.unsqueeze(0) + a * delta.unsqueeze(0)).reshape(k * b, *x.shape[1:])
        grad, _ = target_gradient(model, path, target.repeat(k))
        grad = grad.view(k, b, *x.shape[1:])
        for j in range(k):  # step by step: the sum does not depend on how the steps are packed into passes
            total += w[j] * grad[j]
    return delta * total
