"""The features interface and its label-map implementation (every feature a disjoint set of positions)."""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch

from xaicore.errors import XaiCoreError

#: ``build(k0, k1)``: copies k0..k1-1 of the batch as one ((k1 − k0)·B, …) model input (see ``Features.builder``)
Build = Callable[[int, int], torch.Tensor]


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

    def builder(self, keep: torch.Tensor, fill: torch.Tensor) -> Build:
        """``build(k0, k1)`` = ``apply(keep[k0:k1], fill)`` for the copies a forward pass takes. Adapters whose
        copies share most of their values (AOPC's steps, one feature off at a time) override it to write only
        what changes from one pass to the next; the inputs are the same to the bit."""
        return lambda k0, k1: self.apply(keep[k0:k1], fill)

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

    def builder(self, keep: torch.Tensor, fill: torch.Tensor) -> Build:
        return _Lanes(self, self._check_keep(keep), fill)

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


class _Lanes:
    """The copies of consecutive passes over a label map, written in place. Lane j of the buffer holds copy k0 + j
    of the batch; the next pass's lane j (copy k1 + j) is made from it by rewriting the positions of the features
    whose keep differs between the two copies, nothing else: AOPC's steps rewrite ``lanes`` regions per sample and
    lane instead of building whole images (benchmarks/aopc.py). A pass that changes more than
    :attr:`DENSE` of the positions, a pass out of order, or a model that wrote into its input (the buffer's
    version counter moved) gets a dense rebuild; every input equals ``apply``'s to the bit."""

    DENSE = 0.25

    def __init__(self, seg: Segments, keep: torch.Tensor, fill: torch.Tensor) -> None:
        self.seg, self.keep = seg, keep
        x = seg.x
        b = x.shape[0]
        self.xv = x.reshape(b, x.shape[1], -1)
        self.fv = fill.expand_as(x).reshape(b, x.shape[1], -1)
        labels = seg.labels  # (1 or B, P)
        sizes = torch.zeros(labels.shape[0], seg.n_features, dtype=torch.long, device=x.device)
        sizes.scatter_add_(1, labels, torch.ones_like(labels))
        self.sizes, self.starts = sizes, sizes.cumsum(1) - sizes
        self.order = torch.argsort(labels, dim=1, stable=True)  # positions grouped by feature
        self.buf: torch.Tensor | None = None
        self.held = torch.empty(0)
        self.next, self.version = -1, -1

    def __call__(self, k0: int, k1: int) -> torch.Tensor:
        seg, b, n = self.seg, self.seg.x.shape[0], k1 - k0
        new = self.keep[k0:k1].expand(n, b, -1)
        buf = self.buf
        if buf is None or k0 != self.next or n > self.held.shape[0] or buf._version != self.version:
            buf = self.buf = seg.apply(new, self.fv.view_as(seg.x)).view(n, b, *self.xv.shape[1:])
            self.held = new.clone()
        else:
            self._rewrite(buf, new)
        self.next, self.version = k1, buf._version
        return buf[:n].view(n * b, *seg.x.shape[1:])

    def _rewrite(self, buf: torch.Tensor, new: torch.Tensor) -> None:
        n = new.shape[0]
        lane, row, feat = (new != self.held[:n]).nonzero(as_tuple=True)
        label_row = row if self.sizes.shape[0] > 1 else torch.zeros_like(row)
        count = self.sizes[label_row, feat]
        total = int(count.sum())
        if total > self.DENSE * n * self.xv.shape[0] * self.xv.shape[2]:
            buf[:n] = self.seg.apply(new, self.fv.view_as(self.seg.x)).view(buf[:n].shape)
        elif total:
            pair = torch.repeat_interleave(torch.arange(count.shape[0], device=count.device), count)
            offset = torch.arange(total, device=count.device) - (count.cumsum(0) - count)[pair]
            pos = self.order[label_row[pair], self.starts[label_row, feat][pair] + offset]
            r, on = row[pair], new[lane[pair], row[pair], feat[pair]]
            buf[lane[pair], r, :, pos] = torch.where(on[:, None], self.xv[r, :, pos], self.fv[r, :, pos])
        self.held[:n] = new
