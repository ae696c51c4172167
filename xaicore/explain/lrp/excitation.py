"""Excitation backprop (Zhang et al. 2016, ECCV; 2018, IJCV): the marginal winning probability (MWP) as a rule
of the LRP engine.

Zhang et al. pass a top-down probability through every Linear/Conv layer with the excitatory weights only and
no bias: P(a_i) = Σ_j P(a_i|a_j) P(a_j) with P(a_i|a_j) = Z_j a_i w⁺_ij and Z_j = 1 / Σ_i a_i w⁺_ij, i.e.

    P(a_i) = Σ_j a_i w⁺_ij / (Σ_i a_i w⁺_ij) · P(a_j)

for non-negative activations a_i (ReLU outputs). Under the engine's invariant (the backward carries R / a,
:mod:`xaicore.explain.lrp.core`) this is the z⁺ rule without b⁺ in its denominator (``dtd.zplus`` keeps b⁺);
ReLU, max-pooling (winner-take-all), average pooling (proportional split, Zhang's rule with unit weights),
Flatten and Dropout need nothing. Deviations from the papers, by design of the engine:

* it starts from R = f(x), the target logit (DESIGN §3), not from P = 1: R / f(x) is Zhang's MWP;
* it goes down to the input, where Zhang et al. stop at a chosen layer. On the input layer a signed input takes
  the positive part of each product, (x_i w_ij)⁺ = x_i⁺ w⁺_ij + x_i⁻ w⁻_ij (Montavon et al. 2019), instead of the
  MWP's a_i ≥ 0; for x ≥ 0 (images in [0, 1]) this is Zhang's formula;
* BatchNorm after a Linear/Conv is merged into it (the merged shift is a bias, ignored): with γ > 0 this equals
  passing P through BatchNorm unchanged (the per-channel scale cancels in Z_j), as TorchRay does; a BatchNorm
  after a concatenation keeps its gradient (the engine's LRP-0), conservative only when its shift is 0;
* residual additions split the relevance in proportion to the summands (the engine's z-rule, conservative),
  where TorchRay's ``eltwise_sum`` copies P to both branches.

Relevance is conserved at every layer (Σ_i R_i = Σ_j R_j) except where a neuron with R_j ≠ 0 has Σ_i a_i w⁺_ij
= 0 (alive through its bias alone), which loses R_j, and up to the stabiliser ε: R_j z⁺_j / (z⁺_j + ε).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from xaicore.errors import XaiCoreError
from xaicore.explain.lrp.composites import lrp, uniform
from xaicore.explain.lrp.core import Group, Rule, Term, negative, positive
from xaicore.explain.lrp.rules import DEFAULT_STABILIZER
from xaicore.explain.registry import register


def excitation(stabilizer: float = DEFAULT_STABILIZER) -> Rule:
    """Zhang et al. 2016, the conditional winning probability P(a_i|a_j) = a_i w⁺_ij / Σ_i a_i w⁺_ij: z⁺ (survey
    eq. 13) without b⁺; for signed input the positive part x⁺w⁺ + x⁻w⁻ of each product."""
    if stabilizer < 0:
        raise XaiCoreError(f"excitation_backprop: stabilizer must be >= 0, got {stabilizer}")
    return Rule("excitation", (Group((Term(positive, positive, bias=False), Term(negative, negative, bias=False)),
                                     sign=1),), float(stabilizer))


@register("excitation_backprop", family="attribution", conservative=True,
          paper="Zhang et al. 2016 (ECCV) / 2018 (IJCV), excitation backprop: marginal winning probability "
                    "P(a_i) = sum_j a_i w+_ij / (sum_i a_i w+_ij) P(a_j) on every Linear/Conv layer, no bias, "
                    "from R = f(x) down to the input")
def excitation_backprop(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *,
                        stabilizer: float = DEFAULT_STABILIZER) -> torch.Tensor:
    """Excitation backprop's MWP times f(x), at the input (BatchNorm merged, residuals split proportionally)."""
    return lrp(model, x, target, uniform(excitation(stabilizer)))
