"""The fixed batches every loop cuts its items into, and the pipeline's batched explanation."""

import pytest
import torch
import torch.nn as nn

from xaicore import explanation
from xaicore.engine import batch_slices, batched
from xaicore.errors import XaiCoreError
from xaicore.explain import explain_batched


def test_batch_slices_are_fixed_by_size_alone():
    assert [(s.start, s.stop) for s in batch_slices(10, 4)] == [(0, 4), (4, 8), (8, 10)]
    assert [(s.start, s.stop) for s in batch_slices(8, 4)] == [(0, 4), (4, 8)]
    assert list(batch_slices(0, 3)) == []
    for bad in (0, -1, 2.0, True):
        with pytest.raises(XaiCoreError, match="batch size"):
            list(batch_slices(5, bad))


def test_batched_concatenates_rows_of_every_tensor():
    x, y = torch.arange(7.0), torch.arange(7.0) * 10
    calls = []

    def fn(a, b):
        calls.append(len(a))
        return a + b

    assert torch.equal(batched(fn, x, y, size=3), x + y)
    assert calls == [3, 3, 1]


def test_explain_batched_equals_the_explanations_of_its_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    x, t = torch.randn(7, 5), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    out = explain_batched(model, x, t, "gradient", batch_size=3)
    parts = [explanation(model, x[s], t[s], "gradient") for s in batch_slices(7, 3)]
    assert torch.equal(out.relevance, torch.cat([p.relevance for p in parts]))
    # gradients of a piecewise-linear model: the closed form W2 diag(relu') W1 row of the target
    w1, w2 = model[0].weight, model[2].weight
    on = (model[0](x) > 0).float()
    expected = torch.stack([(w2[t[i]] * on[i]) @ w1 for i in range(7)])
    torch.testing.assert_close(out.relevance, expected.detach())


def test_explain_batched_concatenates_extras():
    from xaicore.features import ColumnStats

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(5, 4)
    t = torch.zeros(5, dtype=torch.long)
    stats = ColumnStats.fit(torch.randn(50, 4))
    out = explain_batched(model, x, t, "lime", batch_size=2, reference=stats, n_samples=64)
    whole = [explanation(model, x[s], t[s], "lime", reference=stats, n_samples=64) for s in batch_slices(5, 2)]
    assert out.extras["surrogate_r2"].shape == (5,)
    assert torch.equal(out.extras["surrogate_r2"], torch.cat([w.extras["surrogate_r2"] for w in whole]))
