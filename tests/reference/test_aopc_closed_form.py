"""AOPC (Samek et al. 2017; survey §4.5.1) against its closed form on a linear model, in float64 numpy.

For logits = W·vec(x) + b, replacing the pixels P of one region by r changes every logit by W[:, P]·(r_P − x_P),
so the whole perturbation curve is known exactly once the region order is: regions sorted by summed relevance,
decreasing and stable (MoRF), LeRF being the reverse.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import xaicore
from xaicore.kernels import region_grid
from xaicore.metrics import aopc, replacement_values

ATOL = 2e-5  # the curve is float32; values are O(1..10)


def linear_model(shape: tuple[int, int, int], seed: int, n_classes: int = 10) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), n_classes)).double()
        nn.init.normal_(model[1].weight, std=0.5)
        nn.init.normal_(model[1].bias, std=0.5)
    return model.eval()


def regions_np(h: int, w: int, side: int) -> list[np.ndarray]:
    """Flat pixel indices of each side×side region, row-major over the region grid; edge regions smaller."""
    out = []
    for y0 in range(0, h, side):
        for x0 in range(0, w, side):
            ys, xs = np.arange(y0, min(y0 + side, h)), np.arange(x0, min(x0 + side, w))
            out.append((ys[:, None] * w + xs[None, :]).ravel())
    return out


def closed_form(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, rep: torch.Tensor,
                side: int, order: str, score: str = "logit") -> tuple[np.ndarray, np.ndarray]:
    """(curve (B, L+1), aopc (B,)) in float64, without torch: logits = W x + b, updated region by region."""
    W = model[1].weight.detach().numpy().astype(np.float64)  # (K, C*H*W)
    bias = model[1].bias.detach().numpy().astype(np.float64)
    b, c, h, w = x.shape
    xs = x.numpy().astype(np.float64).reshape(b, c, h * w)
    rs = rep.numpy().astype(np.float64).reshape(b, c, h * w)
    rel = relevance.numpy().astype(np.float64).reshape(b, c, h * w)
    regs = regions_np(h, w, side)
    Wc = W.reshape(W.shape[0], c, h * w)
    curves = []
    for i in range(b):
        sums = np.array([rel[i][:, p].sum() for p in regs])
        ranking = np.argsort(-sums, kind="stable")
        if order == "lerf":
            ranking = ranking[::-1]
        logits = W @ xs[i].ravel() + bias
        steps = [logits.copy()]
        for k in ranking:
            p = regs[k]
            logits = logits + (Wc[:, :, p] * (rs[i][:, p] - xs[i][:, p])[None]).sum((1, 2))
            steps.append(logits.copy())
        steps = np.stack(steps)  # (L+1, K)
        if score == "probability":
            e = np.exp(steps - steps.max(1, keepdims=True))
            steps = e / e.sum(1, keepdims=True)
        curves.append(steps[:, int(target[i])])
    curve = np.stack(curves)
    return curve, (curve[:, :1] - curve).mean(1)


@pytest.fixture
def digits8(digit_batch):
    x, target = digit_batch
    return x[:6].double(), target[:6]


@pytest.mark.parametrize("order", ["morf", "lerf"])
@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_aopc_equals_closed_form_on_digits(order, seed, backend, digits8):
    x, target = digits8
    model = linear_model((1, 28, 28), seed=3)
    w = model[1].weight.detach()[target].view_as(x)
    relevance = w * x  # the exact contributions (zero on the empty background: many ties, broken by index)
    rep = replacement_values(x, "uniform", seed=seed)
    res = aopc(model, x, target, relevance, order=order, region=4, seed=seed, backend=backend)
    curve, expected_aopc = closed_form(model, x, target, relevance, rep, 4, order)
    assert res.curve.shape == (6, 50)
    np.testing.assert_allclose(res.curve.numpy(), curve, rtol=0, atol=ATOL)
    np.testing.assert_allclose(res.aopc.numpy(), expected_aopc, rtol=0, atol=ATOL)
    assert res.order == order and res.higher_is_better == (order == "morf")
    np.testing.assert_allclose(res.drop.numpy(), curve[:, :1] - curve, rtol=0, atol=ATOL)


@pytest.mark.parametrize("shape,side", [((1, 8, 8), 3), ((3, 8, 8), 3), ((1, 28, 28), 9), ((2, 10, 7), 4)])
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_aopc_equals_closed_form_with_smaller_edge_regions(shape, side, order):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((5,) + shape, generator=gen, dtype=torch.float64)
    target = torch.tensor([0, 3, 9, 3, 1])
    model = linear_model(shape, seed=4)
    relevance = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    rep = replacement_values(x, "uniform", seed=2)
    res = aopc(model, x, target, relevance, order=order, region=side, seed=2)
    curve, expected_aopc = closed_form(model, x, target, relevance, rep, side, order)
    n_regions = -(-shape[1] // side) * -(-shape[2] // side)
    assert res.curve.shape == (5, n_regions + 1)
    np.testing.assert_allclose(res.curve.numpy(), curve, rtol=0, atol=ATOL)
    np.testing.assert_allclose(res.aopc.numpy(), expected_aopc, rtol=0, atol=ATOL)


@pytest.mark.parametrize("forward_batch", [1, 6, 13, 1000])
def test_aopc_step_packing_is_invisible(forward_batch, digits8):
    """One forward per step (forward_batch <= B), several steps per forward, a ragged last pack."""
    x, target = digits8
    model = linear_model((1, 28, 28), seed=5)
    relevance = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rep = replacement_values(x, "uniform", seed=0)
    res = aopc(model, x, target, relevance, region=4, forward_batch=forward_batch)
    curve, expected_aopc = closed_form(model, x, target, relevance, rep, 4, "morf")
    np.testing.assert_allclose(res.curve.numpy(), curve, rtol=0, atol=ATOL)
    np.testing.assert_allclose(res.aopc.numpy(), expected_aopc, rtol=0, atol=ATOL)


def test_aopc_probability_score_equals_closed_form(digits8):
    x, target = digits8
    model = linear_model((1, 28, 28), seed=6)
    relevance = model[1].weight.detach()[target].view_as(x) * x
    rep = replacement_values(x, "uniform", seed=0)
    res = aopc(model, x, target, relevance, region=4, score="probability")
    curve, expected_aopc = closed_form(model, x, target, relevance, rep, 4, "morf", score="probability")
    np.testing.assert_allclose(res.curve.numpy(), curve, rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.aopc.numpy(), expected_aopc, rtol=0, atol=1e-6)


def test_aopc_orderings_that_are_provable(digits8):
    """With relevance = the exact contribution of each pixel to the drop, w ⊙ (x − r), MoRF removes the
    largest total contribution first: its drop after every k steps is the largest over all orders, LeRF's the
    smallest. So drop_MoRF(k) ≥ drop_random(k) ≥ drop_LeRF(k) for every k, hence the same for the AOPCs; and
    once every region is replaced the score is w·r + b whatever the order."""
    x, target = digits8
    model = linear_model((1, 28, 28), seed=8)
    seed = 3
    rep = replacement_values(x, "uniform", seed=seed)
    w = model[1].weight.detach()[target].view_as(x)
    exact = w * (x - rep)
    rand = xaicore.explain(model, x, target, method="random", seed=11)
    morf = aopc(model, x, target, exact, order="morf", region=4, seed=seed)
    lerf = aopc(model, x, target, exact, order="lerf", region=4, seed=seed)
    rnd = aopc(model, x, target, rand, order="morf", region=4, seed=seed)
    tol = 1e-5
    assert bool((morf.drop >= rnd.drop - tol).all())
    assert bool((rnd.drop >= lerf.drop - tol).all())
    assert bool((morf.aopc > rnd.aopc).all()) and bool((rnd.aopc > lerf.aopc).all())
    # MoRF's drop at step k is the sum of the k largest region contributions
    sums = exact.flatten(1).view(6, 7, 4, 7, 4).sum((2, 4)).flatten(1)
    top = sums.sort(1, descending=True).values.cumsum(1)
    torch.testing.assert_close(morf.drop[:, 1:], top.float(), rtol=0, atol=tol)
    bias = model[1].bias.detach()[target]
    start = (w * x).flatten(1).sum(1) + bias
    end = (w * rep).flatten(1).sum(1) + bias
    for r in (morf, lerf, rnd):
        torch.testing.assert_close(r.curve[:, 0], start.float(), rtol=0, atol=tol)
        torch.testing.assert_close(r.curve[:, -1], end.float(), rtol=0, atol=tol)


def test_region_counts_and_edge_regions():
    grid4 = region_grid(28, 28, 4)
    assert tuple(grid4.shape) == (49, 16)
    grid9 = region_grid(28, 28, 9)
    assert tuple(grid9.shape) == (16, 81)  # 28 = 9 + 9 + 9 + 1: the last row and column of regions are thin
    sizes = [len(set(row.tolist())) for row in grid9]
    assert sizes == [81, 81, 81, 9] * 3 + [9, 9, 9, 1]
    for grid, side in ((grid4, 4), (grid9, 9)):
        expected = regions_np(28, 28, side)
        assert [sorted(set(row.tolist())) for row in grid] == [sorted(p.tolist()) for p in expected]
        cover = np.concatenate([np.unique(row.numpy()) for row in grid])
        assert np.array_equal(np.sort(cover), np.arange(784))  # a partition of the image


def test_aopc_curve_lengths_for_28x28(digits8):
    x, target = digits8
    model = linear_model((1, 28, 28), seed=9)
    relevance = torch.rand(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert tuple(aopc(model, x, target, relevance, region=4).curve.shape) == (6, 50)
    assert tuple(aopc(model, x, target, relevance, region=9).curve.shape) == (6, 17)
    assert tuple(aopc(model, x, target, relevance, region=28).curve.shape) == (6, 2)
