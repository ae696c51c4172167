"""Occlusion (Zeiler & Fergus 2014; survey §6.2): the drop of the target's score when a window is filled."""

from __future__ import annotations

import torch
import torch.nn as nn

from xaicore.engine import FORWARD_BATCH, SCORES, check_forward_batch, perturbed_scores, target_scores
from xaicore.errors import XaiCoreError
from xaicore.explain.perturbation.fill import FILLS, fill_for
from xaicore.explain.registry import register
from xaicore.features import Windows


@register("occlusion", family="perturbation",
          reference="Zeiler & Fergus 2014, sec. 4.2 (survey §6.2): R_p = mean over the windows w covering p of "
                    "f(x) - f(x with w filled), Captum's Occlusion convention")
def occlusion(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, window: int = 4, stride: int = 2,
              fill: str = "zero", reference: torch.Tensor | None = None, score: str = "logit", seed: int = 0,
              forward_batch: int = FORWARD_BATCH) -> torch.Tensor:
    """Each ``window``×``window`` window (all channels, at steps of ``stride`` while it fits) is filled with
    ``fill`` (zero | mean of ``reference`` | blur | uniform) in its own copy of x; a pixel's relevance is the mean
    drop of the target's ``score`` over the windows covering it (0 where none does)."""
    if fill not in FILLS[:4]:
        raise XaiCoreError(f"occlusion: unknown fill {fill!r}; expected one of {', '.join(FILLS[:4])}")
    if score not in SCORES:
        raise XaiCoreError(f"occlusion: unknown score {score!r}; expected one of {', '.join(SCORES)}")
    check_forward_batch(forward_batch, "occlusion")
    features = Windows(x, window, stride)
    values = fill_for(x, fill, seed=seed, reference=reference, owner="occlusion")
    keep = ~torch.eye(features.n_features, dtype=torch.bool, device=x.device)  # copy w: window w alone filled
    with torch.no_grad():
        fx = target_scores(model, x, target, score)
        drops = fx[:, None] - perturbed_scores(model, x, target, features, keep, values, score=score,
                                               forward_batch=forward_batch)
    return features.spread(drops.to(x.dtype))
