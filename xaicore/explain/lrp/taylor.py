"""First-order Taylor decomposition at a root point (Bach et al. 2015; survey §5.2, eq. 10).

R = ∇f(x₀) ⊙ (x − x₀) with f(x₀) ≈ 0 and x₀ near x (the survey's constraints 1 and 2). The root point is searched
per sample on a line from x (Montavon et al. 2017, x₀ = x + t·v with a search direction v):

* ``direction="gradient"``: x₀(t) = x − t · f(x) ∇f(x) / ‖∇f(x)‖² — t = 1 is the root of the linearisation at x,
  so a linear model's root is found in one step and ΣR = f(x) exactly;
* ``direction="input"``: x₀(t) = (1 − t) · x, t ∈ [0, 1] — towards the all-zero input.

t is bracketed (doubling, up to 2¹⁰, for ``gradient``) and then bisected ``n_steps`` times, batched over samples.
A sample without a sign change on its line keeps the point with the smallest |f| tried; :func:`taylor_root` returns
f(x₀) so that callers can see how close to a root it is.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from xaicore.engine import target_scores
from xaicore.errors import XaiCoreError
from xaicore.explain.gradient import target_gradient
from xaicore.explain.registry import register

_EXPANSIONS = 11


def _line(x: torch.Tensor, d: torch.Tensor, direction: str, t: torch.Tensor) -> torch.Tensor:
    tt = t.view(-1, *([1] * (x.ndim - 1)))
    return x - tt * d if direction == "gradient" else (1 - tt) * x


def taylor_root(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, direction: str = "gradient",
                n_steps: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """(x₀, f(x₀)): a root point of the target logit on the search line of each sample (survey §5.2)."""
    if direction not in ("gradient", "input"):
        raise XaiCoreError(f"taylor: unknown direction {direction!r}; expected 'gradient' or 'input'")
    if n_steps < 1:
        raise XaiCoreError(f"taylor: n_steps must be >= 1, got {n_steps}")
    x = x.detach()
    grad, fx = target_gradient(model, x, target)
    if direction == "gradient":
        norm2 = grad.flatten(1).pow(2).sum(1)
        safe = torch.where(norm2 > 0, norm2, torch.ones_like(norm2))
        d = grad * (torch.where(norm2 > 0, fx / safe, torch.zeros_like(fx))).view(-1, *([1] * (x.ndim - 1)))
        tries = [2.0 ** k for k in range(_EXPANSIONS)]
    else:
        d = x
        tries = [1.0]

    def f(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return target_scores(model, _line(x, d, direction, t), target)

    b = x.shape[0]
    lo = torch.zeros(b, dtype=x.dtype, device=x.device)
    hi = torch.full_like(lo, float("nan"))  # first t with a sign change (or an exact root)
    best_t, best_f = lo.clone(), fx.abs()
    for t_try in tries:
        t = torch.full_like(lo, t_try)
        ft = f(t)
        open_ = hi.isnan()
        crossed = open_ & ((ft == 0) | (torch.sign(ft) != torch.sign(fx)))
        hi = torch.where(crossed, t, hi)
        lo = torch.where(open_ & ~crossed, t, lo)
        better = open_ & (ft.abs() < best_f)
        best_t, best_f = torch.where(better, t, best_t), torch.where(better, ft.abs(), best_f)
    bracketed = ~hi.isnan() & (fx != 0)
    hi = torch.where(bracketed, hi, lo)
    for _ in range(int(n_steps)):
        mid = 0.5 * (lo + hi)
        fm = f(mid)
        same = torch.sign(fm) == torch.sign(fx)
        lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
    t0 = torch.where(bracketed, 0.5 * (lo + hi), torch.where(fx == 0, torch.zeros_like(lo), best_t))
    x0 = _line(x, d, direction, t0)
    return x0, f(t0)


@register("taylor", family="attribution", conservative=False,
          paper="Bach et al. 2015 Taylor decomposition (survey eq. 10): grad f(x0) * (x - x0), f(x0) ~ 0")
def taylor(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, direction: str = "gradient",
           n_steps: int = 50) -> torch.Tensor:
    x0, _ = taylor_root(model, x, target, direction=direction, n_steps=n_steps)
    grad, _ = target_gradient(model, x0, target)
    return grad * (x - x0)
