"""The explainer contract (DESIGN §3): batched == per-sample, the model left exactly as it was, the result's
dtype/shape/device, input validation, and IG's completeness (Sundararajan et al. 2017, eq. 1)."""

from __future__ import annotations

import functools
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

import xaicore
from tests.zoo_models import fitted_params
from xaicore import XaiCoreError
from xaicore.errors import NotApplicable
from xaicore.explain import get_explainer
from xaicore.features import ColumnStats

ALL_METHODS = xaicore.methods()
# cheap but non-trivial settings, so the loop over every method stays fast
# CEM on untrained models (logits within ±0.1; the label is rarely the prediction, so a PN needs a margin that
# δ = 0 does not meet): big steps, no autoencoder term
CEM_FAST = {"c_steps": 2, "n_steps": 10, "lr": 0.05, "c_init": 100.0, "gamma": 0.0, "data_range": (0.0, 1.0)}
FAST_PARAMS = {"integrated_gradients": {"n_steps": 8}, "lime": {"n_samples": 80, "n_segments": 20},
               "pda": {"stride": 4, "n_samples": 2}, "occlusion": {"stride": 4},
               "anchors": {"max_samples": 400, "batch_size": 20, "n_segments": 10}}
FAST_PARAMS.update({"cem.pp": {**CEM_FAST, "kappa": 0.0}, "cem.pn": {**CEM_FAST, "kappa": 0.1}})


def run(model, x, target, method, **kw):
    kw = {**FAST_PARAMS.get(method, {}), **fitted_params(method, model, x), **kw}
    return xaicore.explain(model, x, target, method=method, **kw)


def test_registry_holds_the_survey_gradient_methods():
    assert {"gradient", "gradient_x_input", "integrated_gradients", "random"} <= set(ALL_METHODS)
    assert ALL_METHODS == sorted(ALL_METHODS)
    assert get_explainer("integrated_gradients").conservative is True
    assert get_explainer("gradient").conservative is False


def not_applicable(method: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> bool:
    """Grad-CAM needs a conv layer and images, the perturbation methods (image features: windows, superpixels)
    images: elsewhere they must refuse with NotApplicable naming what is missing (asserted here)."""
    if method == "gradcam" and (x.ndim != 4 or not any(isinstance(m, nn.Conv2d) for m in model.modules())):
        with pytest.raises(NotApplicable, match="gradcam needs|'gradcam' explains image inputs"):
            run(model, x, target, method)
        return True
    if get_explainer(method).family == "perturbation" and x.ndim != 4:
        with pytest.raises(NotApplicable, match=r"tabular \(B, F\) input"):
            run(model, x, target, method)
        return True
    return False


# --- batched == per-sample -------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_batched_equals_per_sample(method, arch, digit_batch, helpers):
    model = helpers.seeded_model(arch, seed=4, dtype=torch.float64)
    x, target = digit_batch
    x = x[:4].double()
    target = target[:4]
    if not_applicable(method, model, x, target):
        return
    batched = run(model, x, target, method)
    single = torch.cat([run(model, x[i:i + 1], target[i:i + 1], method) for i in range(x.shape[0])])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-12)
    assert float(batched.abs().max()) > 0
    # a different batch composition (reversed order, duplicated sample) does not change any sample's heatmap
    perm = torch.tensor([3, 2, 2, 0])
    torch.testing.assert_close(run(model, x[perm], target[perm], method), batched[perm], rtol=0, atol=1e-12)


# --- the model is left exactly as it was -----------------------------------------------------------------

