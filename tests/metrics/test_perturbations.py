"""The four perturbations of Samek et al. (survey §4.5.1): their values, the exact recursive blur kernels
(numba == torch == scipy), and AOPC with each (backends, batching, lanes, closed forms on a linear model)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as nd
import torch
from conftest import linear_model

import xaicore
from xaicore import XaiCoreError
from xaicore.features.fills import blur_matrix
from xaicore.kernels import get_backend
from xaicore.metrics import PERTURBATIONS, aopc, gaussian_blur, replacement_values

NUMBA, TORCH = get_backend("numba"), get_backend("torch")


def scipy_blur(img: np.ndarray) -> np.ndarray:
    """scipy's Gaussian σ = 3 of each channel of (C, H, W)."""
    return nd.gaussian_filter(img, (0, 3, 3), mode="reflect", truncate=4.0)


def region_slices(reg: int, side: int, w: int) -> tuple[slice, slice]:
    wb = -(-w // side)
    y0, x0 = (reg // wb) * side, (reg % wb) * side
    return slice(y0, y0 + side), slice(x0, x0 + side)


# --- replacement values ----------------------------------------------------------------------------------

def test_dirichlet_values():
    x = torch.rand(64, 2, 28, 28, generator=torch.Generator().manual_seed(0))
    r = replacement_values(x, "dirichlet", seed=0, region=4).double()
    assert r.shape == x.shape and float(r.min()) > 0.0 and float(r.max()) == 1.0
    blocks = r.view(64, 2, 7, 4, 7, 4).permute(0, 1, 2, 4, 3, 5).reshape(-1, 16)
    np.testing.assert_array_equal(blocks.max(1).values.numpy(), 1.0)  # each region's largest value is `high`
    # normalised to sum 1, a region is a Dirichlet(1, ..., 1) draw: Var p_j = (P - 1) / (P² (P + 1)), P = 16
    p = blocks / blocks.sum(1, keepdim=True)
    assert float(p.var()) == pytest.approx(15 / (256 * 17), rel=0.03)  # 100,352 draws
    # keyed per sample, per seed; low/high map the range
    assert torch.equal(replacement_values(x[5:6], "dirichlet", seed=0, region=4), r[5:6].float())
    assert not torch.equal(replacement_values(x, "dirichlet", seed=1, region=4), r.float())
    r2 = replacement_values(x[:2], "dirichlet", seed=0, region=4, low=-1.0, high=3.0)
    torch.testing.assert_close(r2.double(), -1.0 + 4.0 * r[:2], rtol=0, atol=1e-6)
    # edge regions (28 = 9·3 + 1) have their own maximum
    e = replacement_values(x[:1], "dirichlet", seed=0, region=3)
    assert float(e[0, 0, 27:, 27:].max()) == 1.0 and float(e[0, 1, :3, 27:].max()) == 1.0
    with pytest.raises(XaiCoreError, match="pass region="):
        replacement_values(x, "dirichlet", seed=0)


def test_mean_values(images):
    ref = torch.rand(20, 2, 13, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    r = replacement_values(images, "mean", seed=0, reference=ref)
    torch.testing.assert_close(r, ref.mean(0, keepdim=True).expand_as(images), rtol=0, atol=0)
    torch.testing.assert_close(replacement_values(images, "mean", seed=0, reference=ref.mean(0)), r, rtol=0, atol=0)
    # without a reference: the batch's own mean (so it depends on the batch: documented)
    own = replacement_values(images, "mean", seed=0)
    torch.testing.assert_close(own[3], images.mean(0), rtol=0, atol=0)
    assert not torch.equal(replacement_values(images[:1], "mean", seed=0), own[:1])
    with pytest.raises(XaiCoreError, match="reference shape"):
        replacement_values(images, "mean", seed=0, reference=ref[:, :1])


def test_blur_values_equal_scipy(images):
    ref = np.stack([scipy_blur(img) for img in images.numpy()])
    np.testing.assert_allclose(gaussian_blur(images).numpy(), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(replacement_values(images, "blur", seed=0).numpy(), ref, rtol=0, atol=1e-12)
    v = torch.rand(9, dtype=torch.float64)
    np.testing.assert_allclose((blur_matrix(9) @ v).numpy(), nd.gaussian_filter1d(v.numpy(), 3.0), atol=1e-14)


# --- the recursive blur kernels --------------------------------------------------------------------------

@pytest.mark.parametrize("side", [3, 4, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blur_regions_numba_equals_torch_equals_scipy_recursion(images, side, dtype):
    x = images.to(dtype)
    b, _, h, w = x.shape
    n_regions = -(-h // side) * -(-w // side)
    g = torch.Generator().manual_seed(side)
    ranking = torch.stack([torch.randperm(n_regions, generator=g) for _ in range(b)])
    gy, gx = blur_matrix(h), blur_matrix(w)
    a, t = x.clone(), x.clone()
    NUMBA.blur_regions(a, ranking[:, :5], gy, gx, side)  # five steps in one call, then the rest one by one
    TORCH.blur_regions(t, ranking[:, :5], gy, gx, side)
    for k in range(5, n_regions):
        NUMBA.blur_regions(a, ranking[:, k].contiguous(), gy, gx, side)
        TORCH.blur_regions(t, ranking[:, k].contiguous(), gy, gx, side)
    ref = images.numpy().copy()
    for i in range(b):  # the definition: x^(k) = g(x^(k-1), r_k), the blur read from x^(k-1)
        for k in range(n_regions):
            sl = region_slices(int(ranking[i, k]), side, w)
            ref[i][:, sl[0], sl[1]] = scipy_blur(ref[i])[:, sl[0], sl[1]]
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    np.testing.assert_allclose(a.double().numpy(), ref, rtol=0, atol=tol)
    np.testing.assert_allclose(t.double().numpy(), ref, rtol=0, atol=tol)
    # blurring the original once is only an approximation of the recursion: the two differ
    assert np.abs(ref - np.stack([scipy_blur(img) for img in images.numpy()])).max() > 1e-3


@pytest.mark.parametrize("side", [3, 4, 5, 8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blur_sequence_kernel_equals_per_step_kernel(side, dtype):
    """The many-steps kernel (V = Gy·X kept up to date) against the per-step one (each region from the image
    itself) and scipy: every region of 3×29×22 images, edge squares and 4-column blocks with remainders."""
    from xaicore.kernels.numba_kernels import _blur, _blur_sequence

    rng = np.random.default_rng(side)
    x = rng.random((3, 3, 29, 22)).astype(dtype)
    wb = -(-22 // side)
    n_regions = -(-29 // side) * wb
    ranking = np.stack([rng.permutation(n_regions) for _ in range(3)])
    gy, gx = blur_matrix(29).numpy(), blur_matrix(22).numpy()
    seq, step = x.reshape(3, 3, -1).copy(), x.reshape(3, 3, -1).copy()
    _blur_sequence(seq, ranking, gy, gx, side, 22)
    _blur(step, ranking, gy, gx, side, 22)
    ref = x.astype(np.float64)
    for i in range(3):
        for reg in ranking[i]:
            sl = region_slices(int(reg), side, 22)
            ref[i][:, sl[0], sl[1]] = scipy_blur(ref[i])[:, sl[0], sl[1]].astype(dtype)
    seq, step = seq.reshape(x.shape), step.reshape(x.shape)
    if dtype == np.float64:
        np.testing.assert_allclose(seq, ref, rtol=0, atol=1e-12)
        np.testing.assert_allclose(step, ref, rtol=0, atol=1e-12)
    else:  # the two float64 accumulations round to the same float32, or to its neighbour
        np.testing.assert_array_max_ulp(seq, step, maxulp=1)
        np.testing.assert_allclose(seq, ref, rtol=0, atol=1e-6)
    assert np.abs(seq - x).max() > 0.1  # every region was rewritten


def test_copies_per_pass_stops_at_the_byte_budget():
    from xaicore.engine import PACK_BYTES, copies_per_pass

    digits = torch.zeros(8, 1, 28, 28)  # 25 KB: forward_batch decides
    assert copies_per_pass(digits, 256, 100) == 32 and copies_per_pass(digits, 256, 5) == 5
    assert copies_per_pass(digits, 4, 100) == 1  # B > forward_batch: still one copy
    big = torch.zeros(4, 3, 128, 128)  # 786 KB a copy
    assert copies_per_pass(big, 256, 100) == PACK_BYTES // big.nbytes == 5
    assert copies_per_pass(torch.zeros(2, 3, 1024, 1024), 256, 100) == 1  # over the budget: one copy


# --- AOPC with every perturbation ------------------------------------------------------------------------

@pytest.mark.parametrize("perturbation", PERTURBATIONS)
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_aopc_numba_equals_torch(cnn, digits16, perturbation, order):
    x, target = digits16[0][:8], digits16[1][:8]
    relevance = xaicore.explain(cnn, x, target, method="gradient_x_input")
    kw = dict(order=order, perturbation=perturbation, region=4, seed=3, reference=x.flip(0)[:5])
    a = aopc(cnn, x, target, relevance, backend="numba", **kw)
    b = aopc(cnn, x, target, relevance, backend="torch", **kw)
    torch.testing.assert_close(a.curve, b.curve, rtol=0, atol=1e-5)
    assert float(a.curve.std()) > 0 and tuple(a.curve.shape) == (8, 50)


def naive_aopc_curve(model, x, target, relevance, side, perturbation, order, reference=None) -> np.ndarray:
    """The definition, one sample and one step at a time (float64 numpy perturbations, scipy for blur)."""
    b, _, h, w = x.shape
    n_regions = -(-h // side) * -(-w // side)
    rep = replacement_values(x, perturbation, seed=4, region=side, reference=reference).numpy()
    curves = np.empty((b, n_regions + 1))
    for i in range(b):
        sums = [relevance[i][:, sl[0], sl[1]].double().sum().item()
                for sl in (region_slices(r, side, w) for r in range(n_regions))]
        ranking = np.argsort(-np.array(sums), kind="stable")
        ranking = ranking[::-1] if order == "lerf" else ranking
        cur = x[i].numpy().copy()
        for k in range(n_regions + 1):
            with torch.no_grad():
                curves[i, k] = model(torch.from_numpy(cur)[None])[0, target[i]].item()
            if k < n_regions:
                sl = region_slices(int(ranking[k]), side, w)
                src = scipy_blur(cur) if perturbation == "blur" else rep[i]
                cur[:, sl[0], sl[1]] = src[:, sl[0], sl[1]]
    return curves


@pytest.mark.parametrize("perturbation", PERTURBATIONS)
@pytest.mark.parametrize("order", ["morf", "lerf"])
@pytest.mark.parametrize("forward_batch", [1, 12, 256])  # one lane, a few lanes, every step in one pass
def test_aopc_equals_the_definition(images, perturbation, order, forward_batch):
    model = linear_model((2, 13, 10))
    x, target = images, torch.tensor([0, 1, 2, 0, 1, 2])
    relevance = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ref = images.flip(0)
    res = aopc(model, x, target, relevance, order=order, perturbation=perturbation, region=4, seed=4,
               reference=ref, forward_batch=forward_batch)
    expected = naive_aopc_curve(model, x, target, relevance, 4, perturbation, order, reference=ref)
    np.testing.assert_allclose(res.curve.double().numpy(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("perturbation", ["dirichlet", "mean"])
def test_aopc_closed_form_on_a_linear_model(images, perturbation):
    """Linear f and a fixed replacement x': the drop after k steps is Σ_{j ≤ k} w_{r_j} · (x − x')_{r_j}."""
    model = linear_model((2, 13, 10))
    x, target = images, torch.tensor([2, 1, 0, 2, 1, 0])
    ref = images[:3] * 0.5
    rep = replacement_values(x, perturbation, seed=0, region=5, reference=ref)
    w = model[1].weight.detach()[target].view_as(x)
    relevance = w * (x - rep)  # the exact contribution of each input variable
    res = aopc(model, x, target, relevance, perturbation=perturbation, region=5, reference=ref)
    contrib = np.sort(xaicore.kernels.torch_kernels.region_sums(relevance, 5).numpy(), axis=1)[:, ::-1]
    drops = np.concatenate([np.zeros((6, 1)), np.cumsum(contrib, 1)], 1)
    np.testing.assert_allclose(res.drop.double().numpy(), drops, rtol=0, atol=1e-5)
    np.testing.assert_allclose(res.aopc.double().numpy(), drops.mean(1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("perturbation", ["dirichlet", "blur", "mean"])
def test_aopc_batched_equals_per_sample(cnn, digits16, perturbation):
    model, (x, target) = cnn.double(), digits16
    x = x.double()
    relevance = xaicore.explain(model, x, target, method="gradient_x_input")
    ref = x[:4]
    batched = aopc(model, x, target, relevance, perturbation=perturbation, region=7, seed=2, reference=ref)
    single = torch.cat([aopc(model, x[i:i + 1], target[i:i + 1], relevance[i:i + 1], perturbation=perturbation,
                             region=7, seed=2, reference=ref).curve for i in range(0, 16, 5)])
    torch.testing.assert_close(batched.curve[::5], single, rtol=0, atol=1e-6)


def test_mean_without_reference_is_the_batch_mean(cnn, digits16):
    x, target = digits16
    relevance = xaicore.explain(cnn, x, target, method="gradient")
    own = aopc(cnn, x, target, relevance, perturbation="mean")
    torch.testing.assert_close(own.curve, aopc(cnn, x, target, relevance, perturbation="mean", reference=x).curve,
                               rtol=0, atol=0)


def test_aopc_leaves_inputs_and_model_unchanged(cnn, digits16, helpers):
    x, target = digits16
    relevance = xaicore.explain(cnn, x, target, method="gradient")
    before, x0 = helpers.model_state(cnn), x.clone()
    for p in PERTURBATIONS:
        aopc(cnn, x, target, relevance, perturbation=p)
    helpers.assert_states_equal(before, helpers.model_state(cnn))
    assert torch.equal(x, x0)
