"""Localisation against a known ground truth: does a heatmap put its relevance where the evidence is planted (the
watermark box of :mod:`xaicore.data.planted`)? A metric beside AOPC that needs no perturbation of the input.

Per sample, with R the relevance summed over channels (H, W) and G the ground-truth mask (H, W):

* ``mass`` — relevance mass accuracy (Arras et al. 2022, "CLEVR-XAI", eq. 4, on positive relevance):
  Σ_{G} max(R, 0) / Σ max(R, 0), the share of the positive relevance inside the mask; 0 when R has no positive
  value;
* ``pointing`` — the pointing game (Zhang et al. 2018, "Top-down neural attention by excitation backprop",
  §5.1, without tolerance): 1 when the maximum of R is attained inside the mask, 0 otherwise; a constant map
  points nowhere (0), where Quantus counts its ties as hits.

A method that highlights the mask scores high on both; ``random`` scores about |G|/(H·W) (mass) and the same
probability (pointing).
"""

from __future__ import annotations

import dataclasses

import torch

from xaicore.errors import XaiCoreError, require_finite
from xaicore.metrics.declarations import METRICS

MEASURES = ("mass", "pointing")


@dataclasses.dataclass(frozen=True)
class LocalizationResult:
    """``mass`` and ``pointing``: (B,) float tensors in [0, 1] (higher is better for both)."""

    mass: torch.Tensor
    pointing: torch.Tensor
    higher_is_better: bool = METRICS["localization"].higher_is_better

    def measure(self, name: str) -> torch.Tensor:
        return getattr(self, name)


def localization(relevance: torch.Tensor, mask: torch.Tensor) -> LocalizationResult:
    """Relevance mass accuracy and the pointing game of ``relevance`` (B, C, H, W) against the ground-truth
    ``mask`` (B, H, W) or (B, 1, H, W) booleans; see the module docstring."""
    if not isinstance(relevance, torch.Tensor) or relevance.ndim != 4:
        shape = tuple(getattr(relevance, "shape", ()))
        raise XaiCoreError(f"relevance must be a (B, C, H, W) tensor, got shape {shape}")
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (3, 4) or (mask.ndim == 4 and mask.shape[1] != 1):
        raise XaiCoreError(f"the ground-truth mask must be a (B, H, W) or (B, 1, H, W) tensor, got shape "
                           f"{tuple(getattr(mask, 'shape', ()))}")
    mask = mask.reshape(mask.shape[0], *mask.shape[-2:])
    if mask.shape != (relevance.shape[0], *relevance.shape[-2:]):
        raise XaiCoreError(f"the ground-truth mask {tuple(mask.shape)} does not match relevance "
                           f"{tuple(relevance.shape)}: one (H, W) mask per sample")
    if mask.dtype != torch.bool:
        raise XaiCoreError(f"the ground-truth mask must be boolean, got {mask.dtype}")
    if not mask.flatten(1).any(1).all():
        raise XaiCoreError(f"the ground-truth mask is empty for {int((~mask.flatten(1).any(1)).sum())} samples; "
                           "localisation needs a region per sample")
    require_finite(relevance, "relevance")
    r = relevance.detach().sum(1).flatten(1).double()
    g = mask.flatten(1).to(r.device)
    positive = r.clamp(min=0)
    total = positive.sum(1)
    mass = torch.where(total > 0, (positive * g).sum(1) / total.where(total > 0, torch.ones_like(total)), 0.0)
    top = r.max(1, keepdim=True).values
    constant = r.min(1).values == top[:, 0]
    pointing = ((r == top) & g).any(1) & ~constant
    return LocalizationResult(mass=mass, pointing=pointing.double())
