"""PatternNet / PatternAttribution (Kindermans et al. 2018) against closed forms and brute-force references.

* the paper's linear toy: x = a_s·y + a_d·ε, w = (1, −1): PatternNet recovers the signal direction a_s, the gradient
  is w, orthogonal to the distractor direction a_d, and ρ(S_w) has a closed form;
* the fitted statistics equal explicit numpy covariances of unfolded patches (conv) and rows (dense), with the
  BatchNorm merged into its layer;
* ρ(S) equals a brute-force least-squares regression of y on the explicit distractor;
* the backward passes equal hand-written float64 formulas on a 2-layer ReLU network;
* PatternAttribution with S_w on one layer equals DTD's w² rule; with patterns fitted on shifted data it is input
  invariant where Gradient×Input is not (Kindermans et al. 2019).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import xaicore
from xaicore import XaiCoreError
from xaicore.explain import Patterns, fit_patterns, pattern_quality
from xaicore.explain.signal_estimators import collect_moments, estimate_patterns
from xaicore.metrics import input_invariance

A_S = torch.tensor([1.0, 0.0], dtype=torch.float64)
A_D = torch.tensor([1.0, 1.0], dtype=torch.float64)


def toy_data(n: int, sigma: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1
    eps = sigma * torch.randn(n, generator=g, dtype=torch.float64)
    return y[:, None] * A_S + eps[:, None] * A_D, y


def toy_model() -> nn.Module:
    m = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, -1.0]]))
    return m


def test_linear_toy_patternnet_recovers_the_signal_and_the_gradient_does_not():
    x, y = toy_data(50_000)
    model = toy_model()
    assert torch.allclose(model(x)[:, 0], y)  # wᵀx = y: the filter cancels the distractor
    patterns = fit_patterns(model, x)
    a = patterns.layers[""]["linear"][0]
    torch.testing.assert_close(a, A_S, rtol=0, atol=0.02)  # cov[x, y] / var(y) = a_s up to sampling error
    t = torch.zeros(8, dtype=torch.long)
    for estimator in ("linear", "two_component"):
        signal = xaicore.explain(model, x[:8], t, "patternnet", reference=patterns, estimator=estimator)
        cos = F.cosine_similarity(signal, A_S.expand_as(signal), dim=1).abs()
        assert bool((cos > 0.999).all()), (estimator, cos)
        torch.testing.assert_close(signal, y[:8, None] * A_S, rtol=0, atol=0.06)  # s = a_s·y (sampling error)
    grad = xaicore.explain(model, x[:8], t, "gradient")
    assert float((grad @ A_D).abs().max()) == 0.0  # the gradient is orthogonal to the distractor ...
    assert float(F.cosine_similarity(grad[:1], A_S[None]).abs()) < 0.75  # ... and not the signal direction
    s_w = xaicore.explain(model, x[:8], t, "patternnet", estimator="filter")  # no data needed
    torch.testing.assert_close(s_w, y[:8, None] * torch.tensor([0.5, -0.5], dtype=torch.float64))
    attribution = xaicore.explain(model, x[:8], t, "patternattribution", reference=patterns, estimator="linear")
    torch.testing.assert_close(attribution, y[:8, None] * (model.weight[0].detach() * a))  # (w ⊙ a)·y


def test_linear_toy_quality_closed_form():
    """S_a's distractor carries no linear information on y (ρ = 1); S_w's is d = (1, 1)(y/2 + ε), whose
    correlation with y is (1/6) / sqrt(1/3 · (1/12 + σ²)) for y ~ U(−1, 1)."""
    sigma = 1.0
    x, _ = toy_data(200_000, sigma)
    model = toy_model()
    patterns = fit_patterns(model, x)
    rho = pattern_quality(model, patterns, x, ridge=1e-12)
    assert rho["linear"][""] == pytest.approx(1.0, abs=1e-9)
    expected = 1 - (1 / 6) / math.sqrt(1 / 3 * (1 / 12 + sigma ** 2))
    assert rho["filter"][""] == pytest.approx(expected, abs=0.01)
    held_out, _ = toy_data(50_000, sigma, seed=1)
    rho_test = pattern_quality(model, patterns, held_out, fit_data=x)
    assert rho_test["linear"][""] == 1.0  # v = 0 on the fitting data
    assert rho_test["filter"][""] == pytest.approx(expected, abs=0.01)


# --- statistics against explicit numpy references -------------------------------------------------------------

def _conv_bn_net() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(3)
        net = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(2, 3, 3, stride=2, padding=1)), ("bn", nn.BatchNorm2d(3)), ("relu", nn.ReLU()),
            ("flatten", nn.Flatten()), ("fc", nn.Linear(3 * 4 * 4, 4)),
        ])).double().eval()
        with torch.no_grad():
            net.bn.running_mean.uniform_(-0.3, 0.3)
            net.bn.running_var.uniform_(0.5, 1.5)
            net.bn.weight.uniform_(0.5, 1.5)
            net.bn.bias.uniform_(-0.3, 0.3)
    return net


def _numpy_patterns(rows: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """Patterns from explicit rows (n, in) and outputs (n, out), one unit at a time (zeros for a regime with fewer
    than two rows)."""
    out = {k: np.zeros_like(w) for k in ("linear", "positive", "negative")}
    for j in range(w.shape[0]):
        for key, sel in (("linear", np.ones(len(y), bool)), ("positive", y[:, j] > 0), ("negative", y[:, j] <= 0)):
            xs, ys = rows[sel], y[sel, j]
            if len(ys) < 2:
                continue
            cov = (xs * ys[:, None]).mean(0) - xs.mean(0) * ys.mean()
            out[key][j] = cov / (w[j] @ cov)
    out["filter"] = w / (w * w).sum(1, keepdims=True)
    return out


def test_fitted_patterns_equal_explicit_covariances_with_batch_norm_merged():
    net = _conv_bn_net()
    x = torch.rand(37, 2, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) - 0.3
    patterns = fit_patterns(net, x, batch_size=10)  # four uneven batches
    # references: the conv layer with the BatchNorm folded in, by hand
    scale = net.bn.weight / torch.sqrt(net.bn.running_var + net.bn.eps)
    w_conv = (net.conv.weight * scale[:, None, None, None]).reshape(3, -1).detach().numpy()
    patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 18).numpy()
    y_conv = net.bn(net.conv(x)).permute(0, 2, 3, 1).reshape(-1, 3).detach().numpy()
    hidden = net.flatten(net.relu(net.bn(net.conv(x))))
    ref = {"conv": _numpy_patterns(patches, y_conv, w_conv),
           "fc": _numpy_patterns(hidden.detach().numpy(), net.fc(hidden).detach().numpy(),
                                 net.fc.weight.detach().numpy())}
    for layer, expected in ref.items():
        for key, value in expected.items():
            np.testing.assert_allclose(patterns.layers[layer][key].numpy(), value, rtol=1e-9, atol=1e-12,
                                       err_msg=f"{layer} {key}")
    for key in ("linear", "positive", "negative"):  # wᵀa = 1 for every live unit: PatternAttribution keeps R_j
        a = patterns.layers["fc"][key].numpy()
        live = np.abs(a).sum(1) > 0
        assert live.sum() >= 2, key
        np.testing.assert_allclose((a * net.fc.weight.detach().numpy()).sum(1)[live], 1.0)


def _distractor(rows: np.ndarray, y: np.ndarray, a_pos: np.ndarray, a_neg: np.ndarray) -> np.ndarray:
    """d = x − a₊y⁺ − a₋y⁻ row by row."""
    return rows - np.where(y > 0, y, 0)[:, None] * a_pos - np.where(y > 0, 0, y)[:, None] * a_neg


@pytest.mark.parametrize("held_out", [False, True])
def test_quality_equals_brute_force_regression(held_out):
    """ρ(S) against an explicit least-squares regression of y on the distractor rows d = x − a₊y⁺ − a₋y⁻: v fitted
    on the fitting data, the correlation measured on the held-out data (or on the fitting data itself)."""
    net = _conv_bn_net()
    gen = torch.Generator().manual_seed(2)
    fit_x = torch.rand(60, 2, 8, 8, generator=gen, dtype=torch.float64) - 0.3
    test_x = torch.rand(50, 2, 8, 8, generator=gen, dtype=torch.float64) - 0.3
    patterns = fit_patterns(net, fit_x)
    rho = pattern_quality(net, patterns, test_x if held_out else fit_x, fit_data=fit_x if held_out else None,
                          ridge=1e-12)

    def rows(x):
        patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 18).numpy()
        return patches, net.bn(net.conv(x)).permute(0, 2, 3, 1).reshape(-1, 3).detach().numpy()

    (p_fit, y_fit), (p_test, y_test) = rows(fit_x), rows(test_x if held_out else fit_x)
    for est in ("filter", "linear", "two_component"):
        key_p, key_n = ("positive", "negative") if est == "two_component" else (est, est)
        a_p, a_n = patterns.layers["conv"][key_p].numpy(), patterns.layers["conv"][key_n].numpy()
        rhos = []
        for j in range(3):
            d_fit = _distractor(p_fit, y_fit[:, j], a_p[j], a_n[j])
            v, *_ = np.linalg.lstsq(np.c_[d_fit, np.ones(len(d_fit))], y_fit[:, j], rcond=None)
            pred = _distractor(p_test, y_test[:, j], a_p[j], a_n[j]) @ v[:-1]
            corr = 0.0 if est == "linear" else abs(np.corrcoef(pred, y_test[:, j])[0, 1])  # S_a: v = 0 exactly
            rhos.append(1 - corr)
        assert rho[est]["conv"] == pytest.approx(np.mean(rhos), abs=1e-6), est
    assert rho["linear"]["conv"] == 1.0  # S_a's distractor has no linear trace of y on its fitting data


# --- the backward passes --------------------------------------------------------------------------------------

def test_backward_equals_hand_written_formulas_on_a_two_layer_relu_net():
    with torch.random.fork_rng():
        torch.manual_seed(4)
        net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    data = torch.randn(200, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    patterns = fit_patterns(net, data)
    x, t = data[:7], torch.tensor([0, 1, 2, 0, 1, 2, 0])
    w1, w2 = net[0].weight.detach(), net[2].weight.detach()
    z1 = net[0](x).detach()
    out = net(x).detach().gather(1, t[:, None])[:, 0]
    for est in ("filter", "linear", "two_component"):
        k_p, k_n = ("positive", "negative") if est == "two_component" else (est, est)
        a1p, a1n = patterns.layers["0"][k_p], patterns.layers["0"][k_n]
        a2p, a2n = patterns.layers["2"][k_p], patterns.layers["2"][k_n]
        for attribution, method in ((False, "patternnet"), (True, "patternattribution")):
            m1p, m1n = (a1p * w1, a1n * w1) if attribution else (a1p, a1n)
            m2p, m2n = (a2p * w2, a2n * w2) if attribution else (a2p, a2n)
            upper = torch.where((out > 0)[:, None], m2p[t], m2n[t]) * out[:, None]  # (B, 6): from f(x)
            upper = upper * (z1 > 0)  # the ReLU gate
            expected = upper @ m1p  # gated units have z1 > 0: their positive pattern
            got = xaicore.explain(net, x, t, method, reference=patterns, estimator=est)
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12, msg=f"{method} {est}")


def test_patternattribution_with_the_filter_estimator_is_the_w2_rule_on_one_layer():
    with torch.random.fork_rng():
        torch.manual_seed(6)
        net = nn.Sequential(nn.Linear(9, 4, bias=False)).double()
    x, t = torch.randn(5, 9, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0])
    torch.testing.assert_close(xaicore.explain(net, x, t, "patternattribution", estimator="filter"),
                               xaicore.explain(net, x, t, "dtd.w2", stabilizer=0.0), rtol=1e-12, atol=1e-12)


def test_patternattribution_is_input_invariant_with_patterns_fitted_on_the_shifted_data(helpers):
    """Kindermans et al. 2019: network 2 sees x + m, its first bias compensated. Patterns are covariances and the
    ReLU regimes are the same, so patterns fitted on each network's own data give the same heatmap."""
    model = helpers.seeded_model("mlp", seed=7, dtype=torch.float64).eval()
    gen = torch.Generator().manual_seed(8)
    train = torch.rand(300, 1, 28, 28, generator=gen, dtype=torch.float64)
    x, t = train[:6], torch.arange(6)
    shift = torch.rand(1, 28, 28, generator=gen, dtype=torch.float64)
    from xaicore.metrics import shifted_network

    net2 = shifted_network(model, shift, (1, 28, 28))
    p1, p2 = fit_patterns(model, train), fit_patterns(net2, train + shift)
    for method in ("patternnet", "patternattribution"):
        r1 = xaicore.explain(model, x, t, method, reference=p1)
        r2 = xaicore.explain(net2, x + shift, t, method, reference=p2)
        torch.testing.assert_close(r1, r2, rtol=1e-7, atol=1e-9 * float(r1.abs().max()))
    error = input_invariance(model, x, t, "gradient_x_input", shift)
    assert float(error.min()) > 0.05  # while G×I is not invariant


