"""The registry of explainers and the public shell that validates input and guards the model.

An explainer is a private kernel ``fn(model, x, target, **params) -> Tensor`` plus what it is: its family in
the survey's taxonomy (§3.1), its default hyper-parameters, and the paper/equation it implements. The shell
(:func:`explain`) checks shapes and names, puts the model in eval mode, and restores it afterwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
import torch.nn as nn

from xaicore.errors import XaiCoreError

Kernel = Callable[..., torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Explainer:
    name: str
    fn: Kernel
    family: str  # function | attribution | signal | baseline | perturbation
    reference: str
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    #: True when the method claims relevance conservation (ΣR ≈ f(x)); the axiom figures are stored for all.
    conservative: bool = False
    #: the keyword of an object fitted on data that the method needs (``patterns`` for PatternNet), else None
    fitted: str | None = None


_REGISTRY: dict[str, Explainer] = {}


def register(name: str, *, family: str, reference: str, conservative: bool = False, fitted: str | None = None,
             **defaults: Any) -> Callable[[Kernel], Kernel]:
    """Decorator: register ``fn`` under ``name`` with its keyword defaults."""

    def deco(fn: Kernel) -> Kernel:
        if name in _REGISTRY:
            raise ValueError(f"explainer {name!r} registered twice")
        _REGISTRY[name] = Explainer(name, fn, family, reference, MappingProxyType(dict(defaults)), conservative,
                                    fitted)
        return fn

    return deco


def methods() -> list[str]:
    """Every registered method name, sorted."""
    return sorted(_REGISTRY)


def get_explainer(name: str) -> Explainer:
    if name not in _REGISTRY:
        raise XaiCoreError(f"unknown method {name!r}; registered methods: {', '.join(methods())}")
    return _REGISTRY[name]


def check_inputs(x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Validate ``x`` (B, C, H, W) or (B, F) floating and ``target`` (B,) integer; returns target as long."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise XaiCoreError(f"x must be a floating-point tensor, got {type(x).__name__} "
                           f"{getattr(x, 'dtype', '')}")
    if x.ndim not in (2, 4):
        raise XaiCoreError(f"x must be (B, C, H, W) or (B, F), got shape {tuple(x.shape)}")
    if target is None:
        return target  # type: ignore[return-value]
    target = torch.as_tensor(target, device=x.device)
    if target.ndim != 1 or target.shape[0] != x.shape[0] or target.is_floating_point():
        raise XaiCoreError(f"target must be (B,) = ({x.shape[0]},) class indices, got {tuple(target.shape)} "
                           f"{target.dtype}")
    return target.long()


def explain(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str = "gradient",
            **params: Any) -> torch.Tensor:
    """Heatmap of ``model``'s ``target`` logit for each input of the batch ``x`` with ``method``.

    Returns relevance of ``x``'s shape, dtype and device, detached. The model is run in eval mode and left as
    it was (training flag, parameters, no hooks). Unknown methods or keywords, bad shapes and non-finite
    relevance raise :class:`~xaicore.errors.XaiCoreError`.
    """
    ex = get_explainer(method)
    unknown = sorted(set(params) - set(ex.defaults))
    if unknown:
        raise XaiCoreError(f"method {method!r} has no parameter {', '.join(map(repr, unknown))}; "
                           f"its parameters: {', '.join(ex.defaults) or 'none'}")
    target = check_inputs(x, target)
    kw = {**ex.defaults, **params}
    flags = [(m, m.training) for m in model.modules()]  # per module: a model may mix train and eval parts
    model.eval()
    try:
        with torch.enable_grad():
            out = ex.fn(model, x.detach(), target, **kw)
    finally:
        for m, flag in flags:
            m.training = flag
    if out.shape != x.shape:
        raise XaiCoreError(f"method {method!r} returned shape {tuple(out.shape)} for x {tuple(x.shape)}")
    out = out.detach().to(dtype=x.dtype, device=x.device)
    if not torch.isfinite(out).all():
        raise XaiCoreError(f"method {method!r} produced non-finite relevance (NaN or inf) for "
                           f"{int((~torch.isfinite(out)).flatten(1).any(1).sum())} of {x.shape[0]} samples")
    return out


def target_scores(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The target logit f(x) per sample (B,); raises when a target is out of the model's range."""
    logits = model(x)
    if logits.ndim != 2:
        raise XaiCoreError(f"model output must be (B, classes), got {tuple(logits.shape)}")
    if int(target.min()) < 0 or int(target.max()) >= logits.shape[1]:
        raise XaiCoreError(f"target holds class indices outside 0..{logits.shape[1] - 1}")
    return logits.gather(1, target[:, None].to(logits.device))[:, 0]
