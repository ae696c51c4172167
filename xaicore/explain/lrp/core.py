"""The one engine behind every LRP/DTD rule: layer-wise relevance propagation as a modified gradient.

Invariant. The backward pass carries ``G = R / a`` at every tensor ``a`` of the forward pass (relevance per unit
of activation), so ``R = a ⊙ G``. The output starts at ``G = 1``, i.e. ``R = f(x)`` (survey §5.1, constraint 3),
and the input's relevance is ``x ⊙ G`` at the end. Under this invariant the plain gradient already *is* an LRP
rule for every operation without parameters of its own:

* ReLU (module or ``torch.relu``/``F.relu``; also LeakyReLU, any σ with σ(z) = σ'(z)·z): pass-through;
* MaxPool: winner-take-all; AvgPool/AdaptiveAvgPool, ``a + b`` and ``torch.cat``: the z-rule (eq. 9), i.e. the
  proportional split R_a = a / (a + b) · R — exactly conservative; Flatten, Dropout (eval), views: identity;
* Linear/Conv under LRP-0 (eq. 9, with bias) — hence LRP-0 equals Gradient×Input on a ReLU network.

A :class:`Rule` changes only the backward of a Linear/Conv layer with output ``y = W x + b``: it names a modified
pre-activation ``z' = Σ_k c_k · layer(m_k(x); ρ_k(W), ρ_k(b))`` per group (Montavon et al. 2019, eq. 4's ρ and
the stabilised denominator) and the upper relevance is divided by it: ``G_x = Σ_g c_g ∂z'_g/∂x · (y ⊙ G_y) /
stab(z'_g)``. Rules whose input modifier is not ``x`` itself (w², flat, z^B) return the relevance ``R_x`` instead
of ``G_x``; they apply to the input layer only, which the engine checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from xaicore.engine import hooks
from xaicore.errors import NotApplicable, XaiCoreError

Modifier = Callable[[torch.Tensor], torch.Tensor]
LINEAR_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: parameter-free layers whose gradient is their LRP rule (see above); any other leaf module is refused, since the
#: gradient of e.g. GELU, SiLU, Sigmoid or LayerNorm is not a relevance rule and would give a wrong heatmap
PASS_TYPES = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d,
              nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
              nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten, nn.Unflatten,
              nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)


@dataclasses.dataclass(frozen=True)
class Term:
    """One summand ``coefficient · layer(input_mod(x); param_mod(W), param_mod(b) if bias)`` of z'."""

    input_mod: Modifier
    param_mod: Modifier
    bias: bool = True
    coefficient: float = 1.0


@dataclasses.dataclass(frozen=True)
class Group:
    """A modified pre-activation z' = Σ terms; its share of ``R_j`` is ``coefficient`` where ``when`` holds."""

    terms: tuple[Term, ...]
    coefficient: float = 1.0
    when: str = "all"  # all | positive | negative: which outputs y_j this group explains (generalised γ)
    sign: int = 0  # +1 / −1 when z' ≥ 0 / ≤ 0 by construction (a cheaper stabiliser), 0 when unknown


@dataclasses.dataclass(frozen=True)
class Rule:
    """A relevance rule for Linear/Conv layers: groups of modified pre-activations and a stabiliser ε.

    ``stab(z) = z + ε·sign(z)`` with sign(0) = +1 (Bach et al. 2015); ε = 0 divides exactly (0/0 := 0).
    """

    name: str
    groups: tuple[Group, ...]
    stabilizer: float = 0.0
    returns_relevance: bool = False  # input-layer rules (w², flat, z^B): the backward yields R_x, not R_x / x
    box: tuple[Any, Any] | None = None  # z^B's (low, high) input box, kept to re-express it for a normalized input


# --- modifiers: plain module-level functions (picklable, unlike lambdas) ------------------------------------

def identity(t: torch.Tensor) -> torch.Tensor:
    return t


def positive(t: torch.Tensor) -> torch.Tensor:
    return t.clamp(min=0)


def negative(t: torch.Tensor) -> torch.Tensor:
    return t.clamp(max=0)


def square(t: torch.Tensor) -> torch.Tensor:
    return t * t