# --- artifacts and errors ---------------------------------------------------------------------------------------

def test_save_and_load_round_trip(tmp_path):
    net = _conv_bn_net()
    x = torch.rand(20, 2, 8, 8, dtype=torch.float64)
    patterns = fit_patterns(net, x)
    patterns.quality = pattern_quality(net, patterns, x, fit_data=x[:10])
    path = patterns.save(tmp_path / "p.pt")
    loaded = Patterns.load(path)
    assert loaded.n_samples == 20 and loaded.quality == patterns.quality
    for name, layer in patterns.layers.items():
        for key, value in layer.items():
            assert torch.equal(loaded.layers[name][key], value)
    assert not list(tmp_path.glob("*.partial"))


def test_errors_name_the_problem(tmp_path):
    net = _conv_bn_net()
    x, t = torch.rand(4, 2, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    with pytest.raises(XaiCoreError, match="estimator .two_component. is fitted on data: state = xaicore.fit"):
        xaicore.explain(net, x, t, "patternnet")
    with pytest.raises(XaiCoreError, match="unknown signal estimator 'cubic'"):
        xaicore.explain(net, x, t, "patternnet", estimator="cubic")
    patterns = fit_patterns(net, x)
    other = _conv_bn_net()
    with torch.no_grad():
        other.fc.weight.mul_(1.5)
    with pytest.raises(XaiCoreError, match="patterns of layer 'fc' were fitted on other weights"):
        xaicore.explain(other, x, t, "patternnet", reference=patterns)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(128, 4)).double()
    with pytest.raises(XaiCoreError, match="the patterns have no layer '1'"):
        xaicore.explain(mlp, x, t, "patternnet", reference=patterns)
    with pytest.raises(XaiCoreError, match="must be xaicore.explain.Patterns, got dict"):
        xaicore.explain(net, x, t, "patternnet", reference={"conv": 1})
    with pytest.raises(XaiCoreError, match="'gradient' is not fitted on data"):
        xaicore.fit(net, x, "gradient")
    with pytest.raises(XaiCoreError, match="fit of method 'patternnet' has no parameter 'window'"):
        xaicore.fit(net, x, "patternnet", window=3)
    torch.testing.assert_close(xaicore.explain(net, x, t, "patternnet", reference=xaicore.fit(net, x, "patternnet")),
                               xaicore.explain(net, x, t, "patternnet", reference=patterns), rtol=0, atol=0)
    with pytest.raises(XaiCoreError, match="no data to fit"):
        fit_patterns(net, x[:0])
    with pytest.raises(XaiCoreError, match="supported: groups=1"):
        fit_patterns(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), torch.rand(3, 2, 5, 5))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(XaiCoreError, match=r"patterns file .*bad\.pt cannot be read"):
        Patterns.load(bad)
    with pytest.raises(XaiCoreError, match="is missing"):
        Patterns.load(tmp_path / "absent.pt")
    torch.save({"format": "other"}, tmp_path / "foreign.pt")
    with pytest.raises(XaiCoreError, match="not an xaicore patterns file"):
        Patterns.load(tmp_path / "foreign.pt")


def test_moments_are_batch_size_independent():
    net = _conv_bn_net()
    x = torch.rand(30, 2, 8, 8, dtype=torch.float64)
    a, _ = collect_moments(net, x, batch_size=30, second=True)
    b, _ = collect_moments(net, x, batch_size=7, second=True)
    for name in a:
        for field in ("sx", "sxy", "sx_pos", "sxy_pos", "sxx"):
            torch.testing.assert_close(getattr(a[name], field), getattr(b[name], field), rtol=1e-12, atol=1e-10)
    w = net.fc.weight.detach().double()
    assert set(estimate_patterns(a["fc"], w)) == {"filter", "linear", "positive", "negative"}
