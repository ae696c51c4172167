"""Composites say *where* rules apply; :func:`lrp` runs one (canonize → attach rules → one backward).

A :class:`Composite` assigns a rule to the first Linear/Conv layer (the input layer, in ``model.modules()`` order),
to the other convolutions and to the other dense layers (Montavon et al. 2019, §10.3: "LRP-0 upper, LRP-ε middle,
LRP-γ/z^B lower"; Kohlbrenner et al. 2020 for the named composites). Pooling, ReLU, Flatten, Dropout, additions and
concatenations need no rule (see :mod:`xaicore.explain.lrp.core`).
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.nn as nn

from xaicore.engine import target_scores
from xaicore.explain.lrp.canonizers import merge_batch_norm
from xaicore.explain.lrp.core import Rule, assign_rules, attach
from xaicore.explain.lrp.rules import zb
from xaicore.models.spec import split_normalization


@dataclasses.dataclass(frozen=True)
class Composite:
    """Rules per layer kind; ``first`` (if set) overrides the kind's rule on the input layer."""

    dense: Rule
    conv: Rule
    first: Rule | None = None
    canonize: bool = True  # merge BatchNorm into the preceding layer

    def normalized(self, normalize: nn.Module, like: torch.Tensor) -> Composite:
        """This composite for the network behind ``normalize``: z^B's pixel box becomes the normalized box (in the
        dtype of the input ``like``, one sample's shape)."""
        rule = self.first
        if rule is None or rule.box is None:
            return self
        low, high = (normalize(torch.as_tensor(b, dtype=like.dtype).expand(1, *like.shape[1:]))[0] for b in rule.box)
        return dataclasses.replace(self, first=zb(low, high, rule.stabilizer))

    def rule_for(self, name: str, module: nn.Module, first: bool) -> Rule:
        if first and self.first is not None:
            return self.first
        return self.dense if isinstance(module, nn.Linear) else self.conv


def uniform(rule: Rule) -> Composite:
    """One rule on every Linear and Conv layer."""
    return Composite(dense=rule, conv=rule)


def lrp(model: nn.Module, x: torch.Tensor, target: torch.Tensor, composite: Composite) -> torch.Tensor:
    """Relevance of ``x`` for the ``target`` logit, starting from R = f(x) (survey §5.1, constraint 3).

    The model is canonized and hooked only inside this call and restored in ``finally``. A network behind its
    input normalization (:class:`xaicore.models.Normalized`) is explained from the normalized input, and its
    relevance passes the element-wise normalization unchanged (each pixel feeds one input), on the pixel grid.
    """
    normalize, net = split_normalization(model)
    if normalize is not None:
        with torch.no_grad():
            xn = normalize(x)
        return lrp(net, xn, target, composite.normalized(normalize, x))
    x = x.detach().requires_grad_(True)
    input_ref = [x]
    with merge_batch_norm(model, x[:1]) if composite.canonize else contextlib.nullcontext():
        rules = assign_rules(model, composite.rule_for)
        first = next((rules[m] for m in model.modules() if m in rules), None)
        with attach(model, rules, input_ref):
            score = target_scores(model, x, target)
            (grad,) = torch.autograd.grad(score.sum(), x)
    return grad if (first is not None and first.returns_relevance) else x.detach() * grad
