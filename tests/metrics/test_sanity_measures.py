"""SSIM and HOG similarities of the randomization sanity checks (Adebayo et al. 2018) against scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.feature import hog
from skimage.metrics import structural_similarity

from xaicore import XaiCoreError
from xaicore.metrics import SIMILARITY_MEASURES, similarity
from xaicore.metrics.sanity import HOG_PARAMS, normalised_maps


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


def test_bad_input():
    with pytest.raises(XaiCoreError, match="ssim compares images"):
        similarity(torch.zeros(2, 10), torch.zeros(2, 10), "ssim")
    with pytest.raises(XaiCoreError, match="at least 3x3"):
        similarity(torch.zeros(2, 1, 2, 5), torch.zeros(2, 1, 2, 5), "ssim")
