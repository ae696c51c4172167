"""Occlusion (Zeiler & Fergus 2014, sec. 4.2; survey §6.2): Captum parity for every fill, a closed form on a
linear model, batching and seeding, the model left as it was, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from captum.attr import Occlusion

import xaicore
from tests.tolerance import logit_atol
from tests.zoo_models import seeded_zoo_model
from xaicore import XaiCoreError
from xaicore.features.fills import fill_for, gaussian_blur

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.hostdep]

#: (window, stride): stride = window (dividing 28 and not), overlapping, stride 1, and non-dividing pairs whose
#: last window is cut at the border (Captum's ceil)
WINDOW_STRIDES = [(4, 4), (5, 5), (5, 3), (3, 2), (7, 1)]


def assert_close(ours: torch.Tensor, ref: torch.Tensor, model: nn.Module, x: torch.Tensor) -> None:
    """Agreement to the rounding error of the logits the relevance is the difference of (tests/tolerance.py):
    Captum packs other perturbations into its forward passes than we do, so the last bits may differ. The
    tolerance is checked to stay far below the relevance itself, so that a wrong window would still fail."""
    atol = logit_atol(model, x)
    scale = float(ref.abs().max())
    assert atol < 1e-2 * scale, (atol, scale)
    torch.testing.assert_close(ours, ref.detach(), rtol=0.0, atol=atol)


def assert_border_occluded(rel: torch.Tensor) -> None:
    """The last row and column got relevance: the windows reach the border, the last one cut there (Captum's
    ceil; the digits' zero border only shows it with a non-zero fill or input)."""
    assert bool((rel[..., -1, :] != 0).all()) and bool((rel[..., :, -1] != 0).all())


def captum_occlusion(model: nn.Module, x: torch.Tensor, target: torch.Tensor, window: int, stride: int,
                     baselines: float | torch.Tensor = 0.0) -> torch.Tensor:
    return Occlusion(model).attribute(x, sliding_window_shapes=(x.shape[1], window, window),
                                      strides=(1, stride, stride), baselines=baselines, target=target,
                                      perturbations_per_eval=16)


@pytest.fixture
def batch(digit_batch) -> tuple[torch.Tensor, torch.Tensor]:
    x, target = digit_batch
    return x[:3].clone(), target[:3].clone()


@pytest.mark.parametrize(("arch", "window", "stride"),
                         [(arch, w, s) for arch in ("cnn", "vgg_bn", "resnet") for w, s in WINDOW_STRIDES
                          if s > 1 or arch == "cnn"])  # stride 1 (484 windows) on the cnn only: fast tests
def test_equals_captum_occlusion_with_zero_baseline(arch, window, stride, batch):
    model = seeded_zoo_model(arch, seed=3).eval()
    x, target = batch
    ours = xaicore.explain(model, x, target, method="occlusion", window=window, stride=stride)
    ref = captum_occlusion(model, x, target, window, stride)
    assert_close(ours, ref, model, x)
    assert bool((ref != 0).flatten(1).any(1).all())  # a non-trivial reference for every sample



@pytest.mark.parametrize("arch", ["cnn", "resnet"])
@pytest.mark.parametrize("reference_kind", ["mean_image", "samples"])
def test_mean_fill_equals_captum_with_the_mean_image_as_baseline(arch, reference_kind, batch, digits):
    model = seeded_zoo_model(arch, seed=4).eval()
    x, target = batch
    train = digits.x_train[:64]
    mean_image = train.to(torch.float64).mean(0).to(x.dtype)  # (1, 28, 28)
    reference = mean_image if reference_kind == "mean_image" else train
    ours = xaicore.explain(model, x, target, method="occlusion", window=5, stride=3, fill="mean",
                           reference=reference)
    ref = captum_occlusion(model, x, target, 5, 3, baselines=mean_image[None])
    assert_close(ours, ref, model, x)
    # the mean baseline changes the answer: not the zero fill
    zero = xaicore.explain(model, x, target, method="occlusion", window=5, stride=3)
    assert float((ours - zero).abs().max()) > 1e-3 * float(ref.abs().max())


@pytest.mark.parametrize("arch", ["cnn", "vgg_bn"])
def test_blur_fill_equals_captum_with_the_blurred_image_as_baseline(arch, batch):
    model = seeded_zoo_model(arch, seed=5).eval()
    x, target = batch
    ours = xaicore.explain(model, x, target, method="occlusion", window=4, stride=2, fill="blur")
    ref = captum_occlusion(model, x, target, 4, 2, baselines=gaussian_blur(x))
    assert_close(ours, ref, model, x)


def test_uniform_fill_equals_captum_with_the_documented_noise_as_baseline(batch):
    model = seeded_zoo_model("cnn", seed=6).eval()
    x, target = batch
    noise = fill_for(x, "uniform", seed=9)
    assert float(noise.min()) >= 0 and float(noise.max()) <= 1 and float(noise.std()) > 0.2
    ours = xaicore.explain(model, x, target, method="occlusion", window=6, stride=4, fill="uniform", seed=9)
    assert_close(ours, captum_occlusion(model, x, target, 6, 4, baselines=noise), model, x)
    assert_border_occluded(ours)


@pytest.mark.parametrize(("window", "stride"), [(4, 4), (5, 3)])
def test_three_channel_windows_cover_all_channels_as_captum(window, stride):
    model = seeded_zoo_model("cnn", seed=7, input_shape=(3, 28, 28)).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 28, 28, generator=g)
    target = torch.tensor([1, 5, 8])
    ours = xaicore.explain(model, x, target, method="occlusion", window=window, stride=stride)
    assert_close(ours, captum_occlusion(model, x, target, window, stride), model, x)
    assert_border_occluded(ours)
    assert torch.equal(ours[:, 0], ours[:, 1]) and torch.equal(ours[:, 0], ours[:, 2])


