"""VarGrad (Adebayo et al. 2018; Hooker et al. 2019): Captum's NoiseTunnel(vargrad) with the same noise, the
closed forms on a linear and on a quadratic model, its relation to SmoothGrad and SmoothGrad², seeding and
batching."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from captum.attr import NoiseTunnel, Saliency

import xaicore
from tests.explain_signal.conftest import assert_close
from tests.explain_signal.test_smoothgrad import hand_captum_our_noise, our_noise
from xaicore import XaiCoreError


@pytest.mark.parametrize("batch_size", [None, 3])
def test_equals_captum_noise_tunnel_vargrad_with_the_same_noise(batch_size, conv_model, batch64, monkeypatch):
    """Captum's ``nt_type="vargrad"`` is E[g²] − E[g]² over its noisy copies; it is handed our noise."""
    x, target = batch64
    n, level, seed = 7, 0.2, 5
    blocks = hand_captum_our_noise(monkeypatch, our_noise(x, n, level, seed), batch_size or n)
    ref = NoiseTunnel(Saliency(conv_model)).attribute(
        x.clone().requires_grad_(True), nt_type="vargrad", nt_samples=n, nt_samples_batch_size=batch_size,
        stdevs=1.0, target=target, abs=False)
    assert next(blocks, None) is None
    ours = xaicore.explain(conv_model, x, target, method="vargrad", n_samples=n, noise_level=level, seed=seed)
    scale = float(ref.abs().max())
    assert scale > 0
    assert_close(ours / scale, ref / scale)


def test_zero_on_a_linear_model():
    """∂f_c/∂x = W[c] for every noisy copy: the variance is 0 (to rounding), while SmoothGrad² is W[c]²."""
    with torch.random.fork_rng():
        torch.manual_seed(2)
        lin = nn.Linear(10, 4).double()
        x = torch.randn(5, 10, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3, 0])
    vg = xaicore.explain(lin, x, target, method="vargrad", n_samples=8, noise_level=0.5)
    torch.testing.assert_close(vg, torch.zeros_like(vg), rtol=0, atol=1e-14)
    sq = xaicore.explain(lin, x, target, method="smoothgrad", n_samples=8, noise_level=0.5, squared=True)
    assert float(sq.abs().min()) > 0


class Quadratic(nn.Module):
    """f_c(x) = ½ Σ_j a_cj x_j²: ∂f_c/∂x = a_c ⊙ x, so under x + ε the gradient's variance is a_c² · Var(ε)."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x.flatten(1).unsqueeze(1) ** 2 * self.a).sum(-1)


def test_closed_form_on_a_quadratic_model():
    """VarGrad = a_c² · (1/n Σ ε² − (1/n Σ ε)²) over exactly the noise SmoothGrad documents, and
    VarGrad = SmoothGrad² − SmoothGrad² of the mean (the same draws)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 12, generator=g, dtype=torch.float64)
    x = torch.randn(4, 12, generator=g, dtype=torch.float64)
    target = torch.tensor([0, 2, 1, 2])
    model = Quadratic(a)
    n, level, seed = 40, 0.3, 9
    eps = our_noise(x, n, level, seed)  # (B, n, 12)
    expected = a[target] ** 2 * (eps.pow(2).mean(1) - eps.mean(1).pow(2))
    ours = xaicore.explain(model, x, target, method="vargrad", n_samples=n, noise_level=level, seed=seed)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-14)
    kw = {"n_samples": n, "noise_level": level, "seed": seed}
    sg = xaicore.explain(model, x, target, method="smoothgrad", **kw)
    sq = xaicore.explain(model, x, target, method="smoothgrad", squared=True, **kw)
    torch.testing.assert_close(ours, sq - sg * sg, rtol=1e-10, atol=1e-14)


def test_seeded_and_independent_of_batching_and_passes(cnn, digit_batch):
    x, target = digit_batch
    model, x, target = cnn.double(), x[:5].double(), target[:5]
    kw = {"n_samples": 9, "noise_level": 0.1}
    ref = xaicore.explain(model, x, target, method="vargrad", **kw)
    assert torch.equal(ref, xaicore.explain(model, x, target, method="vargrad", **kw))
    assert not torch.equal(ref, xaicore.explain(model, x, target, method="vargrad", seed=1, **kw))
    per_sample = torch.cat([xaicore.explain(model, x[i:i + 1], target[i:i + 1], method="vargrad",
                                            forward_batch=4, **kw) for i in range(5)])
    torch.testing.assert_close(per_sample, ref, rtol=0, atol=1e-12)
    assert float(ref.min()) >= -1e-12 and float(ref.max()) > 0


def test_bad_parameters(cnn, digit_batch):
    x, target = digit_batch
    with pytest.raises(XaiCoreError, match="vargrad: n_samples=0"):
        xaicore.explain(cnn, x[:2], target[:2], method="vargrad", n_samples=0)
    with pytest.raises(XaiCoreError, match="vargrad: noise_level=-1"):
        xaicore.explain(cnn, x[:2], target[:2], method="vargrad", noise_level=-1)