def _bn_model() -> nn.Module:
    """A model whose train mode would change its buffers (BatchNorm) and its output (Dropout)."""
    with torch.random.fork_rng():
        torch.manual_seed(5)
        return nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(1, 4, 3, padding=1)), ("bn", nn.BatchNorm2d(4)), ("relu", nn.ReLU()),
            ("pool", nn.MaxPool2d(2)), ("flatten", nn.Flatten()), ("drop", nn.Dropout(0.5)),
            ("fc", nn.Linear(4 * 14 * 14, 10)),
        ]))


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("mode", ["eval", "train", "mixed"])
def test_model_unchanged_after_explainer(method, mode, digit_batch, helpers):
    model = _bn_model()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.bn.running_mean.uniform_(-0.1, 0.1)
        model.bn.running_var.uniform_(0.5, 1.5)
    model.train(mode != "eval")
    if mode == "mixed":  # e.g. fine-tuning with frozen BatchNorm statistics
        model.bn.eval()
    model.fc.bias.requires_grad_(False)
    flags = {name: m.training for name, m in model.named_modules()}
    requires_grad = [p.requires_grad for p in model.parameters()]
    before = helpers.model_state(model)
    x, target = digit_batch
    x = x.clone().requires_grad_(True)

    out = run(model, x, target, method)

    helpers.assert_states_equal(before, helpers.model_state(model))
    assert {name: m.training for name, m in model.named_modules()} == flags
    helpers.assert_no_hooks(model)
    assert all(p.grad is None for p in model.parameters()), "explainer left .grad on the parameters"
    assert [p.requires_grad for p in model.parameters()] == requires_grad
    assert x.grad is None
    # the heatmap is that of the model in eval mode (no dropout, running BatchNorm statistics)
    model.eval()
    torch.testing.assert_close(out, run(model, x.detach(), target, method), rtol=0, atol=0)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert not out.requires_grad and out.grad_fn is None


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_result_has_x_shape_dtype_device_and_is_detached(method, dtype, any_model, digit_batch):
    model = any_model.to(dtype)
    x, target = digit_batch
    x = x.to(dtype)
    if not_applicable(method, model, x, target):
        return
    out = run(model, x, target, method)
    assert out.shape == x.shape
    assert out.dtype == dtype
    assert out.device == x.device
    assert not out.requires_grad and out.grad_fn is None
    assert bool(torch.isfinite(out).all())
    assert float(out.abs().sum()) > 0


