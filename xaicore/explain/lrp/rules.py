"""The LRP and DTD rules as configurations of the engine (:class:`~xaicore.explain.lrp.core.Rule`).

With z_ij = x_i w_ij, each rule sends R_{i←j} = R_j · z'_ij / stab(Σ_i z'_ij + b'_j) (survey eq. 9 and its
variants); the rules differ only in z' and b'. Signed inputs follow the generalisation of Montavon et al. 2019
(the positive part of a product, (x_i w_ij)⁺ = x_i⁺ w_ij⁺ + x_i⁻ w_ij⁻), as Zennit does.
"""

from __future__ import annotations

import functools

import torch

from xaicore.errors import XaiCoreError
from xaicore.explain.lrp.core import Group, Rule, Term, constant, gamma_mod, identity, negative, ones, positive, square

DEFAULT_STABILIZER = 1e-6


def z_rule() -> Rule:
    """LRP-0 (Bach et al. 2015; survey eq. 9), bias included in the denominator, no stabiliser."""
    return Rule("z", (Group((Term(identity, identity),)),))


def epsilon(epsilon: float = 1e-6) -> Rule:
    """LRP-ε (Bach et al. 2015, ε-rule): z_j + ε·sign(z_j) in the denominator absorbs weak/contradictory relevance."""
    if epsilon < 0:
        raise XaiCoreError(f"lrp: epsilon must be >= 0, got {epsilon}")
    return Rule("epsilon", (Group((Term(identity, identity),)),), float(epsilon))


def _positive_part(bias: bool = True) -> tuple[Term, ...]:
    """(x w)⁺ + b⁺: x⁺w⁺ + x⁻w⁻ (Montavon et al. 2019)."""
    return Term(positive, positive, bias), Term(negative, negative, False)


def _negative_part() -> tuple[Term, ...]:
    """(x w)⁻ + b⁻: x⁺w⁻ + x⁻w⁺."""
    return Term(positive, negative), Term(negative, positive, False)


def alpha_beta(alpha: float = 2.0, beta: float = 1.0, stabilizer: float = DEFAULT_STABILIZER) -> Rule:
    """LRP-αβ (Bach et al. 2015, eq. 60): R_j (α z⁺_ij / z⁺_j − β z⁻_ij / z⁻_j), z^±_j = Σ_i z^±_ij + b^±_j.

    α − β = 1 keeps Σ_i R_i = R_j where both signs of contribution occur (and the bias is 0)."""
    if alpha < 0 or beta < 0 or abs(alpha - beta - 1.0) > 1e-12:
        raise XaiCoreError(f"lrp.alpha_beta needs alpha >= 0, beta >= 0 and alpha - beta = 1 (conservation, Bach et "
                           f"al. 2015 eq. 60), got alpha={alpha}, beta={beta}")
    groups = [Group(_positive_part(), float(alpha), sign=1)]
    if beta:
        groups.append(Group(_negative_part(), -float(beta), sign=-1))
    return Rule("alpha_beta", tuple(groups), stabilizer)


def zplus(stabilizer: float = DEFAULT_STABILIZER) -> Rule:
    """z⁺ (Montavon et al. 2017; survey eq. 13) = αβ with α = 1, β = 0: x_i w⁺_ij / Σ_i x_i w⁺_ij (+ b⁺_j)."""
    return Rule("zplus", (Group(_positive_part(), sign=1),), stabilizer)


def gamma(gamma: float = 0.25, stabilizer: float = DEFAULT_STABILIZER) -> Rule:
    """LRP-γ (Montavon et al. 2019, eq. 5): w + γw⁺ favours positive contributions; for y_j < 0, w + γw⁻."""
    if gamma < 0:
        raise XaiCoreError(f"lrp: gamma must be >= 0, got {gamma}")
    up = functools.partial(gamma_mod, gamma=float(gamma), sign=1)
    down = functools.partial(gamma_mod, gamma=float(gamma), sign=-1)
    return Rule("gamma", (
        Group((Term(positive, up), Term(negative, down, False)), when="positive"),
        Group((Term(positive, down), Term(negative, up, False)), when="negative"),
    ), stabilizer)


def w2(stabilizer: float = DEFAULT_STABILIZER) -> Rule:
    """w² (Montavon et al. 2017; survey eq. 12): R_i = Σ_j w²_ij / Σ_i w²_ij R_j, for unbounded input (no bias)."""
    return Rule("w2", (Group((Term(ones, square, False),), sign=1),), stabilizer, returns_relevance=True)


def flat(stabilizer: float = DEFAULT_STABILIZER) -> Rule:
    """Flat (Lapuschkin et al. 2019): w² with all weights 1 — R_j spread uniformly over its receptive field."""
    return Rule("flat", (Group((Term(ones, ones, False),), sign=1),), stabilizer, returns_relevance=True)


def zb(low: float | torch.Tensor = 0.0, high: float | torch.Tensor = 1.0,
       stabilizer: float = DEFAULT_STABILIZER) -> Rule:
    """z^B (Montavon et al. 2017, §4.2): (x_i w_ij − l_i w⁺_ij − h_i w⁻_ij) / Σ_i (…) for input in the box [l, h]."""
    if isinstance(low, float | int) and isinstance(high, float | int) and low > high:
        raise XaiCoreError(f"dtd.zb/zB box: low={low} is above high={high}")
    lo = functools.partial(constant, value=low)
    hi = functools.partial(constant, value=high)
    return Rule("zb", (Group((Term(identity, identity, False), Term(lo, positive, False, -1.0),
                              Term(hi, negative, False, -1.0))),), stabilizer, returns_relevance=True,
                box=(low, high))
