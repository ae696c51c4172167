"""Gradient methods on tabular and text models: explained at the embedding's output, pooled per column/token."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xaicore
from xaicore.data.tabular import TITANIC_ATTRIBUTES, TITANIC_LOGODDS, titanic
from xaicore.data.text import sentiment
from xaicore.errors import NotApplicable
from xaicore.models.embedding import build_embedding_model, titanic_logistic


@pytest.fixture(scope="module")
def text_model():
    ds = sentiment(200, seed=1)
    torch.manual_seed(0)
    return ds, build_embedding_model("bag", ds).eval()


def _manual(model, x, target, times_input: bool) -> torch.Tensor:
    e = model.embed(x).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model.head(e).gather(1, target[:, None]).sum(), e)
    return model.embed.pool(g * e if times_input else g)


@pytest.mark.parametrize("method, times_input", [("gradient", False), ("gradient_x_input", True)])
def test_text_gradients_are_taken_at_the_embedding_and_summed_per_token(text_model, method, times_input):
    ds, model = text_model
    x, t = ds.x_test[:6], ds.y_test[:6]
    rel = xaicore.explain(model, x, t, method=method)
    assert rel.shape == x.shape and rel.dtype == torch.float32
    torch.testing.assert_close(rel, _manual(model, x, t, times_input).masked_fill(x == 0, 0.0))
    assert (rel[x == 0] == 0).all()  # padding is no token: no relevance


def test_text_integrated_gradients_complete_at_the_embedding(text_model):
    ds, model = text_model
    x, t = ds.x_test[:4], ds.y_test[:4]
    rel = xaicore.explain(model, x, t, method="integrated_gradients", n_steps=256)
    with torch.no_grad():
        e = model.embed(x)
        gap = model.head(e).gather(1, t[:, None])[:, 0] - model.head(torch.zeros_like(e)).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(rel.sum(1), gap, atol=2e-3, rtol=1e-3)


def test_titanic_gradient_x_input_is_each_values_log_odds_effect():
    """On the generating logistic model the survived logit is intercept + Σ effects of the one-hot values, so
    gradient × input at the one-hot encoding gives each attribute exactly its value's effect."""
    ds = titanic(300, seed=2)
    model = titanic_logistic()
    x = ds.x_test.double()
    rel = xaicore.explain(model, x, torch.ones(x.shape[0], dtype=torch.long), method="gradient_x_input")
    effects = [np.asarray(TITANIC_LOGODDS[a]) for a in TITANIC_ATTRIBUTES]
    codes = x.long().numpy()
    expected = np.stack([effects[j][codes[:, j]] for j in range(len(effects))], 1)
    np.testing.assert_allclose(rel.numpy(), expected, atol=1e-12)
    lrp = xaicore.explain(model, x, torch.ones(x.shape[0], dtype=torch.long), method="lrp.epsilon", epsilon=1e-9)
    np.testing.assert_allclose(lrp.numpy(), expected, atol=1e-6)


def test_methods_that_do_not_apply_name_the_kind(text_model):
    ds, model = text_model
    x, t = ds.x_test[:2], ds.y_test[:2]
    with pytest.raises(NotApplicable, match=r"'deconvnet' explains image and tabular inputs; it cannot explain text "
                                            r"\(B, T\) token-id input \(2, 12\)"):
        xaicore.explain(model, x, t, method="deconvnet")
    with pytest.raises(NotApplicable, match=r"'gradcam' explains image inputs.*text"):
        xaicore.explain(model, x, t, method="gradcam")
    with pytest.raises(NotApplicable, match=r"'pda' explains image and tabular inputs.*text"):
        xaicore.explain(model, x, t, method="pda")
    tab = titanic(100, seed=0)
    with pytest.raises(NotApplicable, match=r"'guided_backprop'.*on models without an embedding.*tabular"):
        xaicore.explain(titanic_logistic(), tab.x_test[:2], tab.y_test[:2], method="guided_backprop")
    # out-of-vocabulary ids are the unknown word, never a crash
    oov = x.clone()
    oov[0, 0] = 10_000
    assert torch.isfinite(xaicore.explain(model, oov, t, method="gradient")).all()
