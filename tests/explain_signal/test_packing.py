"""IG and SmoothGrad pack several steps (noisy copies) into one pass; the packing must not change the result
beyond the rounding of passes over other batches (bit for bit on the same packing)."""

from __future__ import annotations

import pytest
import torch

import xaicore
from tests.tolerance import assert_equal_to_rounding

PARAMS = {"integrated_gradients": {"n_steps": 7}, "smoothgrad": {"n_samples": 7}}


@pytest.mark.parametrize("method", list(PARAMS))
def test_result_is_independent_of_forward_batch(method, cnn, digit_batch):
    x, target = digit_batch
    ref = xaicore.explain(cnn, x, target, method=method, forward_batch=1, **PARAMS[method])
    for size in (8, 24, 10_000):  # one step per pass, three steps per pass, all steps in one pass
        out = xaicore.explain(cnn, x, target, method=method, forward_batch=size, **PARAMS[method])
        assert_equal_to_rounding(out, ref)
        assert torch.equal(out, xaicore.explain(cnn, x, target, method=method, forward_batch=size,
                                                **PARAMS[method])), size  # the same packing: the same bits
