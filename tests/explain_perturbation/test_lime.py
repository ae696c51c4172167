"""LIME on images (Ribeiro et al. 2016, eqs. 1-2; survey §6.1): the surrogate against the ``lime`` package's
``LimeBase`` on the same neighbourhood, the whole method against a neighbourhood rebuilt by hand and
scikit-learn's Ridge, batching and seeding, superpixels, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lime.lime_base import LimeBase
from sklearn.linear_model import Ridge
from sklearn.metrics import pairwise_distances

import xaicore
from tests.tolerance import logit_atol
from tests.zoo_models import seeded_zoo_model
from xaicore import XaiCoreError
from xaicore.explain.perturbation.lime import lime_masks, lime_surrogate
from xaicore.features import Superpixels

pytestmark = pytest.mark.usefixtures("one_thread")

KERNEL_WIDTH = 0.25


def lime_kernel(d: np.ndarray, kernel_width: float = KERNEL_WIDTH) -> np.ndarray:
    """The ``lime`` package image explainer's kernel."""
    return np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))


def cosine_to_first(data: np.ndarray) -> np.ndarray:
    """The ``lime`` package image explainer's distances: cosine distance of each row to row 0."""
    return pairwise_distances(data, data[0:1], metric="cosine").ravel()


def neighbourhood(counts: list[int], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks z (B, n, F) with row 0 all ones, one all-zero row, padded columns False, and scores y (B, n) of a
    noisy linear function of the masks (a different one per sample)."""
    rng = np.random.default_rng(seed)
    f_max = max(counts)
    z = np.zeros((len(counts), n, f_max), dtype=bool)
    y = np.zeros((len(counts), n))
    for i, f in enumerate(counts):
        zi = rng.integers(0, 2, size=(n, f)).astype(bool)
        zi[0] = True
        zi[1] = False  # at cosine distance 1 (scikit-learn's convention for a zero vector)
        z[i, :, :f] = zi
        y[i] = 0.4 + zi @ rng.normal(0, 0.2, size=f) + rng.normal(0, 0.05, size=n)
    return torch.from_numpy(z), torch.from_numpy(y)


def lime_reference(z: np.ndarray, y: np.ndarray, num_features: int, selection: str
                   ) -> tuple[np.ndarray, float, float]:
    """(coef over z's columns, intercept, weighted R²) from ``LimeBase.explain_instance_with_data``."""
    data = z.astype(np.float64)
    labels = np.stack([np.zeros_like(y), y], 1)  # label 1 picks the column of y
    intercept, exp, score, local_pred = LimeBase(lime_kernel).explain_instance_with_data(
        data, labels, cosine_to_first(data), 1, num_features, feature_selection=selection, model_regressor=None)
    coef = np.zeros(data.shape[1])
    for feature, value in exp:
        coef[feature] = value
    assert len(exp) == min(num_features, data.shape[1]) or selection == "none"
    np.testing.assert_allclose(local_pred[0], intercept + coef.sum(), rtol=0, atol=1e-12)
    return coef, float(intercept), float(score)


COUNTS = [[9, 9, 9], [12, 5, 8, 2]]


@pytest.mark.parametrize("counts", COUNTS)
def test_surrogate_equals_lime_base_without_selection(counts):
    z, y = neighbourhood(counts, 50, seed=sum(counts))
    coef, intercept, r2 = lime_surrogate(z, y, torch.tensor(counts), kernel_width=KERNEL_WIDTH, alpha=1.0)
    assert coef.dtype == torch.float64 and coef.shape == (len(counts), max(counts))
    for i, f in enumerate(counts):
        ref_coef, ref_intercept, ref_r2 = lime_reference(z[i, :, :f].numpy(), y[i].numpy(), f, "none")
        np.testing.assert_allclose(coef[i, :f].numpy(), ref_coef, rtol=0, atol=1e-6)
        np.testing.assert_allclose(float(intercept[i]), ref_intercept, rtol=0, atol=1e-6)
        np.testing.assert_allclose(float(r2[i]), ref_r2, rtol=0, atol=1e-6)
        assert torch.equal(coef[i, f:], torch.zeros_like(coef[i, f:]))  # padded features get 0
        assert np.abs(ref_coef).max() > 0.05 and 0.3 < ref_r2 < 1


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("counts", COUNTS)
def test_surrogate_equals_lime_base_with_highest_weights(counts, k):
    z, y = neighbourhood(counts, 60, seed=7 + k)
    coef, intercept, r2 = lime_surrogate(z, y, torch.tensor(counts), kernel_width=KERNEL_WIDTH, alpha=1.0,
                                         n_features=k)
    for i, f in enumerate(counts):
        ref_coef, ref_intercept, ref_r2 = lime_reference(z[i, :, :f].numpy(), y[i].numpy(), k, "highest_weights")
        np.testing.assert_allclose(coef[i, :f].numpy(), ref_coef, rtol=0, atol=1e-6)
        np.testing.assert_allclose(float(intercept[i]), ref_intercept, rtol=0, atol=1e-6)
        np.testing.assert_allclose(float(r2[i]), ref_r2, rtol=0, atol=1e-6)
        assert int((coef[i] != 0).sum()) == min(k, f)  # exactly the selected features are fitted
        assert torch.equal(coef[i, f:], torch.zeros_like(coef[i, f:]))


@pytest.mark.parametrize("kernel_width", [0.1, 1.0])
def test_surrogate_equals_lime_base_for_other_kernel_widths(kernel_width):
    counts = [7, 4]
    z, y = neighbourhood(counts, 40, seed=3)
    coef, intercept, r2 = lime_surrogate(z, y, torch.tensor(counts), kernel_width=kernel_width, alpha=1.0)
    for i, f in enumerate(counts):
        data = z[i, :, :f].numpy().astype(np.float64)
        labels = np.stack([y[i].numpy(), np.zeros(40)], 1)  # label 0 this time
        ref_intercept, exp, ref_r2, _ = LimeBase(lambda d: lime_kernel(d, kernel_width)).explain_instance_with_data(
            data, labels, cosine_to_first(data), 0, f, feature_selection="none")
        ref_coef = np.zeros(f)
        for feature, value in exp:
            ref_coef[feature] = value
        np.testing.assert_allclose(coef[i, :f].numpy(), ref_coef, rtol=0, atol=1e-6)
        np.testing.assert_allclose([float(intercept[i]), float(r2[i])], [ref_intercept, ref_r2], rtol=0, atol=1e-6)


# --- the whole method against a neighbourhood rebuilt by hand ---------------------------------------------------

@pytest.fixture
def batch(digit_batch) -> tuple[torch.Tensor, torch.Tensor]:
    x, target = digit_batch
    return x[:3].clone(), target[:3].clone()


def amplification(data: np.ndarray, weights: np.ndarray) -> float:
    """max_f ‖A_f‖₂ of the weighted ridge's linear map coef = A·y (scikit-learn's Ridge, alpha 1, with
    intercept): how far errors in the scores move a coefficient. The scores' errors come from separate roundings
    and add in quadrature; each is bounded by logit_atol, itself ~5 times the largest error measured."""
    operator = Ridge(alpha=1.0).fit(data, np.eye(len(data)), sample_weight=weights).coef_  # (N, F): A.T
    return float(np.sqrt((operator ** 2).sum(0)).max())


def by_hand(model, x: torch.Tensor, target: torch.Tensor, labels: np.ndarray, n_samples: int, seed: int
            ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """(relevance (B, H, W), weighted R² (B,), the relevance's tolerance, the R²'s (B,)) rebuilt independently:
    LIME's masks, each off segment filled with its own mean (numpy), the model's probabilities, the package's
    kernel and scikit-learn's weighted Ridge.

    The probabilities come from passes over other batches than LIME's, so they differ in their last bits (a
    probability errs at most as its logits do, tests/tolerance.py); the surrogate's coefficients are linear in
    them, coef = A·y, so they err by about max_f ‖A_f‖₂ times that (:func:`amplification`); R² errs by about twice the
    probabilities' error over their weighted spread."""
    b = x.shape[0]
    tol, r2_tol = 0.0, np.zeros(b)
    counts = [int(labels[i].max()) + 1 for i in range(b)]
    z = lime_masks(x, torch.tensor(counts), max(counts), n_samples, seed).numpy()
    relevance = np.zeros((b, *x.shape[2:]))
    r2 = np.zeros(b)
    for i in range(b):
        f = counts[i]
        img = x[i].double().numpy()  # (C, H, W)
        fudged = img.copy()
        for s in range(f):
            seg = labels[i] == s
            fudged[:, seg] = img[:, seg].mean(1, keepdims=True)
        zi = z[i, :, :f]
        assert zi[0].all() and not z[i, :, f:].any()
        keep = zi[:, labels[i]]  # (N, H, W): whether each pixel keeps its value
        inputs = torch.where(torch.from_numpy(keep)[:, None], torch.from_numpy(img)[None],
                             torch.from_numpy(fudged)[None]).to(x.dtype)
        with torch.no_grad():
            y = model(inputs).softmax(1)[:, int(target[i])].double().numpy()
        data = zi.astype(np.float64)
        weights = lime_kernel(cosine_to_first(data))
        ridge = Ridge(alpha=1.0).fit(data, y, sample_weight=weights)
        relevance[i] = ridge.coef_[labels[i]]
        r2[i] = ridge.score(data, y, sample_weight=weights)
        y_err = logit_atol(model, inputs)
        tol = max(tol, amplification(data, weights) * y_err)
        spread = np.sqrt(np.average((y - np.average(y, weights=weights)) ** 2, weights=weights))
        r2_tol[i] = max(1e-6, 4 * y_err / spread)
    return relevance, r2, tol, r2_tol


def grid_labels(b: int, cell: int) -> np.ndarray:
    lab = (np.arange(28)[:, None] // cell) * (-(-28 // cell)) + np.arange(28)[None, :] // cell
    return np.broadcast_to(lab, (b, 28, 28))


@pytest.mark.parametrize("cell", [7, 6])
def test_grid_lime_equals_a_neighbourhood_rebuilt_by_hand(cell, batch):
    model = seeded_zoo_model("cnn", seed=3).eval()
    x, target = batch
    out = xaicore.explanation(model, x, target, method="lime", features="grid", cell=cell, n_samples=60,
                              score="probability")
    rel, r2, tol, r2_tol = by_hand(model, x, target, grid_labels(x.shape[0], cell), 60, seed=0)
    assert out.relevance.dtype == torch.float32
    scale = np.abs(rel).max()
    assert scale > 1e-4 and tol < 1e-2 * scale
    np.testing.assert_allclose(out.relevance[:, 0].double().numpy(), rel, rtol=0, atol=tol)
    assert torch.equal(out.relevance[:, 0:1].expand_as(out.relevance), out.relevance)
    assert (np.abs(out.extras["surrogate_r2"].double().numpy() - r2) <= r2_tol).all()


def test_slic_lime_with_different_segment_counts_equals_a_neighbourhood_rebuilt_by_hand(batch):
    model = seeded_zoo_model("resnet", seed=4).eval()
    x, target = batch
    labels = Superpixels(x, "slic", n_segments=20).labels.view(-1, 28, 28).numpy()
    counts = labels.reshape(len(labels), -1).max(1) + 1
    assert len(set(counts.tolist())) > 1, "the test wants samples with different segment counts"
    out = xaicore.explanation(model, x, target, method="lime", features="slic", n_segments=20, n_samples=60)
    rel, r2, tol, r2_tol = by_hand(model, x, target, labels, 60, seed=0)
    scale = np.abs(rel).max()
    assert scale > 1e-4 and tol < 1e-2 * scale
    np.testing.assert_allclose(out.relevance[:, 0].double().numpy(), rel, rtol=0, atol=tol)
    assert (np.abs(out.extras["surrogate_r2"].double().numpy() - r2) <= r2_tol).all()


def test_batched_equals_per_sample_and_seeding(batch):
    model = seeded_zoo_model("vgg_bn", seed=5).eval()
    x, target = batch
    kw = dict(method="lime", features="grid", cell=7, n_samples=40)
    batched = xaicore.explanation(model, x, target, seed=3, **kw)
    singles = [xaicore.explanation(model, x[i:i + 1], target[i:i + 1], seed=3, **kw) for i in range(x.shape[0])]
    single_rel = torch.cat([s.relevance for s in singles])
    scale = float(single_rel.abs().max())
    # other batches round the scores otherwise (tests/tolerance.py); the surrogate is linear in them
    data = lime_masks(x, torch.full((3,), 16), 16, 40, 3).double().numpy()
    tol = max(amplification(d, lime_kernel(cosine_to_first(d))) for d in data) * logit_atol(model, x)
    assert 0 < tol < 1e-2 * scale
    torch.testing.assert_close(batched.relevance, single_rel, rtol=0, atol=tol)
    r2 = torch.cat([s.extras["surrogate_r2"] for s in singles])
    assert float((batched.extras["surrogate_r2"] - r2).abs().max()) < 1e-3
    again = xaicore.explanation(model, x, target, seed=3, **kw)
    assert torch.equal(batched.relevance, again.relevance)
    assert torch.equal(batched.extras["surrogate_r2"], again.extras["surrogate_r2"])
    other = xaicore.explanation(model, x, target, seed=4, **kw)
    assert not torch.allclose(batched.relevance, other.relevance)
    # the masks are drawn per (seed, sample content): the same for a sample wherever it sits in the batch
    counts = torch.full((3,), 16)
    perm = torch.tensor([2, 0, 1])
    assert torch.equal(lime_masks(x, counts, 16, 40, 3)[perm], lime_masks(x[perm], counts, 16, 40, 3))
    assert not torch.equal(lime_masks(x, counts, 16, 40, 3), lime_masks(x, counts, 16, 40, 4))


def test_masks_are_uniform_draws_with_the_all_ones_row_first(batch):
    x, _ = batch
    counts = torch.tensor([10, 4, 7])
    z = lime_masks(x, counts, 10, 400, seed=1)
    assert z.dtype == torch.bool and z.shape == (3, 400, 10)
    assert bool(z[:, 0, :].sum(1).eq(counts).all())
    for i, f in enumerate(counts.tolist()):
        assert not z[i, :, f:].any()
        frac = z[i, 1:, :f].double().mean().item()
        assert abs(frac - 0.5) < 0.05


# --- superpixels ------------------------------------------------------------------------------------------------

def test_slic_superpixels_label_each_sample_zero_to_its_count(digit_batch):
    x, _ = digit_batch
    x = x[:4]
    sp = Superpixels(x, "slic", n_segments=20)
    labels = sp.labels.view(4, -1)
    assert sp.n_features == int(sp.counts.max())
    for i in range(4):
        f = int(sp.counts[i])
        assert f > 1
        assert torch.equal(torch.unique(labels[i]), torch.arange(f))
    # spread gives every pixel its segment's value
    values = torch.arange(4 * sp.n_features, dtype=torch.float64).view(4, -1)
    spread = sp.spread(values)
    assert torch.equal(spread[:, 0].reshape(4, -1), values.gather(1, labels))


def test_a_segmentation_with_one_segment_is_refused():
    """A constant image: quickshift merges it into one segment; SLIC's 2 seeds on a square image become one."""
    x = torch.full((2, 1, 28, 28), 0.5)
    with pytest.raises(XaiCoreError, match="quickshift segmentation of sample 0 yields one segment"):
        Superpixels(x, "quickshift")
    with pytest.raises(XaiCoreError, match="slic segmentation of sample 0 yields one segment"):
        Superpixels(x, "slic", n_segments=2)
    model = seeded_zoo_model("cnn", seed=0).eval()
    with pytest.raises(XaiCoreError, match="one segment"):
        xaicore.explain(model, x, torch.tensor([0, 1]), method="lime", features="quickshift", n_samples=30)
    # SLIC with more seeds cuts even a constant image by position alone (a grid of segments, not an error)
    assert int(Superpixels(x, "slic", n_segments=20).counts.min()) > 1


# --- errors -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("params", "match"), [
    ({"features": "grid", "cell": 7, "n_samples": 16}, r"n_samples=16 is too small.*\(16 here\)"),
    ({"features": "grid", "cell": 7, "n_samples": 5}, "n_samples=5"),
    ({"features": "nope"}, "unknown features 'nope'"),
    ({"features": "grid", "fill": "nope"}, "unknown fill 'nope'"),
    ({"features": "grid", "score": "nope"}, "unknown score 'nope'"),
    ({"features": "grid", "kernel_width": 0.0}, "kernel_width=0.0"),
    ({"features": "grid", "cell": 7, "n_samples": 40, "n_features": 17}, "n_features=17"),
])
def test_bad_parameters_raise_naming_the_parameter(params, match, batch):
    model = seeded_zoo_model("cnn", seed=0).eval()
    x, target = batch
    with pytest.raises(XaiCoreError, match=match):
        xaicore.explain(model, x, target, method="lime", **params)


def test_just_enough_samples_run(batch):
    model = seeded_zoo_model("cnn", seed=0).eval()
    x, target = batch
    out = xaicore.explanation(model, x, target, method="lime", features="grid", cell=7, n_samples=17)
    assert torch.isfinite(out.relevance).all() and float(out.relevance.abs().max()) > 0


# --- your own segmentation and the default's reach (issue 29, point 3) -----------------------------------------

def test_a_user_segmentation_equals_a_neighbourhood_rebuilt_by_hand(batch):
    """feature_mask as Captum's (B, H, W) integer labels, any numbering, one map per sample; a callable as the
    lime package's segmentation_fn gives the same heatmaps."""
    model = seeded_zoo_model("cnn", seed=3).eval()
    x, target = batch
    rows, cols = np.arange(28)[:, None], np.arange(28)[None, :]
    maps = np.stack([(rows // 7) * 4 + cols // 7, (rows // 14) * 2 + cols // 14, (rows >= cols).astype(int)])
    numbered = torch.from_numpy(maps * 10 + 5)  # labels need not be 0..F-1
    out = xaicore.explanation(model, x, target, method="lime", feature_mask=numbered, n_samples=60)
    rel, r2, tol, r2_tol = by_hand(model, x, target, maps, 60, seed=0)
    scale = np.abs(rel).max()
    assert scale > 1e-4 and tol < 1e-2 * scale
    np.testing.assert_allclose(out.relevance[:, 0].double().numpy(), rel, rtol=0, atol=tol)
    assert (np.abs(out.extras["surrogate_r2"].double().numpy() - r2) <= r2_tol).all()
    calls = iter(range(3))
    fn = xaicore.explanation(model, x, target, method="lime", n_samples=60,
                             feature_mask=lambda img: maps[next(calls)] if img.shape == (28, 28, 1) else None)
    assert torch.equal(fn.relevance, out.relevance)
    shared = xaicore.explain(model, x, target, method="lime", feature_mask=numbered[:1, None], n_samples=60)
    # sample 0's copies share their passes with other samples' copies here: equal up to the passes' rounding
    torch.testing.assert_close(shared[0].double(), out.relevance[0].double(), rtol=0, atol=tol)


@pytest.mark.parametrize(("mask", "match"), [
    (torch.zeros(3, 2, 28, 28, dtype=torch.long), r"one label per pixel, shared by the channels"),
    (torch.zeros(2, 28, 28, dtype=torch.long), r"does not fit the batch \(3, 1, 28, 28\)"),
    (torch.rand(3, 28, 28), "integer labels"),
    (torch.zeros(3, 28, 28, dtype=torch.long), "sample 0 has a single segment"),
    (lambda img: np.zeros((4, 4), dtype=int), r"returned labels of shape \(4, 4\); it must return one label per "
                                              r"pixel, \(28, 28\)"),
])
def test_bad_user_segmentations_are_refused(mask, match, batch):
    model = seeded_zoo_model("cnn", seed=0).eval()
    x, target = batch
    with pytest.raises(XaiCoreError, match=match):
        xaicore.explain(model, x, target, method="lime", feature_mask=mask, n_samples=60)
    with pytest.raises(XaiCoreError, match="either features='grid' or feature_mask"):
        xaicore.explain(model, x, target, method="lime", features="grid", feature_mask=torch.zeros(3, 28, 28).long())


def shapes(n: int, side: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Flat-coloured squares on flat backgrounds: SLIC at compactness 0.1 compares their Lab colours only and
    finds 1-3 segments."""
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(n, channels, side, side)
    for i in range(n):
        x[i] = torch.rand(channels, 1, 1, generator=g)
        y0, x0 = torch.randint(0, side // 2, (2,), generator=g).tolist()
        x[i, :, y0:y0 + side // 3, x0:x0 + side // 3] = torch.rand(channels, 1, 1, generator=g)
    return x


@pytest.mark.parametrize(("x", "at_least"), [
    (shapes(6, 32), 12), (shapes(2, 224), 12), (0.5 + 0.02 * shapes(6, 32), 12), (shapes(4, 28, 1), 12),
    (0.5 + 0.02 * torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)), 12),
], ids=["shapes32", "shapes224", "low_contrast_shapes", "grey_shapes28", "low_contrast_noise64"])
def test_default_slic_finds_enough_segments_from_28_to_224_px(x, at_least):
    """The default segmentation (slic, n_segments 50) raises SLIC's compactness where a sample has fewer than a
    quarter of n_segments segments."""
    sp = Superpixels(x, "slic", n_segments=50)
    assert int(sp.counts.min()) >= at_least


def test_default_lime_runs_on_32px_rgb_shapes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3)).eval()  # every pixel counts
    x = shapes(4, 32)
    e = xaicore.explanation(model, x, torch.tensor([0, 1, 2, 0]), method="lime", n_samples=200)
    per_image = [torch.unique(e.relevance[i, 0]).numel() for i in range(4)]
    assert min(per_image) >= 4, per_image
