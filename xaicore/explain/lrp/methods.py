"""The registered LRP and DTD methods (DESIGN §3 names): thin kernels that build a composite and run :func:`lrp`."""

from __future__ import annotations

import torch
import torch.nn as nn

from xaicore.explain.lrp import rules as r
from xaicore.explain.lrp.composites import Composite, lrp, uniform
from xaicore.explain.registry import register

Bound = float | torch.Tensor
EPS = 1e-6
STAB = r.DEFAULT_STABILIZER


@register("lrp.z", family="attribution", conservative=True, at_embedding=True,
          paper="Bach et al. 2015, LRP-0 (survey eq. 9): on every Linear/Conv layer, bias in the denominator")
def lrp_z(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return lrp(model, x, target, uniform(r.z_rule()))


@register("lrp.epsilon", family="attribution", conservative=True, at_embedding=True,
          paper="Bach et al. 2015, LRP-epsilon on every Linear/Conv layer")
def lrp_epsilon(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, epsilon: float = EPS) -> torch.Tensor:
    return lrp(model, x, target, uniform(r.epsilon(epsilon)))


@register("lrp.alpha_beta", family="attribution", conservative=True,
          paper="Bach et al. 2015, eq. 60: LRP-alpha-beta (alpha - beta = 1) on every Linear/Conv layer")
def lrp_alpha_beta(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, alpha: float = 2.0, beta: float = 1.0,
                   stabilizer: float = STAB) -> torch.Tensor:
    return lrp(model, x, target, uniform(r.alpha_beta(alpha, beta, stabilizer)))


@register("lrp.epsilon_plus", family="attribution", conservative=True,
          paper="Kohlbrenner et al. 2020 / Zennit EpsilonPlus: epsilon on dense, z+ on conv layers")
def lrp_epsilon_plus(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, epsilon: float = EPS,
                     stabilizer: float = STAB) -> torch.Tensor:
    return lrp(model, x, target, Composite(dense=r.epsilon(epsilon), conv=r.zplus(stabilizer)))


@register("lrp.epsilon_plus_flat", family="attribution", conservative=True,
          paper="Kohlbrenner et al. 2020 / Zennit EpsilonPlusFlat: flat on the input layer, z+ on conv, "
                    "epsilon on dense")
def lrp_epsilon_plus_flat(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, epsilon: float = EPS,
                          stabilizer: float = STAB) -> torch.Tensor:
    return lrp(model, x, target, Composite(dense=r.epsilon(epsilon), conv=r.zplus(stabilizer),
                                           first=r.flat(stabilizer)))


@register("lrp.epsilon_gamma_box", family="attribution", conservative=True,
          paper="Montavon et al. 2019, sec. 10.3 / Zennit EpsilonGammaBox: zB on the input layer, gamma on conv, "
                    "epsilon on dense")
def lrp_epsilon_gamma_box(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, epsilon: float = EPS,
                          gamma: float = 0.25, low: Bound = 0.0, high: Bound = 1.0,
                          stabilizer: float = STAB) -> torch.Tensor:
    return lrp(model, x, target, Composite(dense=r.epsilon(epsilon), conv=r.gamma(gamma, stabilizer),
                                           first=r.zb(low, high, stabilizer)))


@register("lrp.epsilon_alpha2_beta1", family="attribution", conservative=True,
          paper="Zennit EpsilonAlpha2Beta1: alpha=2, beta=1 (Bach et al. 2015, eq. 60) on conv, epsilon on dense")
def lrp_epsilon_alpha2_beta1(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, epsilon: float = EPS,
                             stabilizer: float = STAB) -> torch.Tensor:
    return lrp(model, x, target, Composite(dense=r.epsilon(epsilon), conv=r.alpha_beta(2.0, 1.0, stabilizer)))


@register("dtd.zplus", family="attribution", conservative=True,
          paper="Montavon et al. 2017, deep Taylor decomposition: z+ rule (survey eq. 13) on every layer")
def dtd_zplus(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, stabilizer: float = STAB) -> torch.Tensor:
    return lrp(model, x, target, uniform(r.zplus(stabilizer)))


@register("dtd.w2", family="attribution", conservative=True,
          paper="Montavon et al. 2017: w^2 rule (survey eq. 12) on the input layer, z+ (eq. 13) above")
def dtd_w2(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, stabilizer: float = STAB) -> torch.Tensor:
    plus = r.zplus(stabilizer)
    return lrp(model, x, target, Composite(dense=plus, conv=plus, first=r.w2(stabilizer)))


@register("dtd.zb", family="attribution", conservative=True,
          paper="Montavon et al. 2017: z^B rule on the input layer (box [low, high]), z+ (eq. 13) above")
def dtd_zb(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, low: Bound = 0.0, high: Bound = 1.0,
           stabilizer: float = STAB) -> torch.Tensor:
    plus = r.zplus(stabilizer)
    return lrp(model, x, target, Composite(dense=plus, conv=plus, first=r.zb(low, high, stabilizer)))
