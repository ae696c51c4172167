"""DeepLIFT with the Rescale rule (Shrikumar et al. 2017) as a modified gradient.

DeepLIFT explains the difference from a reference, f(x) − f(x̄), by contributions that satisfy summation-to-delta
(eq. 1): Σ_i C_{Δx_i Δt} = Δt. With multipliers m_{ΔxΔt} = C_{ΔxΔt} / Δx (eq. 2) and their chain rule (eq. 3),
contributions are a backward pass: linear maps (Linear, Conv, BatchNorm in eval mode, pooling by averages,
additions, ``torch.cat``, views) keep their gradient (the Linear rule, §3.5.1), and a nonlinearity y = σ(x) gets
the multiplier m = Δy / Δx = (σ(x) − σ(x̄)) / (x − x̄) (the Rescale rule, §3.5.2). The result is
(x − x̄) ⊙ m_{Δx Δf_c}.

As Captum does (``captum.attr.DeepLift``), the input and its reference run as one batch [x; x̄] of 2B, so every
nonlinearity sees both of its inputs; a :class:`torch.overrides.TorchFunctionMode` swaps the backward of

* ReLU (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu`` and in-place forms, which then return a new
  tensor), LeakyReLU, ELU, Sigmoid, Tanh, Softplus, GELU and SiLU for the Rescale multiplier; where |Δx| < ``eps``
  the multiplier is the ordinary derivative (its limit);
* max-pooling (``F.max_pool1d/2d/3d``, ``F.adaptive_max_pool1d/2d/3d``; ``nn.MaxPool*`` call them) for Captum's
  rule: a window's Δy goes to the input that wins at x when y rose (y ≥ ȳ), to the one that wins at x̄ when it
  fell, and is divided by that input's Δx; there |Δx| ≥ |Δy|, so the multiplier lies in [0, 1]. Summation-to-delta
  holds through it exactly.

Only the input half carries multipliers (the reference half supplies x̄'s activations and gets no gradient), so
every rule uses the one chain of multipliers of eq. 3. Where this differs from ``captum.attr.DeepLift`` (0.9):

* Captum catches each module's upper gradient with a tensor hook on its output, which runs *before* the next
  hooked module's rewrite of the same tensor: when two hooked modules follow each other (ReLU → MaxPool, MaxPool →
  ReLU) the lower one works with the upper one's ordinary gradient, so the upper rule is lost — on
  conv → ReLU → MaxPool, Captum's max-pooling is the ordinary (winner-take-all) gradient and its own convergence
  delta is not 0. Elsewhere (rules separated by a Linear/Conv/BatchNorm/AvgPool) the two agree;
* Captum unpools with ``max_unpool``, which keeps one share where an input wins two overlapping windows
  (stride < kernel), and its max-pool fallback (|Δx| < eps) takes the first sample's gradient (captum#1276);
  here shares add up and the fallback is the sample's own max-pool gradient;
* Captum passes the reference half's gradient into the max-pool rule for windows whose output fell; here it is the
  input half's (they differ only after a fallback to a derivative).

Nothing is attached to the model; the mode ends with the forward pass. Limitations: other nonlinear operations
(``clamp``, ``hardtanh``, products of activations, a softmax inside the model) keep their ordinary gradient, so
summation-to-delta no longer holds exactly through them; the model must treat the samples of a batch independently
(eval mode) with the batch as the first dimension of every nonlinearity's input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from xaicore.engine import target_scores
from xaicore.errors import XaiCoreError
from xaicore.explain.gradient import resolve_baseline
from xaicore.explain.registry import register

Unary = Callable[[torch.Tensor], torch.Tensor]
Pool = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

_RELUS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_})
#: elementwise nonlinearities and their out-of-place form (positional arguments after the input are kept)
_ELEMENTWISE: dict[Any, Callable[..., torch.Tensor]] = {
    F.leaky_relu: F.leaky_relu, F.leaky_relu_: F.leaky_relu, F.elu: F.elu, F.elu_: F.elu,
    torch.sigmoid: torch.sigmoid, torch.Tensor.sigmoid: torch.sigmoid, torch.tanh: torch.tanh,
    torch.Tensor.tanh: torch.tanh, F.softplus: F.softplus, F.gelu: F.gelu, F.silu: F.silu,
}
#: max-pooling functions and their number of spatial dimensions
_MAX_POOLS: dict[Any, int] = {
    F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3,
    F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3,
}


def _bind(func: Callable[..., Any], rest: tuple, kwargs: dict) -> Callable[[torch.Tensor], Any]:
    """``t ↦ func(t, *rest, **kwargs)``."""
    return lambda t: func(t, *rest, **kwargs)


def _derivative(fn: Unary, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The ordinary vector-Jacobian product of ``fn`` at ``x``."""
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(xx), xx, grad)
    return g


