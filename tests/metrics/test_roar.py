"""ROAR/KAR (Hooker et al. 2019): exact degradation on small tensors, and retraining on a tiny problem."""

from __future__ import annotations

import pytest
import torch

from xaicore import XaiCoreError
from xaicore.metrics import Trainer, degrade, make_fill, roar_cell, roar_kar


def test_degrade_exact():
    x = torch.arange(6.0).view(1, 1, 2, 3)
    rel = torch.tensor([[[[3.0, 1.0, 2.0], [2.0, 0.0, 5.0]]]])
    # k = ⌊0.5·6 + ½⌋ = 3. ROAR: 5 (pixel 5), 3 (pixel 0), then the tie 2/2: the lower index (pixel 2)
    roar = degrade(x, rel, 0.5, "roar", fill=9.0)
    assert roar.view(-1).tolist() == [9.0, 1.0, 9.0, 3.0, 4.0, 9.0]
    # KAR removes the least relevant: 0 (pixel 4), 1 (pixel 1), then the tie: pixel 2
    kar = degrade(x, rel, 0.5, "kar", fill=9.0)
    assert kar.view(-1).tolist() == [0.0, 9.0, 9.0, 3.0, 9.0, 5.0]
    assert degrade(x, rel, 0.25, "roar", fill=-1.0).view(-1).tolist() == [-1.0, 1.0, 2.0, 3.0, 4.0, -1.0]  # k = 2
    assert torch.equal(degrade(x, rel, 0.0, "roar"), x)
    assert torch.equal(degrade(x, rel, 1.0, "kar"), torch.full_like(x, 2.5))  # default fill: the channel mean


def test_fills_in_closed_form():
    """mean: the channel means; background: the per-pixel (lower) median of the training images; noise: the
    channel mean plus the channel standard deviation times seeded standard normal draws."""
    train = torch.tensor([[[[0.0, 1.0], [0.0, 4.0]]], [[[0.0, 3.0], [2.0, 4.0]]], [[[1.0, 3.0], [0.0, 8.0]]]])
    mean, background, noise = (make_fill(k, train) for k in ("mean", "background", "noise"))
    assert torch.allclose(mean.value, torch.tensor([26.0 / 12]))
    assert background.value.tolist() == [[[0.0, 3.0], [0.0, 4.0]]]
    flat = train.double().flatten()
    assert torch.allclose(noise.value.double(), torch.stack([flat.mean(), flat.std()]).view(2, 1), atol=1e-6)
    x = torch.full((2, 1, 2, 2), 7.0)
    rel = torch.tensor([1.0, 0.0, 0.0, 2.0]).view(1, 1, 2, 2).expand(2, 1, 2, 2)
    # ROAR at 50 %: pixels 3 and 0 of each input are replaced
    assert degrade(x, rel, 0.5, "roar", background).view(2, 4).tolist() == [[0.0, 7.0, 7.0, 4.0]] * 2
    z = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64).float()
    expect = torch.where(rel.bool() & (rel > 0), noise.value[0] + noise.value[1] * z, x)
    assert torch.equal(degrade(x, rel, 0.5, "roar", noise, seed=5), expect)
    assert not torch.equal(degrade(x, rel, 0.5, "roar", noise, seed=6), expect)  # the seed draws the noise
    out = degrade(x, rel, 0.5, "roar", noise, seed=5)
    assert out[0, 0, 0, 0] != out[1, 0, 0, 0]  # each input draws its own values


def test_unknown_fill_and_wrong_background_are_refused():
    with pytest.raises(XaiCoreError, match="unknown ROAR fill 'median'; expected one of mean, background, noise"):
        make_fill("median", torch.zeros(2, 1, 3, 3))
    with pytest.raises(XaiCoreError, match=r"background fill is \(1, 3, 3\), the inputs are \(1, 4, 4\)"):
        degrade(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4), 0.5, "roar",
                make_fill("background", torch.zeros(2, 1, 3, 3)))


def test_roar_cell_default_fill_is_the_mean_fill():
    """The ``mean`` Fill equals the per-channel values the cell used before fills existed, bit for bit."""
    torch.manual_seed(0)
    xtr, xte = torch.rand(40, 1, 6, 6), torch.rand(10, 1, 6, 6)
    ytr, yte = torch.arange(40) % 2, torch.arange(10) % 2
    rtr, rte = torch.rand(40, 1, 6, 6), torch.rand(10, 1, 6, 6)
    trainer = Trainer(arch="mlp", n_classes=2, epochs=1, batch_size=20)
    kw = dict(fraction=0.5, mode="roar", seed=3, train_fn=trainer)
    assert roar_cell(xtr, ytr, xte, yte, rtr, rte, **kw) == \
        roar_cell(xtr, ytr, xte, yte, rtr, rte, fill=make_fill("mean", xtr), **kw)


def test_degrade_channels_and_batch():
    x = torch.stack([torch.zeros(2, 2, 2), torch.ones(2, 2, 2)])  # (2, 2, 2, 2)
    x[:, 1] += 10.0
    rel = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]],
                        [[[0.0, 0.0], [3.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    out = degrade(x, rel, 0.25, "roar")  # one pixel per input, ranked by relevance summed over channels
    fill = torch.tensor([0.5, 10.5])  # the per-channel means of x
    expected = x.clone()
    expected[0, :, 1, 1] = fill
    expected[1, :, 1, 0] = fill
    assert torch.equal(out, expected)
    with pytest.raises(XaiCoreError, match="fill must be"):
        degrade(x, rel, 0.5, fill=torch.zeros(3))
    with pytest.raises(XaiCoreError, match="unknown mode"):
        degrade(x, rel, 0.5, "keep")
    with pytest.raises(XaiCoreError, match=r"fraction must be in \[0, 1\]"):
        degrade(x, rel, 1.5)


def _tiny_problem(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1×8×8 noise images whose central 2×2 block is lit (class 1) or dark (class 0). The oracle heatmap marks
    that block in every image, so ROAR's removed positions do not themselves encode the class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.2 * torch.rand(n, 1, 8, 8, generator=g)
    x[:, :, 3:5, 3:5] = y.float().view(n, 1, 1, 1)
    rel = torch.zeros_like(x)
    rel[:, :, 3:5, 3:5] = 1.0
    return x, y, rel


def test_roar_kar_on_a_tiny_problem(one_thread):
    (xtr, ytr, rtr), (xte, yte, rte) = _tiny_problem(256, 0), _tiny_problem(200, 1)
    train = Trainer(arch="mlp", n_classes=2, epochs=8, batch_size=32, lr=3e-3)
    kw = dict(fractions=(0.0, 0.1), repeats=2, train_fn=train, seed=0)
    roar = roar_kar(xtr, ytr, xte, yte, rtr, rte, mode="roar", **kw)
    kar = roar_kar(xtr, ytr, xte, yte, rtr, rte, mode="kar", **kw)
    assert roar.accuracy.shape == (2, 2) and roar.fractions == (0.0, 0.1) and not roar.higher_is_better
    assert float(roar.accuracy[0].min()) == 1.0 and float(kar.accuracy.min()) == 1.0  # KAR drops pixels 0..5
    assert float(roar.accuracy[1].max()) < 0.7  # the block is gone: chance
    again = roar_kar(xtr, ytr, xte, yte, rtr, rte, mode="roar", **kw)
    assert torch.equal(again.accuracy, roar.accuracy)  # seeded
