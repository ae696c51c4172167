"""The localisation metric (relevance mass accuracy, pointing game) against Quantus and closed forms, and on the
planted watermark: the methods that highlight it rank above ``random``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xaicore
from xaicore.data.planted import WATERMARK_BOX
from xaicore.errors import XaiCoreError
from xaicore.metrics import localization


def box_mask(n: int, size: int = 28) -> torch.Tensor:
    y0, x0, y1, x1 = WATERMARK_BOX
    m = torch.zeros(n, size, size, dtype=torch.bool)
    m[:, y0:y1, x0:x1] = True
    return m


def test_closed_forms():
    r = torch.zeros(3, 2, 4, 4)
    r[0, 0, 0, 0], r[0, 1, 3, 3] = 3.0, 1.0  # 3 of 4 positive units inside, the max inside
    r[1, 0, 0, 1], r[1, 0, 2, 2], r[1, 1, 2, 2] = -5.0, 1.0, 1.0  # negative inside, the max outside
    mask = torch.zeros(3, 4, 4, dtype=torch.bool)
    mask[:, :2, :2] = True
    res = localization(r, mask)  # sample 2 is all zero: no positive mass, a constant map points nowhere
    assert res.mass.tolist() == [0.75, 0.0, 0.0] and res.pointing.tolist() == [1.0, 0.0, 0.0]
    assert torch.equal(localization(r, mask[:, None]).mass, res.mass)


def test_equals_quantus_on_positive_relevance():
    import quantus

    torch.manual_seed(0)
    r = torch.randn(16, 1, 12, 12)
    mask = torch.zeros(16, 1, 12, 12, dtype=torch.bool)
    mask[:, :, 2:7, 3:9] = True
    mask[::3, :, 8:, 8:] = True
    ours = localization(r, mask)
    a = r.clamp(min=0).numpy().astype(np.float64)
    s = mask.numpy().astype(np.float64)
    x, y = np.zeros((16, 1, 12, 12)), np.zeros(16, dtype=int)
    rma = quantus.RelevanceMassAccuracy(normalise=False, abs=False, disable_warnings=True)
    pg = quantus.PointingGame(normalise=False, abs=False, disable_warnings=True)
    np.testing.assert_allclose(ours.mass.numpy(), rma(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s),
                               rtol=1e-12)
    assert ours.pointing.numpy().tolist() == [float(h) for h in pg(model=None, x_batch=x, y_batch=y,
                                                                    a_batch=r.numpy().astype(np.float64),
                                                                    s_batch=s)]
    assert 0 < ours.pointing.mean() < 1


@pytest.mark.slow
def test_methods_that_see_the_watermark_rank_above_random(planted, planted_cnn):
    ds = planted.dataset
    marked = planted.flag("watermark")
    x, target = ds.x_test[marked], ds.y_test[marked]
    mask = box_mask(len(x))
    scores = {}
    for method in ("gradient", "gradient_x_input", "lrp.epsilon_plus", "random"):
        rel = xaicore.explain(planted_cnn, x, target, method=method)
        res = localization(rel, mask)
        scores[method] = (float(res.mass.mean()), float(res.pointing.mean()))
    for method in ("gradient_x_input", "lrp.epsilon_plus"):
        assert scores[method][0] > 5 * scores["random"][0] and scores[method][1] >= 0.5, scores
    assert scores["gradient"][0] > scores["random"][0], scores
    assert scores["random"][0] == pytest.approx(16 / 784, abs=0.01)  # the box's share of the image


def test_errors():
    r = torch.rand(2, 1, 4, 4)
    with pytest.raises(XaiCoreError, match="does not match relevance"):
        localization(r, torch.ones(2, 4, 5, dtype=torch.bool))
    with pytest.raises(XaiCoreError, match="must be boolean"):
        localization(r, torch.ones(2, 4, 4))
    with pytest.raises(XaiCoreError, match="empty for 1 samples"):
        localization(r, torch.stack([torch.ones(4, 4), torch.zeros(4, 4)]).bool())
    bad = r.clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(XaiCoreError, match="NaN"):
        localization(bad, torch.ones(2, 4, 4, dtype=torch.bool))
