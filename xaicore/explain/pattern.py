"""PatternNet and PatternAttribution (Kindermans et al. 2018; survey §5.5) with fitted signal estimators.

Both methods replace, in the backward pass, each Linear/Conv2d layer's weights by its patterns (PatternNet: the
signal is projected back) or by w ⊙ a (PatternAttribution: DTD with the root point x₀ = x − a·y); ReLU, pooling,
additions and concatenations keep their gradient. The backward starts from the target logit f(x), so on a linear
model PatternNet returns S(x) = a·f(x) itself. Both are fitted methods: ``state = xaicore.fit(model, x_train,
method="patternnet")`` runs :func:`~xaicore.explain.signal_estimators.fit_patterns`, and
``explain(..., reference=state)`` uses it; ``estimator="filter"`` (S_w) needs none.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from xaicore.engine import hooks, target_scores
from xaicore.errors import XaiCoreError
from xaicore.explain.lrp.canonizers import merge_batch_norm
from xaicore.explain.registry import register
from xaicore.explain.signal_estimators import (
    ESTIMATORS,
    PATTERN_LAYERS,
    Patterns,
    check_layer,
    conv_padding,
    estimator_patterns,
    fit_patterns,
    layer_patterns,
    safe_div,
)
from xaicore.models.spec import split_normalization


class _PatternBackward(torch.autograd.Function):
    """Forward: the layer's output. Backward: the upper signal through the transposed layer with weights a₊ where
    the unit's output was > 0 and a₋ elsewhere (``a_neg`` None: one pattern); the weights themselves are unused."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, a_pos: torch.Tensor,  # type: ignore[override]
                a_neg: torch.Tensor | None, module: nn.Module) -> torch.Tensor:
        ctx.save_for_backward(a_pos, a_pos if a_neg is None else a_neg, y > 0)
        ctx.split, ctx.module, ctx.in_shape = a_neg is not None, module, x.shape
        return y.clone()

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        a_pos, a_neg, pos = ctx.saved_tensors
        m, shape = ctx.module, ctx.in_shape
        if not ctx.split:
            return _transpose(m, a_pos, g, shape), None, None, None, None
        gp = torch.where(pos, g, torch.zeros_like(g))
        out = _transpose(m, a_pos, gp, shape)
        gn = g - gp
        if bool(gn.any()):  # under a ReLU the upper signal is already 0 where y ≤ 0: nothing to send
            out = out + _transpose(m, a_neg, gn, shape)
        return out, None, None, None, None


def _transpose(m: nn.Module, a: torch.Tensor, g: torch.Tensor, in_shape: torch.Size) -> torch.Tensor:
    if isinstance(m, nn.Linear):
        return g @ a
    return torch.nn.grad.conv2d_input(in_shape, a, g.contiguous(), m.stride, conv_padding(m), m.dilation, m.groups)


class _Hook:
    """Forward hook of one layer: its backward becomes the pattern's (a callable object, picklable)."""

    def __init__(self, a_pos: torch.Tensor, a_neg: torch.Tensor | None) -> None:
        self.a_pos, self.a_neg = a_pos, a_neg

    def __call__(self, m: nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
        return _PatternBackward.apply(inputs[0], y.detach(), self.a_pos, self.a_neg, m)


def _layer_weights(name: str, m: nn.Module, patterns: Patterns | None, estimator: str,
                   attribution: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The backward weights of one layer, in its weight's shape and dtype: a (PatternNet) or w ⊙ a
    (PatternAttribution), for y > 0 and (if the estimator splits) for y ≤ 0."""
    w = m.weight.detach().reshape(m.weight.shape[0], -1)
    if patterns is None:  # S_w needs no data
        a_pos, a_neg = safe_div(w.double(), (w.double() ** 2).sum(1)), None
    else:
        layer = layer_patterns(patterns, name, w)
        a_pos, a_neg = estimator_patterns(layer, estimator)
        a_neg = None if estimator != "two_component" else a_neg
    out = []
    for a in (a_pos, a_neg):
        if a is not None:
            a = a.to(w)
            out.append((a * w if attribution else a).reshape(m.weight.shape))
        else:
            out.append(None)
    return out[0], out[1]


def pattern_backward(model: nn.Module, x: torch.Tensor, target: torch.Tensor, patterns: Patterns | None,
                     estimator: str, attribution: bool) -> torch.Tensor:
    """The backward pass of PatternNet (``attribution=False``: weights → a) or PatternAttribution (w → w ⊙ a),
    started from the target logit f(x)."""
    if estimator not in ESTIMATORS:
        raise XaiCoreError(f"unknown signal estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")
    if patterns is None and estimator != "filter":
        raise XaiCoreError(f"estimator {estimator!r} is fitted on data: state = xaicore.fit(model, x_train, "
                           "method='patternnet' or 'patternattribution'); explain(..., reference=state)")
    if patterns is not None and not isinstance(patterns, Patterns):
        raise XaiCoreError(f"the state of PatternNet must be xaicore.explain.Patterns, got {type(patterns).__name__}")
    # a network behind its input normalization (xaicore.models.Normalized): the backward runs on the network from
    # the normalized input; the element-wise layer (w = 1/std) has the pattern a = std, so PatternAttribution
    # (w * a = 1) passes through it and PatternNet multiplies by std. Patterns keep the wrapper's names (net.*).
    normalize, net = split_normalization(model)
    prefix = "" if normalize is None else "net."
    if normalize is not None:
        with torch.no_grad():
            x = normalize(x)
    x = x.detach().requires_grad_(True)
    with merge_batch_norm(net, x[:1]):
        kinds = PATTERN_LAYERS + (nn.Conv1d, nn.Conv3d)
        layers = [(prefix + name, m) for name, m in net.named_modules() if isinstance(m, kinds)]
        for name, m in layers:
            check_layer(name, m)
        pairs = [(m, _Hook(*_layer_weights(name, m, patterns, estimator, attribution))) for name, m in layers]
        with hooks(pairs):
            score = target_scores(net, x, target)
            (grad,) = torch.autograd.grad(score, x, grad_outputs=score.detach())
    return grad if normalize is None or attribution else grad * normalize.std


def fit_signal_estimators(model: nn.Module, x_train: torch.Tensor, *, batch_size: int = 256) -> Patterns:
    """The ``fit`` hook of PatternNet/PatternAttribution: S_w, S_a and S_a+- of every layer on ``x_train``."""
    return fit_patterns(model, x_train, batch_size=batch_size)


@register("patternnet", family="signal", fit=fit_signal_estimators, state_type=Patterns,
          paper="Kindermans et al. 2018, PatternNet (survey §5.5, eqs. 14-16): the signal a*y projected back "
                    "layer by layer with the fitted patterns in place of the weights")
def patternnet(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, estimator: str = "two_component",
               reference: Patterns | None = None) -> torch.Tensor:
    return pattern_backward(model, x, target, reference, estimator, attribution=False)


@register("patternattribution", family="attribution", fit=fit_signal_estimators, state_type=Patterns,
          paper="Kindermans et al. 2018, PatternAttribution (survey §5.5): relevance propagated with w * a, "
                    "deep Taylor decomposition at the root point x0 = x - a*y")
def patternattribution(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *,
                       estimator: str = "two_component", reference: Patterns | None = None) -> torch.Tensor:
    return pattern_backward(model, x, target, reference, estimator, attribution=True)
