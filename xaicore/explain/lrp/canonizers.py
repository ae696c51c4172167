"""Canonizers: reversible model surgery that brings a model into the form the LRP rules are defined on.

:func:`merge_batch_norm` folds every eval-mode BatchNorm that directly follows a Linear/Conv layer into that layer
(W' = W·γ/σ, b' = (b − μ)·γ/σ + β), so that the rule of the layer applies to the whole affine map (Montavon et al.
2019, §10.3.1; Zennit's ``SequentialMergeBatchNorm``). It never writes to the user's tensors: it swaps in merged
*copies* of the layer (and an ``nn.Identity`` for the BatchNorm) and swaps the originals back in ``finally``, so the
model is restored bitwise even when the explanation raises.

"Directly follows" is decided by tracing one sample through the model (tensor identity of the layer's output and
the BatchNorm's input), not by registration order: a DenseNet-style BatchNorm that follows a concatenation stays
as it is (the engine treats it as an affine map under LRP-0, i.e. its gradient).

Additions (``out += identity`` in a residual block) and ``torch.cat`` need no canonizer here: under the engine's
invariant (the backward carries R / a, see :mod:`xaicore.explain.lrp.core`) their gradient is already the
proportional split R_a = a/(a + b)·R and the slicing of R, so torchvision's ResNet/DenseNet forward code runs as is.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
import torch.nn as nn

from xaicore.engine import hooks
from xaicore.explain.lrp.core import LINEAR_TYPES

BatchNorm = nn.modules.batchnorm._BatchNorm


def find_batch_norm_pairs(model: nn.Module, probe: torch.Tensor) -> list[tuple[nn.Module, nn.Module]]:
    """(layer, batch_norm) pairs where the BatchNorm's input is the layer's output, found on one forward of ``probe``.

    Layers or BatchNorms called more than once in the forward (shared modules) are left alone."""
    produced: dict[int, nn.Module] = {}
    keep: list[torch.Tensor] = []  # keeps outputs alive so that ids stay unique during the trace
    calls: dict[nn.Module, int] = {}
    fed: dict[nn.Module, nn.Module] = {}

    def after_layer(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        calls[m] = calls.get(m, 0) + 1
        produced[id(out)] = m
        keep.append(out)

    def before_bn(m: nn.Module, inputs: tuple) -> None:
        calls[m] = calls.get(m, 0) + 1
        if id(inputs[0]) in produced:
            fed[m] = produced[id(inputs[0])]

    layers = [(m, after_layer) for m in model.modules() if isinstance(m, LINEAR_TYPES)]
    bns = [(m, before_bn) for m in model.modules()
           if isinstance(m, BatchNorm) and m.running_mean is not None and not m.training]
    with hooks(layers), hooks(bns, kind="forward_pre"), torch.no_grad():
        model(probe)
    return [(layer, bn) for bn, layer in fed.items() if calls[bn] == 1 and calls[layer] == 1]


def merged_layer(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of ``layer`` that computes ``bn(layer(x))`` (eval-mode statistics)."""
    new = copy.deepcopy(layer)
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = bn.weight * scale
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        w = layer.weight
        new.weight = nn.Parameter(w * scale.view(-1, *([1] * (w.ndim - 1))), requires_grad=False)
        bias = shift if layer.bias is None else layer.bias * scale + shift
        new.bias = nn.Parameter(bias.to(w.dtype), requires_grad=False)
    return new


def _swap(model: nn.Module, old: nn.Module, new: nn.Module, undo: list[tuple[nn.Module, str, nn.Module]]) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is old:
                undo.append((parent, name, old))
                setattr(parent, name, new)


@contextlib.contextmanager
def merge_batch_norm(model: nn.Module, probe: torch.Tensor) -> Iterator[int]:
    """Within the block, each BatchNorm after a Linear/Conv is folded into it; yields how many were merged."""
    undo: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        has_bn = any(isinstance(m, BatchNorm) for m in model.modules())
        pairs = find_batch_norm_pairs(model, probe) if has_bn else []
        for layer, bn in pairs:
            _swap(model, layer, merged_layer(layer, bn), undo)
            _swap(model, bn, nn.Identity(), undo)
        yield len(pairs)
    finally:
        for parent, name, old in reversed(undo):
            setattr(parent, name, old)