def brute_force_occlusion(model: nn.Module, x: torch.Tensor, target: torch.Tensor, window: int,
                          stride: int) -> torch.Tensor:
    """Occlusion by its definition, one window and one sample at a time in ``x``'s dtype: the drop of the target
    logit when the window (all channels) is zeroed, averaged over the windows covering each pixel (Captum's
    window placement: starts every ``stride`` up to the last one that still fits, plus one cut at the border)."""
    h, w = x.shape[-2:]
    rows = list(range(0, h - window + 1, stride)) + ([h - window + 1] if (h - window) % stride else [])
    cols = list(range(0, w - window + 1, stride)) + ([w - window + 1] if (w - window) % stride else [])
    out = torch.zeros_like(x)
    with torch.no_grad():
        for i in range(x.shape[0]):
            xi, t = x[i:i + 1], int(target[i])
            base = model(xi)[0, t]
            total, count = torch.zeros_like(xi), torch.zeros_like(xi)
            for r in rows:
                for c in cols:
                    occluded = xi.clone()
                    occluded[..., r:r + window, c:c + window] = 0
                    total[..., r:r + window, c:c + window] += base - model(occluded)[0, t]
                    count[..., r:r + window, c:c + window] += 1
            out[i] = (total / count.clamp_min(1))[0]
    return out


@pytest.mark.parametrize(("arch", "window", "stride"), [("cnn", 4, 4), ("vgg_bn", 5, 3), ("resnet", 5, 3)])
def test_float64_models_give_float64_occlusion_equal_to_a_brute_force(arch, window, stride, batch):
    """Captum's Occlusion computes a float64 model's relevance in float32 (measured: 3.4e-8 off), so float64
    parity is with the definition itself, evaluated window by window in float64."""
    model = seeded_zoo_model(arch, seed=3).eval().double()
    x, target = batch
    x = x[:2].double()
    ours = xaicore.explain(model, x, target[:2], method="occlusion", window=window, stride=stride)
    assert ours.dtype == torch.float64
    ref = brute_force_occlusion(model, x, target[:2], window, stride)
    torch.testing.assert_close(ours, ref, rtol=0, atol=logit_atol(model, x))
    assert logit_atol(model, x) < 1e-11 * float(ref.abs().max())