class _Rescale(torch.autograd.Function):
    """Forward: σ on [x; x̄]. Backward: the Rescale multiplier Δy/Δx (Shrikumar et al. 2017, §3.5.2) times the
    input half's upper multiplier; the ordinary derivative at x where |Δx| < eps (as Captum). The reference half
    gets no gradient: it only supplies x̄'s activations."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Unary, eps: float) -> torch.Tensor:
        y = fn(x)
        ctx.save_for_backward(x, y)
        ctx.fn, ctx.eps = fn, eps
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        x, y = ctx.saved_tensors
        n = x.shape[0] // 2
        g = grad[:n]
        dx, dy = x[:n] - x[n:], y[:n] - y[n:]
        small = dx.abs() < ctx.eps
        m = dy / torch.where(small, torch.ones_like(dx), dx)
        gx = torch.where(small, _derivative(ctx.fn, x[:n], g), g * m)
        return torch.cat([gx, torch.zeros_like(gx)]), None, None


def _unpool(src: torch.Tensor, idx: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Scatter ``src`` (N, C, *out) to the flat input positions ``idx`` of ``like`` (N, C, *in), adding up."""
    out = like.new_zeros(like.shape[:2] + (like[0, 0].numel(),))
    return out.scatter_add_(2, idx.flatten(2), src.flatten(2)).view_as(like)


class _MaxPoolRescale(torch.autograd.Function):
    """Forward: max-pooling of [x; x̄]. Backward: each window's g·Δy to the winner at x (Δy ≥ 0) or at x̄ (Δy < 0),
    divided by that input's Δx (Captum's DeepLift max-pool rule, with the input half's g for both cases)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, pool: Pool, eps: float) -> torch.Tensor:
        y, idx = pool(x)
        ctx.save_for_backward(x, y, idx)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        x, y, idx = ctx.saved_tensors
        n = x.shape[0] // 2
        xa, ya, yb, ia, ib, g = x[:n], y[:n], y[n:], idx[:n], idx[n:], grad[:n]
        top = torch.maximum(ya, yb)
        moved = _unpool(g * (top - yb), ia, xa) + _unpool(g * (ya - top), ib, xa)  # g·Δy to the winners
        dx = xa - x[n:]
        small = dx.abs() < ctx.eps
        gx = torch.where(small, _unpool(g, ia, xa), moved / torch.where(small, torch.ones_like(dx), dx))
        return torch.cat([gx, torch.zeros_like(gx)]), None, None


class RescaleMode(TorchFunctionMode):
    """Within ``with``, nonlinearities called on a stacked batch [x; x̄] backpropagate DeepLIFT multipliers."""

    def __init__(self, eps: float, batch: int) -> None:
        super().__init__()
        self.eps = eps
        self.batch = batch  # 2B: tensors of another first dimension (e.g. parameters) keep their ordinary gradient

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        t = args[0] if args else None
        if not (isinstance(t, torch.Tensor) and t.ndim > 0 and t.shape[0] == self.batch):
            return func(*args, **kwargs)
        if func in _RELUS:
            return _Rescale.apply(args[0], torch.relu, self.eps)
        if func in _ELEMENTWISE:
            kw = {k: v for k, v in kwargs.items() if k != "inplace"}
            return _Rescale.apply(args[0], _bind(_ELEMENTWISE[func], args[1:], kw), self.eps)
        if func in _MAX_POOLS and not kwargs.get("return_indices", False) and t.ndim == _MAX_POOLS[func] + 2:
            return _MaxPoolRescale.apply(args[0], _bind(func, args[1:], {**kwargs, "return_indices": True}), self.eps)
        return func(*args, **kwargs)


@register("deeplift", family="attribution", conservative=True,
          paper="Shrikumar et al. 2017, DeepLIFT Rescale rule (sec. 3.5.2, m = dy/dx) with the multipliers' chain "
                    "rule (eq. 3): (x - x_ref) * m, summation-to-delta (eq. 1) sum = f(x) - f(x_ref); "
                    "max-pooling as captum.attr.DeepLift")
def deeplift(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *,
             baseline: float | torch.Tensor | None = 0.0, eps: float = 1e-10) -> torch.Tensor:
    """DeepLIFT-Rescale relevance of ``x`` against the reference ``baseline`` (a number, a tensor of x's or one
    sample's shape; 0 or None: zeros): Σ_i R_i = f_c(x) − f_c(x̄) for ReLU networks with pooling."""
    if eps < 0:
        raise XaiCoreError(f"deeplift: eps must be >= 0, got {eps}")
    ref = resolve_baseline(x, baseline)
    n = x.shape[0]
    both = torch.cat([x, ref]).detach().requires_grad_(True)
    with RescaleMode(float(eps), 2 * n):
        score = target_scores(model, both, target.repeat(2))
    (grad,) = torch.autograd.grad(score[:n].sum(), both)
    return (x - ref) * grad[:n]
