"""RemOve And Retrain and Keep And Retrain (Hooker et al. 2019; survey §4.5.3).

``degrade`` replaces a ``fraction`` t of each input's pixels by the per-channel mean (or another
:class:`Fill`): ROAR the t most relevant (a good heatmap makes the retrained model fail fast), KAR the t least
relevant (a good heatmap keeps what matters: the accuracy stays up). Pixels are ranked by relevance summed
over channels, all channels of a chosen pixel are replaced; ⌊t·H·W + ½⌋ pixels per input; ties are broken by a
stable sort (pixel index order). ``roar_kar`` retrains a fresh model on the degraded training set for each
fraction and repeat (t ∈ {10, 30, 50, 70, 90} %, five models each in the paper) and scores it on the degraded
test set.

What replaces a pixel matters (Hooker et al. use the per-channel mean; on digits with an empty background the mean
is a faint grey that outlines what was removed): :func:`make_fill` builds ``mean``, ``background`` (the
per-pixel training median, which on digits is the empty background: a removed stroke pixel disappears) or
``noise`` (per-pixel Gaussian noise with the training set's per-channel mean and standard deviation, seeded).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from xaicore.errors import XaiCoreError, require_finite
from xaicore.metrics.aopc import check_relevance
from xaicore.metrics.declarations import metric
from xaicore.models import ModelSpec, accuracy, train_model

MODES = ("roar", "kar")
FILLS = ("mean", "background", "noise")


@dataclasses.dataclass(frozen=True)
class Fill:
    """What replaces a removed pixel, from the training set: ``mean`` (``value``: (C,) channel means),
    ``background`` ((C, H, W) per-pixel medians) or ``noise`` ((2, C): channel means and standard deviations;
    each replaced pixel of each input draws its own value, from a generator seeded by ``degrade``'s seed)."""

    kind: str
    value: torch.Tensor

    def values(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """Replacement values broadcastable to ``x`` (B, C, H, W)."""
        b, c, h, w = x.shape
        v = self.value.to(device=x.device, dtype=x.dtype)
        if self.kind == "mean":
            return v.view(1, c, 1, 1)
        if self.kind == "background":
            if v.shape != (c, h, w):
                raise XaiCoreError(f"background fill is {tuple(v.shape)}, the inputs are ({c}, {h}, {w})")
            return v.unsqueeze(0)
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
        return v[0].view(1, c, 1, 1) + v[1].view(1, c, 1, 1) * z


def make_fill(kind: str, train_x: torch.Tensor) -> Fill:
    """The :class:`Fill` ``kind`` (one of :data:`FILLS`) computed on the training images (N, C, H, W)."""
    if kind not in FILLS:
        raise XaiCoreError(f"unknown ROAR fill {kind!r}; expected one of {', '.join(FILLS)}")
    if train_x.ndim != 4:
        raise XaiCoreError(f"a fill is computed on images (N, C, H, W), got {tuple(train_x.shape)}")
    x = train_x.detach()
    if kind == "mean":
        return Fill(kind, channel_mean(x))
    if kind == "background":
        return Fill(kind, x.median(0).values)  # the lower median: a value some training image has
    x64 = x.to(torch.float64)
    return Fill(kind, torch.stack([x64.mean((0, 2, 3)), x64.std((0, 2, 3))]).to(x.dtype))


def degrade(x: torch.Tensor, relevance: torch.Tensor, fraction: float, mode: str = "roar",
            fill: Fill | torch.Tensor | float | None = None, seed: int = 0) -> torch.Tensor:
    """A copy of ``x`` (B, C, H, W) with ⌊fraction·H·W + ½⌋ pixels per input replaced by ``fill``: the most
    relevant (``roar``) or the least relevant (``kar``). ``fill``: a :class:`Fill`, (C,) per-channel values or a
    number; default the per-channel mean of ``x`` (pass the training set's for a test set). ``seed``: the
    ``noise`` fill's draws."""
    check_relevance(x, relevance)
    if x.ndim != 4:
        raise XaiCoreError(f"degrade replaces pixels: x must be (B, C, H, W), got {tuple(x.shape)}")
    if mode not in MODES:
        raise XaiCoreError(f"unknown mode {mode!r}; expected roar or kar")
    if not 0.0 <= fraction <= 1.0:
        raise XaiCoreError(f"fraction must be in [0, 1], got {fraction}")
    b, c, h, w = x.shape
    if isinstance(fill, Fill):
        values = fill.values(x, seed)
    else:
        fill = channel_mean(x) if fill is None else fill
        fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1)
        fill = fill.expand(c) if fill.numel() == 1 else fill
        if fill.shape != (c,):
            raise XaiCoreError(f"fill must be a number or ({c},) per-channel values, got {tuple(fill.shape)}")
        values = fill.view(1, c, 1, 1)
    score = relevance.detach().to(torch.float64).sum(1).reshape(b, h * w)
    order = torch.sort(score, dim=1, descending=mode == "roar", stable=True).indices
    k = int(fraction * h * w + 0.5)
    mask = torch.zeros(b, h * w, dtype=torch.bool, device=x.device)
    mask.scatter_(1, order[:, :k], True)
    mask = mask.view(b, 1, h, w)
    return torch.where(mask, values, x.detach())


def channel_mean(x: torch.Tensor) -> torch.Tensor:
    """(C,) mean of each channel over samples and pixels (Hooker et al.'s replacement value)."""
    return x.detach().to(torch.float64).mean((0, 2, 3)).to(x.dtype)


@dataclasses.dataclass(frozen=True)
class Trainer:
    """The default ``train_fn`` of :func:`roar_kar`: the project's :func:`~xaicore.models.train_model`
    (picklable, unlike a lambda). Called as ``trainer(x, y, seed) -> model``."""

    arch: str | ModelSpec = "cnn"  # a zoo architecture or a torchvision/own network's spec
    n_classes: int = 10
    epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-3

    def __call__(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
        return train_model(self.arch, x, y, n_classes=self.n_classes, epochs=self.epochs,
                           batch_size=self.batch_size, lr=self.lr, seed=seed, progress=False).model


@dataclasses.dataclass(frozen=True)
class RoarResult:
    """``accuracy`` (n_fractions, repeats): test accuracy of the model retrained at each fraction."""

    mode: str
    fractions: tuple[float, ...]
    accuracy: torch.Tensor

    @property
    def higher_is_better(self) -> bool:
        """KAR: a higher accuracy is better (the kept pixels suffice); ROAR: a lower one."""
        return metric(f"{self.mode}_accuracy").higher_is_better


def _check_sets(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
               train_rel: torch.Tensor, test_rel: torch.Tensor) -> None:
    for split, x, y, rel in (("train", train_x, train_y, train_rel), ("test", test_x, test_y, test_rel)):
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise XaiCoreError(f"{split}_y must be ({x.shape[0]},), one label per {split}_x image, got "
                               f"{tuple(y.shape)}")
        if rel.shape != x.shape:
            raise XaiCoreError(f"{split}_rel is {tuple(rel.shape)}, {split}_x is {tuple(x.shape)}: one heatmap per "
                               "image, of its shape")
        require_finite(x, f"{split}_x")
        require_finite(rel, f"{split}_rel")


def roar_kar(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
             train_rel: torch.Tensor, test_rel: torch.Tensor, *, mode: str = "roar",
             fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9), repeats: int = 5,
             train_fn: Callable[[torch.Tensor, torch.Tensor, int], nn.Module] | None = None,
             seed: int = 0) -> RoarResult:
    """ROAR or KAR (Hooker et al. 2019, §3): for each fraction, degrade train and test sets with their
    heatmaps (filled with the training set's per-channel mean), train ``repeats`` models (seeds seed, seed+1,
    …) and record each one's test accuracy."""
    if repeats < 1 or not fractions:
        raise XaiCoreError(f"roar_kar needs repeats >= 1 and fractions, got {repeats} and {tuple(fractions)}")
    _check_sets(train_x, train_y, test_x, test_y, train_rel, test_rel)
    train_fn = train_fn or Trainer(n_classes=int(max(int(train_y.max()), int(test_y.max())) + 1))
    fill = channel_mean(train_x)
    acc = torch.empty(len(fractions), repeats, dtype=torch.float64)
    for i, t in enumerate(fractions):  # each cell is a training run: no loop to vectorise here
        for r in range(repeats):
            acc[i, r] = roar_cell(train_x, train_y, test_x, test_y, train_rel, test_rel, fraction=t, mode=mode,
                                  seed=seed + r, train_fn=train_fn, fill=fill)
    return RoarResult(mode, tuple(float(t) for t in fractions), acc)


def roar_cell(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
              train_rel: torch.Tensor, test_rel: torch.Tensor, *, fraction: float, mode: str, seed: int,
              train_fn: Callable[[torch.Tensor, torch.Tensor, int], nn.Module],
              fill: Fill | torch.Tensor | float | None = None) -> float:
    """One cell of :func:`roar_kar`: degrade both sets at ``fraction`` (``fill`` default: the training set's
    per-channel mean), train a model with ``seed`` and return its accuracy on the degraded test set. Cells are
    independent, so a pipeline may run them side by side. A ``noise`` fill draws the training set's noise from
    ``seed`` and the test set's from ``seed + 1_000_003``."""
    _check_sets(train_x, train_y, test_x, test_y, train_rel, test_rel)
    fill = channel_mean(train_x) if fill is None else fill
    xtr = degrade(train_x, train_rel, fraction, mode, fill, seed=seed)
    xte = degrade(test_x, test_rel, fraction, mode, fill, seed=seed + 1_000_003)
    return accuracy(train_fn(xtr, train_y, seed), xte, test_y)
