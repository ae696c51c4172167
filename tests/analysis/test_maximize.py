"""Activation maximisation and dataset examples (Erhan et al. 2009; Simonyan et al. 2014; Yosinski et al. 2015;
Nguyen et al. 2016; survey §6.6) against closed forms and brute force.

* a linear unit w·x under the norm constraint ‖x‖₂ ≤ r: the maximiser is r·w/‖w‖ in closed form;
* dataset examples: equal to a stable sort of activations computed by hand (logits, a conv channel's spatial
  mean through a manual forward, a linear feature), ties to the lower index;
* on the trained CNN: the maximisers of the 10 logits are classified as their class (pixels and generator), the
  maximisers of conv2 channels activate them more than the start and than the test digits do;
* batched == per-unit, determinism, the model left untouched, and the errors.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from xaicore.analysis import PARAMETERIZATIONS, DatasetExamples, dataset_examples, maximize
from xaicore.analysis.maximize import gaussian_blur, total_variation
from xaicore.errors import XaiCoreError
from xaicore.explain.optimisation import AutoencoderState

SHAPE = (1, 28, 28)
# Settings of test 3 (10/10 classes for seeds 0-5 when written): plain gradient ascent with Yosinski et al.'s
# decay, jitter and an occasional blur; the generator needs only a small code decay.
PIXELS = dict(lr=0.1, n_steps=300, l2=1e-3, jitter=1, blur_every=8, blur_sigma=0.5)
GENERATOR = dict(parameterization="generator", lr=0.05, n_steps=200, l2=1e-3)


@pytest.fixture
def ae_state(digits_autoencoder) -> AutoencoderState:
    return digits_autoencoder


def conv2_means(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 32): the spatial mean of conv2's output, by a manual forward through the zoo CNN's first layers."""
    with torch.no_grad():
        return model.conv2(model.pool1(model.relu1(model.conv1(x)))).mean((2, 3))


def fc1_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        h = model.pool2(model.relu2(model.conv2(model.pool1(model.relu1(model.conv1(x))))))
        return model.fc1(model.flatten(h))


# --- closed form: a linear unit under a norm constraint ---------------------------------------------------

def test_linear_unit_reaches_the_scaled_weight_vector(one_thread):
    gen = torch.Generator().manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(3, 16, generator=gen, dtype=torch.float64))
        model[1].bias.copy_(torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64))
    r = 2.5
    x = maximize(model, [0, 1, 2], shape=(1, 4, 4), radius=r, l2=0.0, data_range=None)
    assert x.shape == (3, 1, 4, 4) and x.dtype == torch.float64
    for u in range(3):
        w = model[1].weight[u].detach()
        xu = x[u].flatten()
        cos = float(xu @ w / (xu.norm() * w.norm()))
        assert cos >= 0.999, (u, cos)
        assert abs(float(xu.norm()) - r) <= 1e-3 * r, (u, float(xu.norm()))
        assert torch.allclose(xu, r * w / w.norm(), atol=1e-3 * r)


def test_blur_and_total_variation_closed_forms():
    x = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    x[0, 0, 1, 1] = 1.0
    assert float(total_variation(x)) == 4.0
    assert torch.allclose(gaussian_blur(torch.full((2, 3, 5, 5), 0.7), 0.8), torch.full((2, 3, 5, 5), 0.7))
    impulse = torch.zeros(1, 1, 7, 7, dtype=torch.float64)
    impulse[0, 0, 3, 3] = 1.0  # the kernel of σ = 0.5 (radius 2) stays clear of the border: mass is kept
    blurred = gaussian_blur(impulse, 0.5)
    assert blurred[0, 0, 3, 3] < 1 and blurred[0, 0, 2, 3] > 0 and blurred[0, 0, 0, 0] == 0
    assert torch.allclose(blurred[0, 0, 2, 3], blurred[0, 0, 3, 4]) and abs(float(blurred.sum()) - 1) < 1e-12


# --- dataset examples: brute force -------------------------------------------------------------------------

