"""Reversible changes to a model: eval mode and hooks, always undone in ``finally``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

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