def ones(t: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(t)


def constant(t: torch.Tensor, value: float | torch.Tensor) -> torch.Tensor:
    """``value`` broadcast to ``t``'s shape (a bound of z^B: a number, or a tensor of one sample's shape, also
    when the layer sees the sample flattened)."""
    v = torch.as_tensor(value, dtype=t.dtype, device=t.device)
    if v.ndim and v.shape != t.shape[1:] and v.numel() == t[0].numel():
        v = v.reshape(t.shape[1:])
    return v.expand_as(t)


def gamma_mod(t: torch.Tensor, gamma: float, sign: int) -> torch.Tensor:
    """ρ(w) = w + γ·w⁺ (sign +1) or w + γ·w⁻ (sign −1) (Montavon et al. 2019, LRP-γ)."""
    return t + gamma * (t.clamp(min=0) if sign > 0 else t.clamp(max=0))


# --- autograd plumbing -------------------------------------------------------------------------------------

class _Redirect(torch.autograd.Function):
    """Forward: the layer's true output (a copy). Backward: the upper gradient times ``s_g``, into each ``z'_g``."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, *pairs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(*pairs[1::2])
        return value.clone()  # a clone: in-place ops downstream (``out += identity``) must not hit a view

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        out: list[torch.Tensor | None] = [None]
        for s in ctx.saved_tensors:
            out += [grad * s, None]
        return tuple(out)


class _Lift(torch.autograd.Function):
    """Value ``m`` (a modified input, e.g. ones or a bound), gradient ``grad ⊙ m`` into ``x``: Σ_j m_i w_ij …"""

    @staticmethod
    def forward(ctx, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(m)
        return m.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (m,) = ctx.saved_tensors
        return grad * m, None


class _OnesInput(torch.autograd.Function):
    """A term ``layer(1; W')`` of an input-independent rule (w², flat): a graph node whose backward is W'ᵀ·grad
    into x (the transposed layer, no forward convolution over the batch)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, module: nn.Module,  # type: ignore[override]
                out_shape: tuple[int, ...]) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.module, ctx.in_shape = module, x.shape
        return x.new_zeros(()).expand(out_shape)  # the value is never read: _Redirect uses only the graph

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        (w,) = ctx.saved_tensors
        m = ctx.module
        if isinstance(m, nn.Linear):
            return grad @ w, None, None, None
        fn = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}[w.ndim - 2]
        return fn(ctx.in_shape, w, grad.contiguous(), m.stride, m.padding, m.dilation, m.groups), None, None, None


