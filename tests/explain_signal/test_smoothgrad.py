"""SmoothGrad and SmoothGrad² (Smilkov et al. 2017, eq. 3; Hooker et al. 2019): Captum parity with the same
noise, closed forms, the per-sample noise scale, seeding and batching."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn as nn
from captum.attr import NoiseTunnel, Saliency

import xaicore
from tests.explain_signal.conftest import assert_close
from tests.tolerance import assert_equal_to_rounding
from xaicore import XaiCoreError
from xaicore._rng import per_sample_normal
from xaicore.explain.smoothgrad import _STREAM, noise_scale


def our_noise(x: torch.Tensor, n: int, noise_level: float, seed: int) -> torch.Tensor:
    """The documented noise: N(0, 1) per (seed, sample) times noise_level · (max − min) of the sample."""
    return per_sample_normal(x, seed, _STREAM, n).to(x.dtype) * noise_scale(x, noise_level).unsqueeze(1)


def hand_captum_our_noise(monkeypatch: pytest.MonkeyPatch, noise: torch.Tensor, per_batch: int) -> Iterator:
    """Make ``NoiseTunnel._add_noise_to_input`` add ``noise`` (B, n, ...) block by block instead of its own draws;
    returns the iterator of blocks (exhausted once Captum has used every copy)."""
    blocks = iter(torch.split(noise, per_batch, dim=1))

    def add_our_noise(inp: torch.Tensor, stdev: float, k: int) -> torch.Tensor:
        eps = next(blocks)
        assert eps.shape[1] == k
        return inp.repeat_interleave(k, dim=0) + eps.reshape(-1, *inp.shape[1:])

    monkeypatch.setattr(NoiseTunnel, "_add_noise_to_input", staticmethod(add_our_noise))
    return blocks


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("batch_size", [None, 3])
def test_equals_captum_noise_tunnel_with_the_same_noise(squared, batch_size, conv_model, batch64, monkeypatch):
    """Captum draws its own noise in ``NoiseTunnel._add_noise_to_input``; it is handed ours, block by block."""
    x, target = batch64
    n, level, seed = 7, 0.2, 5
    blocks = hand_captum_our_noise(monkeypatch, our_noise(x, n, level, seed), batch_size or n)
    ref = NoiseTunnel(Saliency(conv_model)).attribute(
        x.clone().requires_grad_(True), nt_type="smoothgrad_sq" if squared else "smoothgrad", nt_samples=n,
        nt_samples_batch_size=batch_size, stdevs=1.0, target=target, abs=False)
    assert next(blocks, None) is None
    ours = xaicore.explain(conv_model, x, target, method="smoothgrad", n_samples=n, noise_level=level,
                           squared=squared, seed=seed)
    assert_close(ours, ref)


def test_noise_scale_is_per_sample_range():
    x = torch.stack([torch.linspace(-1, 3, 12).view(3, 4), torch.full((3, 4), 7.0)]).unsqueeze(1)
    sigma = noise_scale(x, 0.25)
    assert sigma.shape == (2, 1, 1, 1)
    assert sigma.flatten().tolist() == [1.0, 0.0]


def test_closed_form_on_a_linear_model():
    """∂f_c/∂x = W[c] whatever the noise: SmoothGrad = W[c], SmoothGrad² = W[c]²."""
    with torch.random.fork_rng():
        torch.manual_seed(2)
        lin = nn.Linear(10, 4).double()
        x = torch.randn(5, 10, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3, 0])
    w = lin.weight.detach()[target]
    sg = xaicore.explain(lin, x, target, method="smoothgrad", n_samples=6, noise_level=0.5)
    torch.testing.assert_close(sg, w, rtol=0, atol=1e-14)
    sq = xaicore.explain(lin, x, target, method="smoothgrad", n_samples=6, noise_level=0.5, squared=True)
    torch.testing.assert_close(sq, w * w, rtol=0, atol=1e-14)


def test_without_noise_it_is_the_gradient(conv_model, batch64):
    x, target = batch64
    grad = xaicore.explain(conv_model, x, target, method="gradient")
    sg = xaicore.explain(conv_model, x, target, method="smoothgrad", n_samples=3, noise_level=0.0)
    torch.testing.assert_close(sg, grad, rtol=0, atol=1e-13)


def test_seeded_and_independent_of_batching_and_passes(cnn, digit_batch):
    x, target = digit_batch
    model, x = cnn.double(), x[:5].double()
    kw = {"n_samples": 9, "noise_level": 0.1}
    ref = xaicore.explain(model, x, target[:5], method="smoothgrad", **kw)
    assert torch.equal(ref, xaicore.explain(model, x, target[:5], method="smoothgrad", **kw))
    assert not torch.allclose(ref, xaicore.explain(model, x, target[:5], method="smoothgrad", seed=1, **kw))
    # one pass per noisy copy (the noise is read from each sample's generator in order) and one sample at a time
    # (other batches: the same draws, the last bits of other passes, docs/reproducibility.md)
    small = xaicore.explain(model, x, target[:5], method="smoothgrad", forward_batch=1, **kw)
    assert_equal_to_rounding(small, ref)
    single = torch.cat([xaicore.explain(model, x[i:i + 1], target[i:i + 1], method="smoothgrad", **kw)
                        for i in range(5)])
    assert_equal_to_rounding(single, ref)
    assert float((ref - xaicore.explain(model, x, target[:5], method="gradient")).abs().max()) > 1e-6


@pytest.mark.parametrize(("kw", "match"), [({"n_samples": 0}, "n_samples=0"), ({"noise_level": -0.1}, "noise_level"),
                                           ({"noise_level": float("nan")}, "noise_level"),
                                           ({"forward_batch": 0}, "forward_batch")])
def test_bad_parameters_are_refused(kw, match, cnn, digit_batch):
    x, target = digit_batch
    with pytest.raises(XaiCoreError, match=match):
        xaicore.explain(cnn, x, target, method="smoothgrad", **kw)
