"""The features interface and its label-map implementation (every feature a disjoint set of positions)."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

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

    def default_fill(self) -> torch.Tensor | None:
        """The x-shaped values a removed feature takes when the data define them (a column its training mean or
        mode, a token UNK); None for image adapters, whose fill is named (:func:`xaicore.features.fill_for`)."""
        return None

    def pool(self, relevance: torch.Tensor) -> torch.Tensor:
        """(B, F) float64 relevance per feature, summed over the positions of x-shaped ``relevance`` that each
        feature covers (the identity for columns and tokens, whose relevance is per feature)."""
        return self._check_values(relevance.detach()).to(torch.float64)

    def ranking(self, relevance: torch.Tensor, *, descending: bool = True, backend: str = "auto") -> torch.Tensor:
        """(B, F) feature indices by decreasing (``descending``) or increasing relevance of x-shaped
        ``relevance``, ties in feature order; the empty features of a sample (padding) come last."""
        real = torch.arange(self.n_features, device=self.x.device)[None] < self.counts[:, None]
        key = relevance.detach().to(self.x.device, torch.float64)
        key = torch.where(real, key if descending else -key, torch.full_like(key, float("-inf")))
        return torch.sort(key, dim=1, descending=True, stable=True).indices

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

    def pool(self, relevance: torch.Tensor) -> torch.Tensor:
        b = self.x.shape[0]
        flat = relevance.detach().to(self.x.device, torch.float64).sum(1).reshape(b, -1)
        out = torch.zeros(b, self.n_features, dtype=torch.float64, device=self.x.device)
        return out.scatter_add_(1, self.labels.expand(b, -1), flat)

    def spread(self, values: torch.Tensor) -> torch.Tensor:
        values = self._check_values(values)
        b = self.x.shape[0]
        out = values.gather(1, self.labels.expand(b, -1))
        return out.view(b, 1, *self.x.shape[2:]).expand(self.x.shape).contiguous()


class _Lanes:
    """The copies of consecutive passes over a label map, written in place. Lane j of the buffer holds copy
    k0 + j of the batch; the next pass's lane j (copy k0 + L + j, L lanes) is made from it by rewriting the
    positions of the features whose keep differs between the two copies, nothing else: AOPC's steps rewrite one
    region per sample and lane instead of building whole images (benchmarks/aopc.py).

    What changes is planned for many passes at once (:meth:`_plan`: one comparison of the masks, the new values
    gathered in one go), so a pass costs one indexed write. A plan whose passes change more than :attr:`DENSE`
    of the positions (LIME's random masks), a pass out of order or off the lanes' grid (copy c lives in lane
    c mod L), a pass after a shorter one, or a model that wrote into its input (the buffer's version counter
    moved) gets a dense rebuild; every input equals ``apply``'s to the bit."""

    DENSE = 0.25
    PLAN_ENTRIES = 1 << 24  # mask entries (copies × samples × features) compared per plan

    def __init__(self, seg: Segments, keep: torch.Tensor, fill: torch.Tensor) -> None:
        self.seg, self.keep = seg, keep
        x = seg.x
        b = x.shape[0]
        self.fill = fill.expand_as(x)
        self.xv = x.reshape(b, x.shape[1], -1)
        self.fv = self.fill.reshape(b, x.shape[1], -1)
        labels = seg.labels  # (1 or B, P)
        sizes = torch.zeros(labels.shape[0], seg.n_features, dtype=torch.long, device=x.device)
        sizes.scatter_add_(1, labels, torch.ones_like(labels))
        self.sizes, self.starts = sizes, sizes.cumsum(1) - sizes
        self.order = torch.argsort(labels, dim=1, stable=True)  # positions grouped by feature
        self.buf: torch.Tensor | None = None
        self.lanes = self.last = 0
        self.next, self.version = -1, -1
        self.plan: dict[str, Any] | None = None

    def __call__(self, k0: int, k1: int) -> torch.Tensor:
        seg, b, n = self.seg, self.seg.x.shape[0], k1 - k0
        buf = self.buf
        if (buf is None or k0 != self.next or n > self.lanes or self.last != self.lanes or k0 % self.lanes
                or buf._version != self.version):
            if buf is None or n > self.lanes:
                self.lanes, self.plan = n, None
            dense = seg.apply(self.keep[k0:k1], self.fill).view(n, b, *self.xv.shape[1:])
            if buf is None or buf.shape[0] < n:
                buf = self.buf = dense
            else:
                buf[:n] = dense
        else:
            plan = self.plan
            if plan is None or not plan["start"] <= k0 < k1 <= plan["stop"]:
                plan = self.plan = self._plan(k0)
            if plan["dense"]:
                buf[:n] = seg.apply(self.keep[k0:k1], self.fill).view(buf[:n].shape)
            else:
                s0, s1 = int(plan["offsets"][k0 - plan["start"]]), int(plan["offsets"][k1 - plan["start"]])
                self._put(buf, plan, s0, s1, k0)
        self.next, self.last, self.version = k1, n, buf._version
        return buf[:n].view(n * b, *seg.x.shape[1:])

    def _plan(self, start: int) -> dict[str, Any]:
        """What changes from copy c − L to copy c, for the copies ``start`` on (as many as one plan holds): the
        flat buffer index and new value of every changed entry, grouped by copy."""
        b, f, lanes = self.seg.x.shape[0], self.seg.n_features, self.lanes
        per = max(lanes, self.PLAN_ENTRIES // max(1, b * f) // lanes * lanes)
        while True:
            stop = min(self.keep.shape[0], start + per)
            new = self.keep[start:stop].expand(-1, b, -1)
            old = self.keep[start - lanes:stop - lanes].expand(-1, b, -1)
            copy, row, feat = (new != old).nonzero(as_tuple=True)
            label_row = row if self.sizes.shape[0] > 1 else torch.zeros_like(row)
            count = self.sizes[label_row, feat]
            changed = int(count.sum())
            if changed > self.DENSE * (stop - start) * b * self.xv.shape[2]:
                return {"start": start, "stop": stop, "dense": True}
            if changed * self.xv.shape[1] <= self.PLAN_ENTRIES or per == lanes:
                break
            per = max(lanes, per // 2 // lanes * lanes)
        flat, values, entries = self._gather(copy + start, row, feat, label_row, count, new[copy, row, feat])
        per_copy = torch.zeros(stop - start, dtype=torch.long, device=flat.device)
        per_copy.index_add_(0, copy, entries)
        offsets = torch.cat([per_copy.new_zeros(1), per_copy.cumsum(0)]).tolist()
        return {"start": start, "stop": stop, "dense": False, "flat": flat, "values": values, "offsets": offsets}

    def _gather(self, copy: torch.Tensor, row: torch.Tensor, feat: torch.Tensor, label_row: torch.Tensor,
                count: torch.Tensor, on: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(flat index into the buffer, new value, entries per changed feature) of every changed entry, in
        the order of the changed features; copy c lives in lane c mod L."""
        b, c, p = self.xv.shape
        pair = torch.repeat_interleave(torch.arange(count.shape[0], device=count.device), count)
        offset = torch.arange(int(count.sum()), device=count.device) - (count.cumsum(0) - count)[pair]
        pos = self.order[label_row[pair], self.starts[label_row, feat][pair] + offset]  # (N,)
        r = row[pair]
        values = torch.where(on[pair][:, None], self.xv[r, :, pos], self.fv[r, :, pos])  # (N, C)
        base = ((copy[pair] % self.lanes) * b + r) * (c * p) + pos
        flat = base[:, None] + torch.arange(c, device=base.device)[None] * p
        return flat.reshape(-1), values.reshape(-1), count * c

    def _put(self, buf: torch.Tensor, plan: dict[str, Any], s0: int, s1: int, k0: int) -> None:
        buf.view(-1).index_copy_(0, plan["flat"][s0:s1], plan["values"][s0:s1])


class _GridLanes(_Lanes):
    """:class:`_Lanes` over the squares of a grid that tiles the image exactly: a changed feature is one
    ``side``×``side`` block, written as a block (one index per block instead of one per position)."""

    def __init__(self, seg: Segments, keep: torch.Tensor, fill: torch.Tensor, side: int) -> None:
        super().__init__(seg, keep, fill)
        b, c, h, w = seg.x.shape
        self.cols, self.side = w // side, side
        self.x6 = seg.x.reshape(b, c, h // side, side, w // side, side)  # its shape names the grid
        self.x_runs = seg.x.reshape(-1, side)  # x and the fill as runs of side values along a row
        self.f_runs = self.fill.reshape(-1, side)

    def _gather(self, copy: torch.Tensor, row: torch.Tensor, feat: torch.Tensor, label_row: torch.Tensor,
                count: torch.Tensor, on: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The changed blocks as runs of ``side`` contiguous values (one block row of one channel): the run's
        index in the buffer viewed as (−1, side), its values, and C·side runs per block."""
        b, c, hb, side, wb, _ = self.x6.shape
        h, w = hb * side, wb * side
        gy, gx = feat // self.cols, feat % self.cols
        # run (ch, dy) of block (gy, gx) of sample row, counted in runs of side values within one sample
        within = (gy * side * w + gx * side) // side  # (N,)
        runs = (torch.arange(c, device=within.device)[:, None] * (h * w)
                + torch.arange(side, device=within.device)[None, :] * w) // side  # (C, side)
        src = (row * (c * h * w // side) + within)[:, None, None] + runs[None]  # (N, C, side) in x and the fill
        src = src.reshape(-1)
        values = self.f_runs.index_select(0, src)
        if bool(on.any()):  # switched back on: x's values there
            back = on[:, None].expand(-1, c * side).reshape(-1)
            values = torch.where(back[:, None], self.x_runs.index_select(0, src), values)
        lane = (copy % self.lanes) * b  # sample row of lane copy mod L starts at run (lane + row)·C·H·W/side
        dest = src + (lane * (c * h * w // side))[:, None].expand(-1, c * side).reshape(-1)
        return dest, values, torch.full_like(copy, c * side)

    def _put(self, buf: torch.Tensor, plan: dict[str, Any], s0: int, s1: int, k0: int) -> None:
        buf.view(-1, self.side).index_copy_(0, plan["flat"][s0:s1], plan["values"][s0:s1])