@pytest.mark.parametrize("method", ALL_METHODS)
def test_flat_inputs_b_f_are_accepted(method):
    with torch.random.fork_rng():
        torch.manual_seed(6)
        model = nn.Sequential(nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 3)).double()
        x = torch.rand(4, 12, dtype=torch.float64)
    target = torch.tensor([0, 2, 1, 2])
    if method in ("anchors", "lime", "occlusion", "pda"):
        # tabular perturbation methods draw from the training statistics of the columns (reference=ColumnStats)
        g = torch.Generator().manual_seed(11)
        kw = {**FAST_PARAMS.get(method, {}), "reference": ColumnStats.fit(torch.rand(48, 12, generator=g))}
        kw = {k: v for k, v in kw.items() if k in ("reference", "n_samples", "max_samples", "batch_size")}
        explain = functools.partial(xaicore.explain, model, method=method, **kw)
    else:
        if not_applicable(method, model, x, target):
            return
        explain = functools.partial(run, model, method=method)
    out = explain(x, target)
    assert out.shape == (4, 12) and out.dtype == torch.float64
    single = torch.cat([explain(x[i:i + 1], target[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(out, single, rtol=0, atol=1e-12)


def test_gradient_closed_form_on_linear_model():
    """f(x) = W x + b: the gradient of class c is W[c], gradient x input is W[c] * x, IG from 0 equals it."""
    with torch.random.fork_rng():
        torch.manual_seed(7)
        lin = nn.Linear(10, 4).double()
        x = torch.randn(6, 10, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3, 3, 1])
    w = lin.weight.detach()[target]
    torch.testing.assert_close(xaicore.explain(lin, x, target, method="gradient"), w, rtol=0, atol=1e-15)
    torch.testing.assert_close(xaicore.explain(lin, x, target, method="gradient_x_input"), w * x,
                               rtol=0, atol=1e-15)
    for rule in ("riemann_trapezoid", "riemann_middle", "riemann_left", "gausslegendre"):
        ig = xaicore.explain(lin, x, target, method="integrated_gradients", n_steps=3, rule=rule, baseline=0.5)
        torch.testing.assert_close(ig, w * (x - 0.5), rtol=0, atol=1e-14)


def test_int32_and_list_targets_equal_long_targets(cnn, digit_batch):
    x, target = digit_batch
    ref = xaicore.explain(cnn, x, target, method="gradient")
    assert torch.equal(xaicore.explain(cnn, x, target.int(), method="gradient"), ref)
    assert torch.equal(xaicore.explain(cnn, x, target.tolist(), method="gradient"), ref)


def test_random_relevance_is_seeded_and_model_independent(cnn, mlp, digit_batch):
    x, target = digit_batch
    a = xaicore.explain(cnn, x, target, method="random", seed=3)
    assert torch.equal(a, xaicore.explain(mlp, x, target, method="random", seed=3))
    assert torch.equal(a, xaicore.explain(cnn, x, (target + 1) % 10, method="random", seed=3))
    assert not torch.equal(a, xaicore.explain(cnn, x, target, method="random", seed=4))
    assert float(a.min()) >= 0.0 and float(a.max()) < 1.0
    assert abs(float(a.mean()) - 0.5) < 0.02  # 6272 U(0,1) draws: sd of the mean is 0.0036


# --- IG completeness -------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("rule", ["riemann_trapezoid", "gausslegendre"])
@pytest.mark.parametrize("baseline", [None, 0.3])
def test_integrated_gradients_completeness(rule, baseline, trained_cnn, digit_batch):
    """Σᵢ IGᵢ = f(x) − f(x̄) up to the quadrature error: below 1% at 64 steps on a (briefly) trained CNN.

    (On an untrained CNN f(x) − f(x̄) is close to 0 and the relative error is meaningless.)"""
    model = trained_cnn.double()
    x, target = digit_batch
    x = x.double()
    rel = xaicore.explain(model, x, target, method="integrated_gradients", n_steps=64, rule=rule,
                          baseline=baseline)
    with torch.no_grad():
        fx = model(x).gather(1, target[:, None])[:, 0]
        base = torch.full_like(x, 0.0 if baseline is None else baseline)
        fb = model(base).gather(1, target[:, None])[:, 0]
    delta = fx - fb
    assert float(delta.abs().min()) > 0.5
    rel_err = (rel.flatten(1).sum(1) - delta).abs() / delta.abs()
    assert float(rel_err.max()) < 1e-2, rel_err


def test_integrated_gradients_completeness_is_exact_on_a_linear_model():
    with torch.random.fork_rng():
        torch.manual_seed(9)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).double()
        x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    target = torch.tensor([2, 0, 1])
    rel = xaicore.explain(model, x, target, method="integrated_gradients", n_steps=2)
    with torch.no_grad():
        delta = (model(x) - model(torch.zeros_like(x))).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(rel.flatten(1).sum(1), delta, rtol=0, atol=1e-13)


# --- bad input -------------------------------------------------------------------------------------------

def test_unknown_method_is_refused(cnn, digit_batch):
    x, target = digit_batch
    with pytest.raises(XaiCoreError, match=r"unknown method 'lrp\.nope'.*gradient"):
        xaicore.explain(cnn, x, target, method="lrp.nope")


def test_unknown_keyword_is_refused(cnn, digit_batch):
    x, target = digit_batch
    with pytest.raises(XaiCoreError, match=r"'integrated_gradients' has no parameter 'steps'.*n_steps"):
        xaicore.explain(cnn, x, target, method="integrated_gradients", steps=3)
    with pytest.raises(XaiCoreError, match=r"'gradient' has no parameter 'epsilon'"):
        xaicore.explain(cnn, x, target, method="gradient", epsilon=0.1)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_wrong_x_shape_is_refused(method, cnn, digit_batch):
    x, target = digit_batch
    with pytest.raises(XaiCoreError, match=r"x must be \(B, C, H, W\), \(B, F\) or \(B, T\) token ids, got shape "
                                           r"\(8, 28, 28\)"):
        xaicore.explain(cnn, x[:, 0], target, method=method)
    with pytest.raises(XaiCoreError, match="floating-point"):
        xaicore.explain(cnn, (x * 255).long(), target, method=method)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_bad_target_is_refused(method, cnn, digit_batch):
    x, target = digit_batch
    with pytest.raises(XaiCoreError, match=r"target must be \(B,\) = \(8,\).*got \(7,\)"):
        xaicore.explain(cnn, x, target[:7], method=method)
    with pytest.raises(XaiCoreError, match=r"target must be.*float32"):
        xaicore.explain(cnn, x, target.float(), method=method)
    with pytest.raises(XaiCoreError, match="target must be"):
        xaicore.explain(cnn, x, target[:, None], method=method)


@pytest.mark.parametrize("method", ["gradient", "gradient_x_input", "integrated_gradients"])
@pytest.mark.parametrize("bad", [10, -1])
def test_target_out_of_range_is_refused(method, bad, cnn, digit_batch, helpers):
    x, target = digit_batch
    target = target.clone()
    target[3] = bad
    before = helpers.model_state(cnn)
    with pytest.raises(XaiCoreError, match=r"target holds class indices outside 0\.\.9"):
        run(cnn, x, target, method)
    helpers.assert_states_equal(before, helpers.model_state(cnn))
    helpers.assert_no_hooks(cnn)


def test_integrated_gradients_bad_parameters_are_refused(cnn, digit_batch):
    x, target = digit_batch
    with pytest.raises(XaiCoreError, match="unknown rule 'simpson'"):
        xaicore.explain(cnn, x, target, method="integrated_gradients", rule="simpson")
    with pytest.raises(XaiCoreError, match="n_steps=1 is too small for riemann_trapezoid"):
        xaicore.explain(cnn, x, target, method="integrated_gradients", n_steps=1)
    with pytest.raises(XaiCoreError, match=r"baseline shape \(3, 28, 28\)"):
        xaicore.explain(cnn, x, target, method="integrated_gradients", baseline=torch.zeros(3, 28, 28))


def test_non_finite_relevance_is_refused(cnn, digit_batch):
    x, target = digit_batch

    class Overflowing(torch.nn.Module):  # sample 2's logits (and so its gradient) are infinite
        def __init__(self) -> None:
            super().__init__()
            self.net = cnn
            self.register_buffer("scale", torch.tensor([1.0, 1, float("inf"), 1, 1, 1, 1, 1]))

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.net(z) * self.scale[: z.shape[0], None]

    with pytest.raises(XaiCoreError, match=r"non-finite relevance.*for 1 of 8 samples"):
        xaicore.explain(Overflowing(), x, target, method="gradient_x_input")
    x = x.clone()
    x[2, 0, 5, 5] = float("nan")  # a NaN input is refused before any method runs
    with pytest.raises(XaiCoreError, match=r"x holds NaN or inf in 1 of 8 samples \(first: sample 2\)"):
        xaicore.explain(cnn, x, target, method="gradient_x_input")


# --- the method spec: defaults from the kernel, the fit hook, extras ---------------------------------------

def test_defaults_are_read_from_the_kernel_signature():
    import inspect

    for name in ALL_METHODS:
        ex = get_explainer(name)
        sig = inspect.signature(ex.fn).parameters
        assert dict(ex.defaults) == {k: p.default for k, p in list(sig.items())[3:]}, name
    assert get_explainer("occlusion").defaults["window"] == 4
    assert dict(get_explainer("pda").fit_defaults) == {"window": 4, "padding": 2, "n_marginal": 1000, "seed": 0,
                                                       "batch_size": 256}
    assert {n for n in ALL_METHODS if get_explainer(n).fit is not None} == {"patternnet", "patternattribution", "pda",
                                                                             "cem.pp", "cem.pn"}


def test_explanation_extras_and_state_errors(helpers, digit_batch):
    model = helpers.seeded_model("cnn", seed=2)
    x, t = digit_batch
    x, t = x[:3], t[:3]
    e = xaicore.explanation(model, x, t, method="lime", n_samples=60, features="grid", cell=7)
    assert set(e.extras) == {"surrogate_r2"} and e.extras["surrogate_r2"].shape == (3,)
    assert torch.equal(e.relevance, xaicore.explain(model, x, t, method="lime", n_samples=60, features="grid", cell=7))
    assert dict(xaicore.explanation(model, x, t, method="gradient").extras) == {}
    with pytest.raises(XaiCoreError, match="'gradient' has no parameter 'reference'"):
        xaicore.explain(model, x, t, method="gradient", reference=x)
    patterns = xaicore.fit(model, x, method="patternnet")
    with pytest.raises(XaiCoreError, match="'occlusion' is not fitted on data: it takes no fitted state"):
        xaicore.explain(model, x, t, method="occlusion", reference=patterns)
    with pytest.raises(XaiCoreError, match="takes reference=PatchGaussian"):
        xaicore.explain(model, x, t, method="pda", reference=patterns)
    with pytest.raises(XaiCoreError, match="fit of method 'pda' has no parameter 'stride'"):
        xaicore.fit(model, x, method="pda", stride=2)
    with pytest.raises(XaiCoreError, match="pda on images needs its fitted patch statistics"):
        xaicore.explain(model, x, t, method="pda")


def test_config_splits_fit_and_explain_parameters():
    from xaicore.config import config_from_dict
    from xaicore.pipeline.fit_step import explain_kwargs, fit_kwargs

    cfg = config_from_dict({"explain": {"methods": ["pda", "patternnet"], "method_params": {
        "pda": {"window": 3, "padding": 1, "stride": 2, "n_marginal": 50}}}})
    assert explain_kwargs(cfg, "pda") == {"window": 3, "padding": 1, "stride": 2}
    assert fit_kwargs(cfg, "pda") == {"window": 3, "padding": 1, "n_marginal": 50,
                                      "batch_size": cfg.patterns.batch_size}
    assert fit_kwargs(cfg, "patternnet") == {"batch_size": cfg.patterns.batch_size}
    with pytest.raises(XaiCoreError, match="explain.method_params.pda.*'nope'"):
        config_from_dict({"explain": {"methods": ["pda"], "method_params": {"pda": {"nope": 1}}}})
