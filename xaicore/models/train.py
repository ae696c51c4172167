"""Deterministic, seeded training (the same code trains the survey's model, the randomized-label control
and, later, the ROAR/KAR retrainings)."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from xaicore.engine import batch_slices, batched
from xaicore.models.spec import ModelSpec, as_spec


@dataclasses.dataclass(frozen=True)
class TrainResult:
    model: nn.Module
    train_accuracy: float
    test_accuracy: float
    losses: tuple[float, ...]


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``x`` in eval mode, in batches."""
    was = model.training
    model.eval()
    try:
        return batched(model, x, size=batch_size)
    finally:
        model.train(was)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict_logits(model, x).argmax(1) == y).float().mean())


def train_model(arch: str | ModelSpec, x: torch.Tensor, y: torch.Tensor, *, n_classes: int, epochs: int,
                batch_size: int, lr: float, seed: int, x_test: torch.Tensor | None = None,
                y_test: torch.Tensor | None = None, desc: str = "train", progress: bool = True) -> TrainResult:
    """Adam on cross-entropy with shuffles and init drawn from ``seed`` only: same seed, same weights (CPU).
    ``arch``: a zoo architecture, or the :class:`~xaicore.models.spec.ModelSpec` of a torchvision/own network."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = as_spec(arch).build(tuple(x.shape[1:]), n_classes)
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        perm = torch.randperm(x.shape[0], generator=gen)
        total = 0.0
        for s in batch_slices(x.shape[0], batch_size):
            idx = perm[s]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.shape[0]
        losses.append(total / x.shape[0])
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    test_acc = accuracy(model, x_test, y_test) if x_test is not None and y_test is not None else float("nan")
    return TrainResult(model, accuracy(model, x, y), test_acc, tuple(losses))