def _scale_grad(s: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return grad * s


def layer_forward(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``module``'s affine map with the given parameters (Linear, Conv1d/2d/3d)."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    return module._conv_forward(x, weight, bias)  # type: ignore[operator]


def _ratio(y: torch.Tensor, z: torch.Tensor, eps: float, sign: int = 0) -> torch.Tensor:
    """y / stab(z) with stab(z) = z + ε·sign(z), sign(0) = +1; with ε = 0, 0/0 := 0. ``sign`` = ±1 promises z's sign."""
    if eps > 0:
        if z is y:
            a = y.abs()
            return a.div_(a + eps)  # = y / (y + ε·sign(y)): three cheap ops for the ε-rule
        if sign:
            return y / (z + sign * eps)  # a same-signed z' (z⁺, z⁻, w², flat): where z' = 0 its messages are 0
        return y / (z + torch.where(z >= 0, eps, -eps).to(z.dtype))
    den = z
    return torch.where(den == 0, torch.zeros_like(y), y / torch.where(den == 0, torch.ones_like(den), den))


class RuleHook:
    """Forward hook that swaps the backward of one Linear/Conv module for its rule's (a callable, picklable)."""

    def __init__(self, rule: Rule, input_ref: list[torch.Tensor]) -> None:
        self.rule = rule
        self.input_ref = input_ref  # the model input of the current pass (for the input-layer check)

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor | None:
        x = inputs[0]
        rule = self.rule
        if rule.returns_relevance:
            self._check_input_layer(module, x)
        if not y.requires_grad:
            return None
        g0 = rule.groups[0]
        if len(rule.groups) == 1 and len(g0.terms) == 1 and g0.when == "all" and g0.coefficient == 1.0 \
                and g0.terms[0] == Term(identity, identity) and not rule.returns_relevance:
            if rule.stabilizer == 0:
                return None  # LRP-0 is the gradient itself
            yd = y.detach()
            y.register_hook(functools.partial(_scale_grad, _ratio(yd, yd, rule.stabilizer)))
            return None
        lo, hi = torch.aminmax(x.detach())
        nonneg, nonpos = bool(lo >= 0), bool(hi <= 0)
        pairs: list[torch.Tensor] = []
        yd = y.detach()
        for group in rule.groups:
            if self._input_independent(module, group):
                one = torch.ones((1, *x.shape[1:]), dtype=x.dtype, device=x.device)
                w = group.terms[0].param_mod(module.weight).detach()
                s = _ratio(yd, layer_forward(module, one, w, None), rule.stabilizer, group.sign)
                pairs += [_OnesInput.apply(x, w, module, tuple(y.shape)), s]
                continue
            z = None
            for t in group.terms:
                mod = t.input_mod
                if (mod is negative and nonneg) or (mod is positive and nonpos):
                    continue  # an all-zero input: its term is exactly 0
                if (mod is positive and nonneg) or (mod is negative and nonpos):
                    mod = identity  # clamping would change nothing (nor its gradient)
                inp = mod(x)
                if rule.returns_relevance:
                    inp = _Lift.apply(x, inp.detach())
                w = t.param_mod(module.weight)
                b = t.param_mod(module.bias) if (t.bias and module.bias is not None) else None
                term = layer_forward(module, inp, w.detach(), None if b is None else b.detach())
                term = term if t.coefficient == 1.0 else t.coefficient * term
                z = term if z is None else z + term
            if z is None:
                continue
            s = _ratio(yd, z.detach(), rule.stabilizer, group.sign)
            if group.coefficient != 1.0:
                s = s * group.coefficient
            if group.when != "all":
                s = s * ((yd > 0) if group.when == "positive" else (yd < 0)).to(s.dtype)
            pairs += [z, s]
        return _Redirect.apply(yd, *pairs)

    def _input_independent(self, module: nn.Module, group: Group) -> bool:
        """w² and flat: z' = layer(1; W') is the same for every sample; computed once, transposed in backward."""
        t = group.terms[0]
        return (self.rule.returns_relevance and len(group.terms) == 1 and t.input_mod is ones and not t.bias
                and t.coefficient == 1.0 and (isinstance(module, nn.Linear) or module.padding_mode == "zeros"))

    def _check_input_layer(self, module: nn.Module, x: torch.Tensor) -> None:
        (ref,) = self.input_ref
        if x.untyped_storage().data_ptr() != ref.untyped_storage().data_ptr() or x.numel() != ref.numel():
            raise XaiCoreError(f"rule {self.rule.name!r} applies to the input layer only (it decomposes onto the "
                               f"input domain, Montavon et al. 2017); {type(module).__name__} is fed by another layer")


#: maps each module to its rule (or None); ``first`` is True for the first Linear/Conv in ``model.modules()``
RuleMap = Callable[[str, nn.Module, bool], Rule | None]


def assign_rules(model: nn.Module, rule_map: RuleMap) -> dict[nn.Module, Rule]:
    """The rule of every Linear/Conv layer. :class:`NotApplicable`, naming the module and its type, for a layer no
    rule covers: one with parameters other than Linear/Conv/BatchNorm, or a parameter-free leaf module outside
    :data:`PASS_TYPES`. Functional calls inside a container's own ``forward`` (``torch.relu``, ``a + b``,
    ``torch.cat``) are not seen by this check; the engine handles those three."""
    rules: dict[nn.Module, Rule] = {}
    first = True
    for name, m in model.named_modules():
        if isinstance(m, LINEAR_TYPES):
            rule = rule_map(name, m, first)
            first = False
            if rule is not None:
                rules[m] = rule
        elif isinstance(m, nn.modules.batchnorm._BatchNorm | nn.PReLU):
            continue  # BatchNorm: merged by the canonizer, else an affine map under LRP-0; PReLU: pass-through
        elif any(True for _ in m.parameters(recurse=False)):
            raise NotApplicable(f"no LRP rule for module {name!r} of type {type(m).__name__}; supported layers "
                                "with parameters: Linear, Conv1d/2d/3d, BatchNorm")
        elif not any(True for _ in m.children()) and not isinstance(m, PASS_TYPES):
            raise NotApplicable(f"no LRP rule for module {name!r} of type {type(m).__name__}: its gradient is not "
                                "a relevance rule; supported layers without parameters: ReLU, LeakyReLU, PReLU, "
                                "max/average pooling, Flatten, Dropout, Identity")
    return rules


@contextlib.contextmanager
def attach(model: nn.Module, rules: dict[nn.Module, Rule], input_ref: list[torch.Tensor]) -> Iterator[None]:
    """Register the rules' hooks for the duration of the block; every hook is removed in ``finally``."""
    with hooks((m, RuleHook(rule, input_ref)) for m, rule in rules.items()):
        yield
