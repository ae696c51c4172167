"""SSIM and HOG similarities of the randomization sanity checks (Adebayo et al. 2018) against scikit-image,
and every similarity of the model- and data-randomization controls in closed form on a linear model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.feature import hog
from skimage.metrics import structural_similarity

from xaicore import XaiCoreError
from xaicore.metrics import SIMILARITY_MEASURES, similarity
from xaicore.metrics.sanity import HOG_PARAMS, Reference, hog_descriptors, normalised_maps


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=g, dtype=torch.float64)
    return a, 0.6 * a + torch.randn(shape, generator=g, dtype=torch.float64) * 3.0


def test_measures_listed():
    assert SIMILARITY_MEASURES == ("spearman", "spearman_abs", "ssim", "hog")


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (4, 3, 9, 11), (3, 6, 5), (2, 1, 4, 4)])
def test_ssim_equals_skimage(shape):
    a, b = _pair(shape)
    ours = similarity(a, b, "ssim").double().numpy()
    na, nb = normalised_maps(a).numpy(), normalised_maps(b).numpy()
    win = min(7, min(na.shape[1:]) - (1 - min(na.shape[1:]) % 2))
    for i in range(shape[0]):
        rng = max(na[i].max(), nb[i].max()) - min(na[i].min(), nb[i].min())
        expected = structural_similarity(na[i], nb[i], data_range=rng, win_size=win)
        assert ours[i] == pytest.approx(expected, abs=1e-6)


def test_ssim_normalisation_and_closed_forms():
    a, b = _pair((3, 1, 12, 12))
    np.testing.assert_allclose(similarity(a, a, "ssim").numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(similarity(a, 1e-4 * a, "ssim").numpy(), 1.0, atol=1e-6)  # scale drops out
    np.testing.assert_allclose(similarity(a, 7 * b, "ssim").numpy(), similarity(a, b, "ssim").numpy(), atol=1e-6)
    assert float(similarity(a, -a, "ssim").max()) < 0.5  # signs are kept (with |R| it would be 1)
    # the channels are summed first: a map split over two channels is the same heatmap
    two = torch.cat([0.25 * a, 0.75 * a], 1)
    two_b = torch.cat([b, torch.zeros_like(b)], 1)
    np.testing.assert_allclose(similarity(two, two_b, "ssim").numpy(), similarity(a, b, "ssim").numpy(), atol=1e-6)
    assert np.isnan(similarity(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), "ssim").item())


@pytest.mark.parametrize("shape", [(4, 1, 28, 28), (3, 2, 16, 12)])
def test_hog_equals_skimage(shape):
    a, b = _pair(shape, seed=1)
    ours = similarity(a, b, "hog").double().numpy()
    na, nb = normalised_maps(a).numpy(), normalised_maps(b).numpy()
    for i in range(shape[0]):
        expected = np.corrcoef(hog(na[i], **HOG_PARAMS), hog(nb[i], **HOG_PARAMS))[0, 1]
        assert ours[i] == pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(similarity(a, a, "hog").numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(similarity(a, 3 * a, "hog").numpy(), 1.0, atol=1e-6)
    assert float(similarity(a, b, "hog").max()) < 0.99


@pytest.mark.parametrize("size", [(28, 28), (30, 27), (8, 8)])
def test_hog_descriptors_equal_skimage_bitwise(size):
    """The batched HOG equals ``skimage.feature.hog`` bit for bit, on maps where its float32 cell sums and its
    bin bounds matter: orientations exactly on a bin edge (quantised maps), flat and all-zero maps, one-signed
    maps, and sizes that leave pixels outside the last cell."""
    g = np.random.default_rng(3)
    x = g.normal(size=(24, *size))
    x[:4] = 0.0
    x[4:10] = np.round(x[4:10])  # gradients of 0, ±1, ±2: orientations of 0°, 45°, 90°, 135°, arctan(1/2)
    x[10:14] = np.clip(x[10:14], 0, None)
    x[14] = 1.0
    maps = normalised_maps(torch.from_numpy(x))
    ours = hog_descriptors(maps)
    ref = np.stack([hog(m, **HOG_PARAMS) for m in maps.numpy()])
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)


def test_reference_equals_pairwise_similarity():
    """A :class:`Reference` (normalised maps and HOG of the reference computed once) gives ``similarity``'s
    figures for every measure and every compared heatmap."""
    a, b = _pair((6, 1, 16, 16), seed=4)
    ref = Reference(a)
    for other in (b, -a, 2 * b + a):
        for q in SIMILARITY_MEASURES:
            np.testing.assert_array_equal(ref(other, q).numpy(), similarity(a, other, q).numpy(), err_msg=q)


def test_bad_input():
    with pytest.raises(XaiCoreError, match="ssim compares images"):
        similarity(torch.zeros(2, 10), torch.zeros(2, 10), "ssim")
    with pytest.raises(XaiCoreError, match="at least 3x3"):
        similarity(torch.zeros(2, 1, 2, 5), torch.zeros(2, 1, 2, 5), "ssim")
    with pytest.raises(XaiCoreError, match="hog needs heatmaps of at least 8x8"):
        similarity(torch.ones(2, 1, 7, 12), torch.ones(2, 1, 7, 12), "hog")


def test_randomization_similarities_closed_form_on_a_linear_model():
    """f(x) = W2·W1·flatten(x): the gradient of class t is row t of W2·W1 whatever x is, so every control's
    similarity to the trained model is a closed form of the weights alone — for the cascade (top layer first),
    the independent controls and a data-randomization control (another W). G×I multiplies both maps by x."""
    import scipy.stats

    import xaicore
    from xaicore.models.controls import cascading_controls, independent_controls

    g = torch.Generator().manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 8), torch.nn.Linear(8, 4)).double().eval()
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 8), torch.nn.Linear(8, 4)).double().eval()
    for m in (*model[1:], *other[1:]):
        torch.nn.init.normal_(m.weight, generator=g)
    x = torch.rand(5, 1, 6, 6, generator=g, dtype=torch.float64) + 0.1
    target = torch.tensor([0, 1, 2, 3, 1])

    def rows(net):  # (B, 36): row target[i] of W2·W1, the closed-form gradient
        w = (net[2].weight @ net[1].weight).detach().numpy()
        return w[target.numpy()]

    controls = {**cascading_controls(model, seed=0), **independent_controls(model, seed=0), "labels": other}
    assert set(controls) == {"cascade:2", "cascade:1", "independent:2", "independent:1", "labels"}
    ref_grad, ref_gxi = rows(model), rows(model) * x.flatten(1).numpy()
    seen = []
    for name, control in controls.items():
        grad, gxi = rows(control), rows(control) * x.flatten(1).numpy()
        for method, a, b in (("gradient", ref_grad, grad), ("gradient_x_input", ref_gxi, gxi)):
            h_ref = xaicore.explain(model, x, target, method=method)
            h = xaicore.explain(control, x, target, method=method)
            np.testing.assert_allclose(h.flatten(1).numpy(), b, rtol=1e-10, atol=1e-12)
            for measure, fa, fb in (("spearman", a, b), ("spearman_abs", np.abs(a), np.abs(b))):
                expected = [scipy.stats.spearmanr(fa[i], fb[i]).statistic for i in range(5)]
                seen += expected
                np.testing.assert_allclose(similarity(h_ref, h, measure).numpy(), expected, rtol=0, atol=1e-6,
                                           err_msg=f"{name} {method} {measure}")
    assert min(seen) < 0.3 < 0.5 < max(seen)  # the closed forms are not all one value
    # the cascade's first step randomizes the top layer only: W2'·W1, the second W2'·W1'
    w1, w2 = controls["cascade:2"][1].weight, controls["cascade:1"][1].weight
    assert torch.equal(w1, model[1].weight) and not torch.equal(w2, model[1].weight)
    assert torch.equal(controls["cascade:1"][2].weight, controls["cascade:2"][2].weight)