def linear_model(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10, bias=False))
    return model.double().eval()


@pytest.mark.parametrize("window", [4, 5])
def test_linear_model_closed_form_window_sum_of_contributions(window, batch):
    """f(x) = w·x and windows tiling the image (stride = window, the last ones cut at the border for 5 on 28):
    each pixel lies in exactly one window, whose zero fill drops f by the sum of w_t·x over that window."""
    model = linear_model()
    x, target = batch
    x = x.double()
    ours = xaicore.explain(model, x, target, method="occlusion", window=window, stride=window)
    w = model[1].weight.detach().numpy().reshape(10, 28, 28)
    xs = x.numpy()[:, 0]
    expected = np.zeros_like(xs)
    for i in range(x.shape[0]):
        contrib = w[int(target[i])] * xs[i]
        for r0 in range(0, 28, window):
            for c0 in range(0, 28, window):
                expected[i, r0:r0 + window, c0:c0 + window] = contrib[r0:r0 + window, c0:c0 + window].sum()
    np.testing.assert_allclose(ours[:, 0].numpy(), expected, rtol=0, atol=1e-12)
    assert np.abs(expected).max() > 0.1
    # the window sums add up to f(x) - f(0) = f(x) when every pixel lies in one window
    per_window = ours[:, 0, ::window, ::window].sum((1, 2))
    torch.testing.assert_close(per_window, model(x).gather(1, target[:, None])[:, 0].detach(), rtol=0,
                               atol=1e-12)


@pytest.mark.parametrize(("window", "stride"), [(5, 3), (3, 2), (2, 5)])
def test_linear_model_closed_form_with_overlapping_or_sparse_windows(window, stride, batch):
    """A pixel's relevance is the mean over the windows covering it of their window sums of w_t·x, 0 for a pixel
    no window covers (stride > window, beyond what Captum accepts)."""
    model = linear_model(seed=1)
    x, target = batch
    x = x.double()
    ours = xaicore.explain(model, x, target, method="occlusion", window=window, stride=stride)
    w = model[1].weight.detach().numpy().reshape(10, 28, 28)
    starts = [k * stride for k in range(-(-(28 - window) // stride) + 1) if k * stride < 28]
    for i in range(x.shape[0]):
        contrib = w[int(target[i])] * x.numpy()[i, 0]
        total, count = np.zeros((28, 28)), np.zeros((28, 28))
        for r0 in starts:
            for c0 in starts:
                total[r0:r0 + window, c0:c0 + window] += contrib[r0:r0 + window, c0:c0 + window].sum()
                count[r0:r0 + window, c0:c0 + window] += 1
        assert (count.min() >= 1) == (stride <= window)
        expected = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        np.testing.assert_allclose(ours[i, 0].numpy(), expected, rtol=0, atol=1e-12)
        assert np.abs(expected).max() > 0.01


@pytest.mark.parametrize("fill", ["zero", "blur", "uniform"])
def test_batched_equals_per_sample_and_reruns_are_bitwise_equal(fill, batch):
    model = seeded_zoo_model("resnet", seed=8).eval()
    x, target = batch
    kw = dict(method="occlusion", window=5, stride=3, fill=fill, seed=2)
    batched = xaicore.explain(model, x, target, **kw)
    single = torch.cat([xaicore.explain(model, x[i:i + 1], target[i:i + 1], **kw) for i in range(x.shape[0])])
    torch.testing.assert_close(batched, single, rtol=0, atol=logit_atol(model, x))  # other batches: last bits
    assert float(batched.abs().max()) > 1e-4
    assert torch.equal(batched, xaicore.explain(model, x, target, **kw))  # the same batches: the same bits


def test_uniform_fill_depends_on_the_seed(batch):
    model = seeded_zoo_model("cnn", seed=8).eval()
    x, target = batch
    kw = dict(method="occlusion", window=5, stride=3, fill="uniform")
    a = xaicore.explain(model, x, target, seed=1, **kw)
    assert torch.equal(a, xaicore.explain(model, x, target, seed=1, **kw))
    assert not torch.allclose(a, xaicore.explain(model, x, target, seed=2, **kw))


def test_forward_batch_does_not_change_the_result(batch):
    model = seeded_zoo_model("cnn", seed=9).eval()
    x, target = batch
    a = xaicore.explain(model, x, target, method="occlusion", window=4, stride=2, forward_batch=7)
    b = xaicore.explain(model, x, target, method="occlusion", window=4, stride=2, forward_batch=1000)
    torch.testing.assert_close(a, b, rtol=0, atol=logit_atol(model, x))
    assert logit_atol(model, x) < 1e-3 * float(b.abs().max())


@pytest.mark.parametrize("score", ["probability", "log_probability"])
def test_scores_equal_captum_on_the_matching_forward(score, batch):
    model = seeded_zoo_model("cnn", seed=10).eval()
    x, target = batch

    def forward(inp: torch.Tensor) -> torch.Tensor:
        out = model(inp)
        return out.softmax(1) if score == "probability" else out.log_softmax(1)

    ours = xaicore.explain(model, x, target, method="occlusion", window=4, stride=4, score=score)
    assert_close(ours, Occlusion(forward).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 4, 4),
                                                    baselines=0.0, target=target, perturbations_per_eval=16),
                 model, x)


def test_model_keeps_its_training_flag_state_and_no_hooks(batch, helpers):
    model = seeded_zoo_model("vgg_bn", seed=11)
    model.train()
    next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d)).eval()  # a model may mix both flags
    flags = {name: m.training for name, m in model.named_modules()}
    before = helpers.model_state(model)
    x, target = batch
    rel = xaicore.explain(model, x, target, method="occlusion", window=7, stride=7)
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert model.training and not all(flags.values())
    helpers.assert_states_equal(before, helpers.model_state(model))  # BatchNorm statistics untouched
    helpers.assert_no_hooks(model)
    # it ran in eval mode: the same as explaining the model in eval mode
    model.eval()
    torch.testing.assert_close(rel, xaicore.explain(model, x, target, method="occlusion", window=7, stride=7),
                               rtol=0, atol=0)


