"""Packing inputs into forward passes and gathering the target's score from them.

One memory knob, ``forward_batch``: the number of inputs one forward pass takes. When a batch of B samples needs
K modified copies each, ``copies_per_pass`` copies of the whole batch (rows ``j·B + i`` = copy j of sample i)
go through the model at once; on the CPU a pass also stops growing at :data:`PACK_BYTES` of input (past the
caches a larger pass costs more per input: benchmarks/metrics.py case (b), 1.18× the bare passes at 6 MB,
1.39× at 12 MB).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from xaicore._malloc import keep_freed_memory
from xaicore.engine.batches import batch_slices
from xaicore.engine.model import eval_mode
from xaicore.errors import XaiCoreError

#: target scores a perturbation method or metric can compare
SCORES = ("logit", "probability", "log_probability")
#: default inputs per forward pass (CPU-cache sized for 28×28 digits; raise it on a GPU)
FORWARD_BATCH = 256
PACK_BYTES = 4 << 20

Build = Callable[[int, int], torch.Tensor]


def check_forward_batch(forward_batch: Any, owner: str) -> int:
    """``forward_batch`` as a positive int, or one clear error naming ``owner``."""
    if isinstance(forward_batch, bool) or not isinstance(forward_batch, int) or forward_batch < 1:
        raise XaiCoreError(f"{owner}: forward_batch={forward_batch!r} must be a positive number of inputs per "
                           "forward pass")
    return forward_batch


def copies_per_pass(x: torch.Tensor, forward_batch: int, limit: int, *, max_bytes: int | None = PACK_BYTES) -> int:
    """How many copies of the batch ``x`` one forward pass takes: enough to reach ``forward_batch`` inputs, at
    most ``limit``, on the CPU at most ``max_bytes`` of input (None: no byte cap); at least one."""
    n = int(forward_batch) // x.shape[0]
    if max_bytes is not None and x.device.type == "cpu":
        n = min(n, int(max_bytes) // max(1, x.numel() * x.element_size()))
    return max(1, min(n, int(limit)))


def gather_scores(logits: torch.Tensor, target: torch.Tensor, score: str = "logit") -> torch.Tensor:
    """(N,) score of class ``target[n]`` in row n of ``logits`` (N, classes): the logit, its softmax
    probability or its log-softmax."""
    if logits.ndim != 2:
        raise XaiCoreError(f"model output must be (B, classes), got {tuple(logits.shape)}")
    if score not in SCORES:
        raise XaiCoreError(f"unknown score {score!r}; expected one of {', '.join(SCORES)}")
    _check_target_range(target, logits.shape[1])
    return _gather(logits, target, score)


def _gather(logits: torch.Tensor, target: torch.Tensor, score: str) -> torch.Tensor:
    if score == "probability":
        logits = logits.softmax(1)
    elif score == "log_probability":
        logits = logits.log_softmax(1)
    return logits.gather(1, target[:, None].to(logits.device))[:, 0]


def target_scores(model: nn.Module, x: torch.Tensor, target: torch.Tensor, score: str = "logit") -> torch.Tensor:
    """The target's score per sample (B,) in one pass (graph kept: gradient methods differentiate it); raises
    when a target is out of the model's range."""
    logits = model(x)
    if logits.ndim != 2:
        raise XaiCoreError(f"model output must be (B, classes), got {tuple(logits.shape)}")
    return gather_scores(logits, target, score)


def _check_target_range(target: torch.Tensor, n_classes: int) -> None:
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= n_classes):
        raise XaiCoreError(f"target holds class indices outside 0..{n_classes - 1} (the model has {n_classes} "
                           "outputs)")


@torch.no_grad()
def packed_scores(model: nn.Module, x: torch.Tensor, target: torch.Tensor, n_copies: int, build: Build, *,
                  score: str = "logit", forward_batch: int = FORWARD_BATCH,
                  max_bytes: int | None = PACK_BYTES) -> torch.Tensor:
    """(B, K) target scores of K = ``n_copies`` modified copies of each sample of ``x``.

    ``build(k0, k1)`` returns copies k0..k1-1 of the whole batch as one ((k1 − k0)·B, …) tensor, row
    ``j·B + i`` being copy k0 + j of sample i; it is called with consecutive ranges of
    :func:`copies_per_pass` copies. The model runs in eval mode (restored after) without autograd.

    On the CPU the first call keeps glibc from unmapping freed activations (:mod:`xaicore._malloc`): without it
    every pass of a plain Python process pays page faults on fresh pages, 1.6–2× the passes' time at the
    default ``forward_batch`` (docs/benchmarks.md)."""
    b = x.shape[0]
    if x.device.type == "cpu":
        keep_freed_memory()
    if score not in SCORES:
        raise XaiCoreError(f"unknown score {score!r}; expected one of {', '.join(SCORES)}")
    per_pass = copies_per_pass(x, forward_batch, n_copies, max_bytes=max_bytes)
    tgt = target.to(x.device).repeat(per_pass)
    out: torch.Tensor | None = None
    with eval_mode(model):
        for copies in batch_slices(n_copies, per_pass):
            k0, k1 = copies.start, copies.stop
            logits = model(build(k0, k1))
            if out is None:  # the output's shape and the targets' range are checked once, on the first pass
                s = gather_scores(logits, tgt[:(k1 - k0) * b], score)
                out = torch.empty(b, n_copies, dtype=s.dtype, device=s.device)
            else:
                s = _gather(logits, tgt[:(k1 - k0) * b], score)
            out[:, k0:k1] = s.view(k1 - k0, b).T
    if out is None:
        raise XaiCoreError("packed_scores: n_copies must be at least 1")
    return out


def perturbed_scores(model: nn.Module, x: torch.Tensor, target: torch.Tensor, features: Any, keep: torch.Tensor,
                     fill: torch.Tensor, *, score: str = "logit", forward_batch: int = FORWARD_BATCH,
                     max_bytes: int | None = PACK_BYTES) -> torch.Tensor:
    """(B, K) target scores of the K perturbed copies of each sample that ``keep`` describes.

    ``features``: an adapter of :mod:`xaicore.features` built on ``x`` (F features per sample); ``keep``: (K, F)
    masks shared by every sample or (B, K, F) per sample, True = the feature keeps x's value, False = it takes
    ``fill``'s (x's shape, or one sample's). Copies are packed ``forward_batch`` inputs per pass."""
    if keep.ndim == 2:
        keep = keep[:, None]  # (K, 1, F): the same masks for every sample
    elif keep.ndim == 3:
        if keep.shape[0] != x.shape[0]:
            raise XaiCoreError(f"keep (B, K, F) has B={keep.shape[0]} for a batch of {x.shape[0]}")
        keep = keep.transpose(0, 1)  # (K, B, F)
    else:
        raise XaiCoreError(f"keep must be (K, F) or (B, K, F), got shape {tuple(keep.shape)}")
    if keep.shape[-1] != features.n_features:
        raise XaiCoreError(f"keep has {keep.shape[-1]} features, the adapter {features.n_features}")
    keep = keep.to(x.device, torch.bool)
    fill = fill.to(x.device, x.dtype).expand_as(x) if fill.shape != x.shape else fill.to(x.device, x.dtype)
    return packed_scores(model, x, target, keep.shape[0], features.builder(keep, fill),
                         score=score, forward_batch=forward_batch, max_bytes=max_bytes)
