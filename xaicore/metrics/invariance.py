"""Input invariance (Kindermans et al. 2019, "The (un)reliability of saliency methods"; survey §5.5, Figure 4).

Network 2 is network 1 with its first layer's bias compensated for a constant input shift m:
b₂ = b₁ − W·m, so f₂(x + m) = f₁(x) for every x — the two networks compute the same function of the signal,
and a heatmapping method is *input invariant* if it gives both the same heatmap.

A dense first layer folds W·m into its bias. A convolution's W∗m varies with position near the borders
(zero padding), so its compensation is a per-position bias map (:class:`BiasMapConv2d`). Rule-based methods
that read a layer's ``bias`` must treat ``bias_map`` as that layer's bias.

f₂(x + m) = f₁(x) holds to float rounding for both. One caveat for gradients through max-pooling: where
pooled activations tie exactly (a constant image background gives equal pre-activations), rounding in
network 2 breaks the tie differently, and the gradient is routed to another (equally valid) element; off such
ties the gradients agree to rounding.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from xaicore.errors import XaiCoreError
from xaicore.explain.registry import explain, fit, fit_params, get_explainer
from xaicore.kinds import check_inputs

_SHAPE_ONLY = (nn.Flatten, nn.Identity)


class BiasMapConv2d(nn.Conv2d):
    """A Conv2d whose bias is a (C_out, H', W') map: conv(x, W) + bias_map (the compensated network 2)."""

    def __init__(self, conv: nn.Conv2d, bias_map: torch.Tensor) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, bias=False, padding_mode=conv.padding_mode,
                         device=conv.weight.device, dtype=conv.weight.dtype)
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=conv.weight.requires_grad)
        self.register_buffer("bias_map", bias_map.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.bias_map


def _first_layer(model: nn.Module) -> tuple[str, nn.Module]:
    if not isinstance(model, nn.Sequential):
        raise XaiCoreError(f"input invariance needs an nn.Sequential to find the first layer, got "
                           f"{type(model).__name__}")
    for name, m in model.named_modules():
        if isinstance(m, nn.Sequential):
            continue
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            return name, m
        if not isinstance(m, _SHAPE_ONLY):
            raise XaiCoreError(f"input invariance: layer {name!r} ({type(m).__name__}) comes before the first "
                               "linear or conv layer; only Flatten/Identity may")
    raise XaiCoreError("input invariance: the model has no Linear or Conv2d layer")


@torch.no_grad()
def shifted_network(model: nn.Module, shift: torch.Tensor | float, input_shape: tuple[int, ...]) -> nn.Module:
    """Network 2 of Kindermans et al.: a copy of ``model`` with f₂(x + shift) = f₁(x) (b₂ = b₁ − W·m).

    ``shift`` m: a number (a constant image) or a tensor of one input's shape ``input_shape``."""
    name, layer = _first_layer(model)
    ref = layer.weight
    m = torch.as_tensor(shift, dtype=ref.dtype, device=ref.device)
    m = m.expand(input_shape) if m.ndim == 0 else m
    if tuple(m.shape) != tuple(input_shape):
        raise XaiCoreError(f"shift shape {tuple(m.shape)} differs from one input's {tuple(input_shape)}")
    net = copy.deepcopy(model)
    new = net.get_submodule(name)
    if isinstance(layer, nn.Linear):
        wm = layer.weight @ m.flatten()
        bias = layer.bias if layer.bias is not None else torch.zeros_like(wm)
        if new.bias is None:
            new.bias = nn.Parameter(torch.zeros_like(wm))
        new.bias.copy_(bias - wm)
        return net
    if m.ndim != 3:
        raise XaiCoreError(f"a Conv2d first layer needs a (C, H, W) shift, got {tuple(m.shape)}")
    wm = F.conv2d(m[None], layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)[0]
    bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_channels, dtype=ref.dtype,
                                                                  device=ref.device)
    parent, _, attr = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, attr, BiasMapConv2d(layer, bias[:, None, None] - wm))
    return net


def input_invariance(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str,
                     shift: torch.Tensor | float, *, fit_data: torch.Tensor | None = None,
                     params2: dict[str, Any] | None = None, **params: Any) -> torch.Tensor:
    """(B,) Σ|R₁(x) − R₂(x + m)| / Σ|R₁(x)|: network 1's heatmap of x against network 2's of x + m (lower is
    better, 0 = input invariant); ``params`` go to the explainer (``params2``, if given, for network 2). An
    all-zero R₁ divides by 1e-12.

    A method fitted on data (``xaicore.fit``: PatternNet's signal estimators, PDA's patch Gaussians) is fitted
    for each network on its own data, as the check means it: on ``fit_data`` for network 1 and on
    ``fit_data + m`` for network 2 — unless ``params``/``params2`` bring their fitted ``reference``."""
    target = check_inputs(x, target)
    net2 = shifted_network(model, shift, tuple(x.shape[1:]))
    m = torch.as_tensor(shift, dtype=x.dtype, device=x.device)
    p1, p2 = dict(params), dict(params if params2 is None else params2)
    if get_explainer(method).fit is not None and p1.get("reference") is None:
        if fit_data is None:
            raise XaiCoreError(f"input invariance of {method!r}: it is fitted on data per network; pass fit_data "
                               "(training inputs of network 1)")
        fit_kw = fit_params(method, p1)
        p1["reference"] = fit(model, fit_data, method, **fit_kw)
        p2["reference"] = fit(net2, fit_data + m.to(fit_data), method, **fit_kw)
    r1 = explain(model, x, target, method=method, **p1)
    r2 = explain(net2, x + m, target, method=method, **p2)
    num = (r1.to(torch.float64) - r2.to(torch.float64)).abs().flatten(1).sum(1)
    return (num / r1.to(torch.float64).abs().flatten(1).sum(1).clamp_min(1e-12)).float()
