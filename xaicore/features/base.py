"""The features interface and its label-map implementation (every feature a disjoint set of positions)."""

from __future__ import annotations

import abc

import torch

from xaicore.errors import XaiCoreError


class Features(abc.ABC):
    """Interface of a features adapter bound to one batch ``x`` (see :mod:`xaicore.features`)."""

    x: torch.Tensor
    n_features: int
    counts: torch.Tensor

    @abc.abstractmethod
    def apply(self, keep: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        """(k, B or 1, F) keep-mask and x-shaped fill → the (k·B, …) model input."""

    @abc.abstractmethod
    def spread(self, values: torch.Tensor) -> torch.Tensor:
        """(B, F) values per feature → x's shape."""

    @abc.abstractmethod
    def unchanged(self, fill: torch.Tensor) -> torch.Tensor:
        """(B, F) True where removing feature f alone (to ``fill``) leaves sample b exactly as it is: its effect
        is exactly none, whatever the last bits of two passes over other batches say."""

    def _check_keep(self, keep: torch.Tensor) -> torch.Tensor:
        if keep.ndim != 3 or keep.shape[1] not in (1, self.x.shape[0]) or keep.shape[2] != self.n_features:
            raise XaiCoreError(f"keep must be (k, B={self.x.shape[0]} or 1, F={self.n_features}), got "
                               f"{tuple(keep.shape)}")
        return keep.to(self.x.device, torch.bool)

    def _check_values(self, values: torch.Tensor) -> torch.Tensor:
        if values.shape != (self.x.shape[0], self.n_features):
            raise XaiCoreError(f"values must be (B, F) = ({self.x.shape[0]}, {self.n_features}), got "
                               f"{tuple(values.shape)}")
        return values.to(self.x.device)


class Segments(Features):
    """Disjoint features given by a label map: ``labels`` (B, *x.shape[2:]) or one map x.shape[2:] shared by
    every sample, holding feature indices 0..F−1 for each position (every channel of a position belongs to the
    same feature)."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        if x.ndim < 3:
            raise XaiCoreError(f"label-map features need (B, C, ...) inputs, got {tuple(x.shape)}")
        labels = torch.as_tensor(labels, device=x.device).long()
        spatial = tuple(x.shape[2:])
        if tuple(labels.shape) == spatial:
            labels = labels[None]
        if tuple(labels.shape[1:]) != spatial or labels.shape[0] not in (1, x.shape[0]):
            raise XaiCoreError(f"labels {tuple(labels.shape)} fit neither one map {spatial} nor one per sample")
        if int(labels.min()) < 0:
            raise XaiCoreError("labels must be feature indices >= 0")
        self.x = x
        self.labels = labels.reshape(labels.shape[0], -1)  # (1 or B, P)
        self.n_features = int(labels.max()) + 1
        self.counts = (self.labels.amax(1) + 1).expand(x.shape[0]).clone()  # labels are 0..F_b-1 per sample

    def pixel_keep(self, keep: torch.Tensor) -> torch.Tensor:
        """(k, B or 1, P) boolean: whether each position keeps x's value."""
        keep = self._check_keep(keep)
        k = keep.shape[0]
        rows = max(keep.shape[1], self.labels.shape[0])
        index = self.labels[None].expand(k, rows, -1)
        return keep.expand(k, rows, -1).gather(2, index)

    def apply(self, keep: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        x = self.x
        b = x.shape[0]
        mask = self.pixel_keep(keep)
        k = mask.shape[0]
        mask = mask.view(k, mask.shape[1], 1, *x.shape[2:])
        return torch.where(mask, x[None], fill[None]).reshape(k * b, *x.shape[1:])

    def unchanged(self, fill: torch.Tensor) -> torch.Tensor:
        b = self.x.shape[0]
        changed = (self.x != fill).any(1).reshape(b, -1).to(torch.int64)  # (B, P)
        per = torch.zeros(b, self.n_features, dtype=torch.int64, device=self.x.device)
        return per.scatter_add_(1, self.labels.expand(b, -1), changed) == 0

    def spread(self, values: torch.Tensor) -> torch.Tensor:
        values = self._check_values(values)
        b = self.x.shape[0]
        out = values.gather(1, self.labels.expand(b, -1))
        return out.view(b, 1, *self.x.shape[2:]).expand(self.x.shape).contiguous()
