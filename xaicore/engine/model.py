"""Reversible changes to a model: eval mode and hooks, always undone in ``finally``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

_KINDS = ("forward", "forward_pre", "full_backward")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` for the block; afterwards each module gets its own ``training`` flag back (a model may
    mix train and eval parts), whatever the block raised."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def hooks(pairs: Iterable[tuple[nn.Module, Callable]], kind: str = "forward") -> Iterator[list]:
    """Register ``hook`` on each ``(module, hook)`` as a ``kind`` hook (forward | forward_pre | full_backward)
    for the block; every handle is removed in ``finally``, also when registering a later one fails."""
    if kind not in _KINDS:
        raise ValueError(f"unknown hook kind {kind!r}; expected one of {', '.join(_KINDS)}")
    handles = []
    try:
        for module, hook in pairs:
            handles.append(getattr(module, f"register_{kind}_hook")(hook))
        yield handles
    finally:
        for h in handles:
            h.remove()


def named_layers(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """The submodules called ``names`` (``model.named_modules()``'s dotted names), in the order given; an unknown
    name raises one error that lists the model's layers."""
    from xaicore.errors import XaiCoreError

    modules = {name: m for name, m in model.named_modules() if name}
    found = {}
    for name in names:
        if not isinstance(name, str) or name not in modules:
            raise XaiCoreError(f"unknown layer {name!r}; the model's layers are: {', '.join(modules) or '(none)'}")
        found[name] = modules[name]
    return found


@contextmanager
def captured_outputs(model: nn.Module, names: Iterable[str]) -> Iterator[dict[str, torch.Tensor]]:
    """For the block, every forward pass stores the output of each named layer in the yielded dict (the graph
    kept, so gradients can be taken with respect to it); a layer that runs twice in one pass raises."""
    from xaicore.errors import XaiCoreError

    layers = named_layers(model, names)
    out: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable:
        def hook(_m: nn.Module, _inp: object, output: object) -> None:
            if name in out:
                raise XaiCoreError(f"layer {name!r} ran twice in one forward pass; use a layer that runs once")
            if not isinstance(output, torch.Tensor):
                raise XaiCoreError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
            out[name] = output
        return hook

    with hooks([(m, keep(n)) for n, m in layers.items()]):
        yield out