def _brute(values: torch.Tensor, units: list[int], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k per unit of the (N, n_units) activations, descending, ties to the lower index (by a Python sort)."""
    idx, val = [], []
    for u in units:
        col = values[:, u].tolist()
        order = sorted(range(len(col)), key=lambda i: (-col[i], i))[:k]
        idx.append(order)
        val.append([col[i] for i in order])
    return torch.tensor(idx), torch.tensor(val, dtype=values.dtype)


@pytest.mark.parametrize("layer", [None, "conv2", "fc1"])
def test_dataset_examples_equal_a_brute_force_sort(trained_cnn, digits, layer, one_thread):
    x = digits.x_test[:120]
    x = torch.cat([x, x[:30]])  # duplicates: exact ties, which go to the lower index
    units = [0, 3, 7] if layer != "fc1" else [1, 64, 127]
    res = dataset_examples(trained_cnn, x, units, layer=layer, k=9, batch_size=x.shape[0])
    if layer is None:
        with torch.no_grad():
            acts = trained_cnn(x)
    else:
        acts = conv2_means(trained_cnn, x) if layer == "conv2" else fc1_features(trained_cnn, x)
    indices, values = _brute(acts, units, 9)
    assert isinstance(res, DatasetExamples)
    assert res.indices.dtype == torch.long and res.indices.shape == (3, 9) and res.values.shape == (3, 9)
    assert torch.equal(res.indices, indices)
    assert torch.allclose(res.values, values, rtol=0, atol=1e-6)
    for row in res.indices.tolist():  # a duplicated top input: the original (lower) index comes first
        for i in row:
            if i >= 120:
                assert i - 120 in row and row.index(i - 120) < row.index(i)
    # batching does not change the ranking beyond float noise
    small = dataset_examples(trained_cnn, x, units, layer=layer, k=9, batch_size=37)
    assert torch.allclose(small.values, res.values, atol=1e-5)


def test_dataset_examples_with_k_equal_n_is_the_full_ranking(trained_cnn, digits):
    x = digits.x_test[:10]
    res = dataset_examples(trained_cnn, x, torch.tensor([2]), k=10, batch_size=3)
    assert sorted(res.indices[0].tolist()) == list(range(10))
    assert torch.all(res.values[0, :-1] >= res.values[0, 1:])


# --- the trained CNN --------------------------------------------------------------------------------------

def _class_fraction(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == torch.arange(10)).float().mean())


def test_pixel_maximisers_are_classified_as_their_class(trained_cnn, one_thread):
    x = maximize(trained_cnn, list(range(10)), shape=SHAPE, **PIXELS)
    assert x.shape == (10, *SHAPE) and float(x.min()) >= 0 and float(x.max()) <= 1
    fraction = _class_fraction(trained_cnn, x)
    assert fraction >= 0.9, f"pixels: {fraction:.0%} of the class maximisers classified as their class"


def test_generator_maximisers_are_classified_as_their_class(trained_cnn, ae_state, one_thread):
    x = maximize(trained_cnn, list(range(10)), shape=SHAPE, reference=ae_state, **GENERATOR)
    assert x.shape == (10, *SHAPE)
    assert float(x.min()) >= ae_state.low and float(x.max()) <= ae_state.high
    fraction = _class_fraction(trained_cnn, x)
    assert fraction >= 0.9, f"generator: {fraction:.0%} of the class maximisers classified as their class"


def test_conv2_channel_maximisers_beat_the_start_and_the_digits(trained_cnn, digits, one_thread):
    units = [0, 5, 17, 31]
    x = maximize(trained_cnn, units, shape=SHAPE, layer="conv2", lr=0.05, n_steps=100, l2=1e-3, jitter=1,
                 blur_every=8, seed=3)
    # the documented start: the middle of the data range plus 0.01·N(0, 1) from the unit's own generator
    start = torch.stack([0.5 + 0.01 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(3 * 1_000_003 + u),
                                                   dtype=torch.float64) for u in units]).float()
    rows = torch.arange(len(units))
    reached = conv2_means(trained_cnn, x)[rows, units]
    initial = conv2_means(trained_cnn, start)[rows, units]
    on_digits = conv2_means(trained_cnn, digits.x_test)[:, units].mean(0)
    assert torch.all(reached > initial), (reached, initial)
    assert torch.all(reached > on_digits), (reached, on_digits)


# --- batching, determinism, side effects ---------------------------------------------------------------------

@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_batched_equals_per_unit_and_seeds(trained_cnn, ae_state, parameterization, one_thread):
    kw = dict(shape=SHAPE, n_steps=40, jitter=1)
    kw.update(dict(blur_every=4, tv=1e-3) if parameterization == "pixels"
              else dict(parameterization="generator", reference=ae_state))
    both = maximize(trained_cnn, [3, 7], **kw)
    alone = torch.cat([maximize(trained_cnn, [3], **kw), maximize(trained_cnn, torch.tensor([7]), **kw)])
    assert torch.allclose(both, alone, rtol=0, atol=1e-6), float((both - alone).abs().max())
    reversed_ = maximize(trained_cnn, [7, 3], **kw)
    assert torch.allclose(both, reversed_.flip(0), rtol=0, atol=1e-6)
    assert torch.equal(both, maximize(trained_cnn, [3, 7], **kw))
    other = maximize(trained_cnn, [3, 7], seed=1, **kw)
    assert not torch.equal(both, other)


def test_the_model_is_left_unchanged(trained_cnn, digits, ae_state, helpers):
    trained_cnn.fc1.train()  # a mixed model: every module's own flag must come back
    flags = [m.training for m in trained_cnn.modules()]
    before = helpers.model_state(trained_cnn)
    maximize(trained_cnn, [1, 2], shape=SHAPE, n_steps=3, jitter=1, blur_every=2, tv=0.01, radius=5.0)
    maximize(trained_cnn, [4], shape=SHAPE, layer="conv2", n_steps=3)
    maximize(trained_cnn, [0], shape=SHAPE, n_steps=3, reference=ae_state, parameterization="generator")
    dataset_examples(trained_cnn, digits.x_test[:20], [0, 1], layer="relu3", k=3)
    with pytest.raises(XaiCoreError):
        maximize(trained_cnn, [99], shape=SHAPE, layer="conv2")
    helpers.assert_states_equal(before, helpers.model_state(trained_cnn))
    helpers.assert_no_hooks(trained_cnn)
    assert [m.training for m in trained_cnn.modules()] == flags
    assert all(p.grad is None and p.requires_grad for p in trained_cnn.parameters())


def test_erhan_variant_with_only_l2_runs_without_clipping(cnn):
    x = maximize(cnn, [0], shape=SHAPE, n_steps=5, l2=0.1, data_range=None)
    assert x.shape == (1, *SHAPE) and torch.isfinite(x).all()


# --- errors -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(parameterization="gan"), "unknown parameterization 'gan'.*pixels, generator"),
    (dict(layer="conv9"), "unknown layer 'conv9'.*conv1, relu1, pool1, conv2.*fc2"),
    (dict(units=[10]), r"out of range.*10 classes"),
    (dict(units=[-1]), r"out of range.*10 classes"),
    (dict(units=[32], layer="conv2"), r"out of range.*32 channels in layer 'conv2'"),
    (dict(units=[]), "units is empty"),
    (dict(units=[1.5]), "units must be integers"),
    (dict(n_steps=0), "n_steps=0 must be an integer >= 1"),
    (dict(lr=0.0), "lr=0.0 must be > 0"),
    (dict(lr=-1.0), "lr=-1.0 must be > 0"),
    (dict(l2=-0.1), "l2=-0.1 must be >= 0"),
    (dict(tv=-1.0), "tv=-1.0 must be >= 0"),
    (dict(radius=0.0), "radius=0.0 must be > 0"),
    (dict(radius=-2.0), "radius=-2.0 must be > 0"),
    (dict(jitter=-1), "jitter=-1 must be an integer >= 0"),
    (dict(shape=(28, 28)), r"shape=\(28, 28\) must be \(C, H, W\)"),
    (dict(data_range=(1.0, 0.0)), "data_range"),
    (dict(parameterization="generator"), r"needs a fitted autoencoder.*xaicore.fit\(model, x_train, "
                                         r"method=\"cem.pn\"\).*autoencoder stage"),
])
def test_errors(cnn, kwargs, match):
    args = dict(units=[0], shape=SHAPE, n_steps=2)
    args.update(kwargs)
    units = args.pop("units")
    with pytest.raises(XaiCoreError, match=match):
        maximize(cnn, units, **args)


def test_generator_errors(cnn, ae_state):
    with pytest.raises(XaiCoreError, match=r"fitted on inputs of shape \(1, 28, 28\), got \(1, 32, 32\)"):
        maximize(cnn, [0], shape=(1, 32, 32), parameterization="generator", reference=ae_state, n_steps=2)
    with pytest.raises(XaiCoreError, match="blur_every and radius act on pixels"):
        maximize(cnn, [0], shape=SHAPE, parameterization="generator", reference=ae_state, n_steps=2, radius=3.0)


def test_dataset_examples_errors(cnn, digits):
    x = digits.x_test[:5]
    with pytest.raises(XaiCoreError, match=r"k=6 is larger than the number of inputs in x \(5\)"):
        dataset_examples(cnn, x, [0], k=6)
    with pytest.raises(XaiCoreError, match="unknown layer 'nope'.*conv1"):
        dataset_examples(cnn, x, [0], layer="nope", k=2)
    with pytest.raises(XaiCoreError, match=r"out of range.*128 channels in layer 'fc1'"):
        dataset_examples(cnn, x, [128], layer="fc1", k=2)
    with pytest.raises(XaiCoreError, match="k=0 must be an integer >= 1"):
        dataset_examples(cnn, x, [0], k=0)
