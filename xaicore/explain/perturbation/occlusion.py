"""Occlusion (Zeiler & Fergus 2014; survey §6.2): the drop of the target's score when a window is filled.

On tabular data a feature is a column, filled with its training mean (numeric) or mode (nominal); on text it is a
token, erased to the unknown word (Li et al. 2016's word erasure, survey §6.2): the relevance of a feature is the
drop f(x) − f(x with it removed): the single-feature drops of :mod:`xaicore.features.drops` (faithfulness
scores them too).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from xaicore.engine import FORWARD_BATCH, SCORES, check_forward_batch
from xaicore.errors import XaiCoreError
from xaicore.explain.registry import register
from xaicore.features import ColumnStats, features_for
from xaicore.features.drops import single_drops
from xaicore.features.fills import WINDOW_FILLS
from xaicore.kinds import check_inputs


@register("occlusion", family="perturbation", kinds=("image", "tabular", "text"),
          paper="Zeiler & Fergus 2014, sec. 4.2 (survey §6.2): R_p = mean over the windows w covering p of "
                    "f(x) - f(x with w filled), Captum's Occlusion convention")
def occlusion(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, window: int = 4, stride: int = 2,
              fill: str = "zero", reference: torch.Tensor | ColumnStats | None = None, score: str = "logit",
              seed: int = 0, forward_batch: int = FORWARD_BATCH) -> torch.Tensor:
    """Each ``window``×``window`` window (all channels, at steps of ``stride`` while it fits) is filled with
    ``fill`` (zero | mean of ``reference`` | blur | uniform) in its own copy of x; a pixel's relevance is the mean
    drop of the target's ``score`` over the windows covering it (0 where none does). Tabular (B, F) rows and text
    (B, T) token ids: one copy per column (``reference``: the training :class:`ColumnStats`) or token, removed
    as in the module docstring; ``window``, ``stride`` and ``fill`` do not apply there."""
    target = check_inputs(x, target)
    if score not in SCORES:
        raise XaiCoreError(f"occlusion: unknown score {score!r}; expected one of {', '.join(SCORES)}")
    check_forward_batch(forward_batch, "occlusion")
    features, values = features_for(x, image="windows", window=window, stride=stride, fill=fill, fills=WINDOW_FILLS,
                                    seed=seed, reference=reference, owner="occlusion")
    drops = single_drops(model, x.detach(), target, features, values, score=score, forward_batch=forward_batch,
                         dtype=torch.float64)
    empty = torch.arange(features.n_features, device=x.device)[None] >= features.counts[:, None]
    return features.spread(drops.masked_fill(empty, 0.0).to(x.dtype if x.is_floating_point() else torch.float32))
