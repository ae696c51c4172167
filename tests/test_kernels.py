"""The numba and torch twins of the perturbation kernels agree exactly, with each other and with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaicore import XaiCoreError
from xaicore.kernels import get_backend, region_grid

NUMBA = get_backend("numba")
TORCH = get_backend("torch")


def numpy_order(relevance: torch.Tensor, side: int) -> np.ndarray:
    """Independent reference: region sums in float64, stable argsort by decreasing sum."""
    r = relevance.double().numpy()
    if r.ndim == 3:
        r = r[:, None]
    b, _, h, w = r.shape
    out = []
    for i in range(b):
        sums = np.array([r[i, :, y:y + side, x:x + side].sum() for y in range(0, h, side)
                         for x in range(0, w, side)])
        out.append(np.argsort(-sums, kind="stable"))
    return np.stack(out)


def _relevances() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ints = torch.randint(-1, 3, (4, 1, 28, 28), generator=g).float()
    ints[ints < 0] = 0.0  # about half zeros, the rest 1 or 2: many exactly tied region sums
    sparse = torch.zeros(3, 1, 28, 28)
    sparse[:, :, 10:14, 10:14] = 1.0  # one non-zero region, 48 tied at 0
    return {
        "normal32": torch.randn(5, 1, 28, 28, generator=g),
        "normal64": torch.randn(5, 1, 28, 28, generator=g, dtype=torch.float64),
        "rgb_ragged": torch.randn(3, 3, 10, 7, generator=g),
        "no_channel": torch.randn(3, 12, 12, generator=g),
        "ties_int": ints,
        "all_zero": torch.zeros(2, 1, 28, 28),
        "one_region": sparse,
        "constant": torch.full((2, 2, 8, 8), 0.1, dtype=torch.float64),
    }


RELEVANCES = _relevances()


@pytest.mark.parametrize("name", sorted(RELEVANCES))
@pytest.mark.parametrize("side", [1, 3, 4, 9])
def test_region_order_numba_equals_torch_equals_numpy(name, side):
    rel = RELEVANCES[name]
    a = NUMBA.region_order(rel, side)
    b = TORCH.region_order(rel, side)
    assert a.dtype == b.dtype == torch.int64
    assert torch.equal(a, b)
    np.testing.assert_array_equal(a.numpy(), numpy_order(rel, side))


def test_region_order_ties_keep_index_order():
    assert torch.equal(NUMBA.region_order(RELEVANCES["all_zero"], 4), torch.arange(49).expand(2, 49))
    one = NUMBA.region_order(RELEVANCES["one_region"], 4)
    region = (10 // 4) * 7 + 10 // 4  # pixels 10..13 span regions 2 and 3 of each axis
    assert one[0, :4].tolist() == sorted([region, region + 1, region + 7, region + 8])
    assert one[0, 4:].tolist() == [k for k in range(49) if k not in one[0, :4].tolist()]


def test_region_order_float64_near_ties_agree():
    """Mathematically equal region sums of float64 values (the same values, permuted, over 16 orders of
    magnitude) round differently with different summation orders; both twins must still rank them alike."""
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        base = torch.randn(16, generator=g, dtype=torch.float64) * torch.logspace(-8, 8, 16, dtype=torch.float64)
        r = torch.empty(2, 3, 8, 8, dtype=torch.float64)
        for i in range(2):
            for y in (0, 4):
                for x in (0, 4):
                    for c in range(3):
                        r[i, c, y:y + 4, x:x + 4] = base[torch.randperm(16, generator=g)].view(4, 4) * (c + 1)
        assert torch.equal(NUMBA.region_order(r, 4), TORCH.region_order(r, 4))


def test_backend_dispatch():
    assert get_backend("auto", "cpu").name == "numba"
    assert get_backend("torch", "cpu").name == "torch"
    with pytest.raises(XaiCoreError, match="unknown kernel backend 'cuda'"):
        get_backend("cuda")
    with pytest.raises(XaiCoreError, match="numba backend runs on the CPU"):
        get_backend("numba", "meta")
    with pytest.raises(XaiCoreError, match="region must be a positive side length, got 0"):
        region_grid(28, 28, 0)