@pytest.mark.parametrize(("params", "named"), [
    ({"window": 29}, "window"),
    ({"window": 0}, "window"),
    ({"window": 4, "stride": 0}, "stride"),
    ({"fill": "nope"}, "fill"),
    ({"score": "nope"}, "score"),
    ({"forward_batch": 0}, "forward_batch"),
])
def test_bad_parameters_raise_naming_the_parameter(params, named, batch):
    model = seeded_zoo_model("cnn", seed=0).eval()
    x, target = batch
    with pytest.raises(XaiCoreError, match=named) as err:
        xaicore.explain(model, x, target, method="occlusion", **params)
    value = next(iter(params.values())) if len(params) == 1 else params[named]
    assert repr(value) in str(err.value)


def test_a_window_the_fill_leaves_as_it_is_gets_exactly_zero(batch):
    """Zero windows on the digits' zero border drop nothing: exactly 0, also where the passes' last bits depend
    on the batch (the last-bit test mode), so the sign of nothing is never the host's to decide."""
    from xaicore import last_bits

    model = seeded_zoo_model("cnn", seed=3).eval()
    x, target = batch
    was = last_bits.enabled()
    try:
        for on in (False, True):
            last_bits.install(on)
            rel = xaicore.explain(model, x, target, method="occlusion", window=4, stride=4, forward_batch=5)
            blank = (x[..., :4, :4] == 0).flatten(1).all(1)
            assert bool(blank.all())
            assert bool((rel[..., :4, :4] == 0).all())
            assert int((rel != 0).sum()) > 0.25 * rel.numel()  # the digits' windows do drop the score
    finally:
        last_bits.install(was)
