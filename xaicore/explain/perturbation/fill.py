"""What a switched-off feature becomes: the fills the perturbation methods share with the metrics."""

from __future__ import annotations

import torch

from xaicore.errors import XaiCoreError
from xaicore.features import Segments
from xaicore.metrics.perturbation import gaussian_blur, replacement_values

#: ``zero``; ``mean`` (of ``reference`` samples, the pipeline passes the training set's mean image; without it,
#: the batch's); ``blur`` (Gaussian σ = 3 of the original); ``uniform`` (U(0, 1) noise drawn per sample from
#: (seed, content)); ``segment_mean`` (each segment's own mean colour: the ``lime`` package's default)
FILLS = ("zero", "mean", "blur", "uniform", "segment_mean")


def fill_for(x: torch.Tensor, fill: str, *, seed: int = 0, reference: torch.Tensor | None = None,
             features: object = None, owner: str = "fill") -> torch.Tensor:
    """The values of x's shape that switched-off features take (see :data:`FILLS`)."""
    if fill == "zero":
        return torch.zeros_like(x)
    if fill in ("mean", "uniform"):
        return replacement_values(x, fill, seed=seed, reference=reference).to(x.dtype)
    if fill == "blur":
        return gaussian_blur(x)
    if fill == "segment_mean":
        if not isinstance(features, Segments):
            raise XaiCoreError(f"{owner}: fill 'segment_mean' needs segment features (superpixels or a grid)")
        b, c = x.shape[:2]
        flat = x.reshape(b, c, -1).to(torch.float64)
        labels = features.labels.expand(b, -1)
        sums = torch.zeros(b, c, features.n_features, dtype=torch.float64, device=x.device)
        sums.scatter_add_(2, labels[:, None].expand(b, c, -1), flat)
        counts = torch.zeros(b, features.n_features, dtype=torch.float64, device=x.device)
        counts.scatter_add_(1, labels, torch.ones_like(labels, dtype=torch.float64))
        means = sums / counts.clamp_min(1)[:, None]
        return means.gather(2, labels[:, None].expand(b, c, -1)).reshape(x.shape).to(x.dtype)
    raise XaiCoreError(f"{owner}: unknown fill {fill!r}; expected one of {', '.join(FILLS)}")
