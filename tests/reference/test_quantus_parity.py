"""Peer parity with Quantus 0.6 (read from its installed source): AOPC, model-parameter randomisation and input
invariance give xaicore's numbers when Quantus is made to see exactly the same inputs.

* ``quantus.RegionPerturbation`` (AOPC, Samek et al. 2017) is fed xaicore's replacement values through a
  ``perturb_func``: the per-pixel ``uniform`` noise, the per-region ``dirichlet`` draws, the per-variable training
  mean, and for ``blur`` a Gaussian σ = 3 of the *current* image (Quantus calls ``perturb_func`` on the image the
  previous steps left, so the exact recursion x⁽ᵏ⁾ = g(x⁽ᵏ⁻¹⁾, r_k) is reproduced). Quantus returns, per sample,
  the L drops f(x) − f(x⁽ᵏ⁾), k = 1..L, with no k = 0 point; ours is the curve f(x⁽ᵏ⁾), k = 0..L. So
  Quantus = ``curve[:, :1] − curve[:, 1:]`` and our AOPC = Σ Quantus / (L + 1) (the k = 0 drop is 0).
* ``quantus.MPRT`` (cascading, ``top_down``) re-seeds every layer with the same ``torch.manual_seed(seed + 1)``;
  xaicore seeds each layer from (seed, layer name). The test replaces ``torch`` inside Quantus' model module by a
  proxy whose ``manual_seed`` seeds as xaicore for the layer about to be reset, so Quantus' own deep copy and
  cascade produce our randomized weights (asserted bitwise) and the per-layer similarities are compared.
  Quantus' MPRT flattens each heatmap to 1-D before its ``similarity_func``: its ``ssim`` would then be a 1-D
  SSIM of the flattened vector (and it crashes there anyway: it returns a list, on which MPRT calls
  ``.tolist()``). The SSIM test wraps Quantus' own ``ssim`` to give it back the (H, W) shape; its
  ``normalise_by_max`` divides by one maximum over the whole *batch* unless ``normalise_axes`` is given, so
  (1, 2, 3) is passed to normalise each heatmap by its own max |R| as xaicore does.
* ``quantus.InputInvariance`` cannot be run on the zoo MLP: its ``add_mean_shift_to_first_layer`` takes the
  first named child and reads ``out_channels`` (Conv2d only: the zoo MLP starts with ``Flatten``, and a
  ``Linear`` has no ``out_channels`` either). The test gives Quantus the same MLP written with its first layer
  as a 28×28 ``Conv2d`` (the same function; its output map is 1×1, so Quantus' one compensation value per
  channel is exact). Its default perturbation also leaves the first pixel of every input unshifted
  (``perturb_batch`` passes ``indices[i][1:]``), so it compares R₁(x) with R₂ of an input that is not x + m; a
  ``perturb_func`` adding the shift to every pixel makes it see x + m. Quantus then returns, per sample, the
  verdict ``all(isclose(R₁(x), R₂(x + m), atol=1e-4))`` (rtol 1e-5); xaicore returns the number
  Σ|R₁ − R₂| / Σ|R₁| from the same two heatmaps, so the test compares the networks, the heatmaps, the verdict
  recomputed from ours and our number recomputed from Quantus' heatmaps.
  On a padded convolution (the zoo CNN) Quantus' network 2 is not the network of Kindermans et al.: it
  compensates with one value per channel (the smallest of W∗m over the map), while W∗m varies near the zero
  padded borders; xaicore uses a per-position bias map. That divergence is asserted, not hidden.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import scipy.ndimage as nd
import torch
import torch.nn as nn

import xaicore
from xaicore.kernels.torch_kernels import region_sums
from xaicore.metrics import (
    PERTURBATIONS,
    aopc,
    input_invariance,
    replacement_values,
    shifted_network,
    similarity,
)
from xaicore.models import cascading_controls, parameter_layers

pytestmark = pytest.mark.slow  # imports Quantus, trains the small CNN (session fixture)
quantus = pytest.importorskip("quantus")

REGION = 4
SEED = 5


@pytest.fixture(scope="module")
def digits16(digits):
    return digits.x_test[:16].clone(), digits.y_test[:16].clone()


def _rows(arr: np.ndarray) -> np.ndarray:
    return np.arange(arr.shape[0])[:, None]


def replace_with(arr: np.ndarray, indices: np.ndarray, replacement: np.ndarray, **_: object) -> np.ndarray:
    """Quantus perturb_func: the region's pixels (flat (C, H, W) indices per sample) take xaicore's values."""
    out = arr.copy()
    out[_rows(arr), indices] = replacement[_rows(arr), indices]
    return out


def blur_current(arr: np.ndarray, indices: np.ndarray, shape: tuple[int, ...], **_: object) -> np.ndarray:
    """Quantus perturb_func: the region takes scipy's Gaussian σ = 3 (reflect, 4σ) of the *current* image."""
    blurred = nd.gaussian_filter(arr.reshape(shape).astype(np.float64), (0, 0, 3, 3), mode="reflect",
                                 truncate=4.0).astype(arr.dtype).reshape(arr.shape)
    out = arr.copy()
    out[_rows(arr), indices] = blurred[_rows(arr), indices]
    return out


# ---------------------------------------------------------------------------------------------------- (a) AOPC
@pytest.mark.parametrize("order", ["morf", "lerf"])
@pytest.mark.parametrize("perturbation", PERTURBATIONS)
def test_aopc_equals_region_perturbation(trained_cnn, digits, digits16, perturbation, order):
    x, target = digits16
    relevance = xaicore.explain(trained_cnn, x, target, method="gradient")
    # Precondition: no two regions of a sample tie within float32 rounding. Quantus sums relevance in float32
    # and ranks with an unstable argsort; xaicore sums in float64 with a stable sort. On (near) ties the two
    # could rank legitimately differently, which this test is not about.
    sums = region_sums(relevance, REGION).sort(1).values
    assert float((sums[:, 1:] - sums[:, :-1]).min()) > 1e-5
    n_regions = sums.shape[1]
    reference = digits.x_train  # `mean`: the training set's per-variable mean, as the pipeline passes it
    if perturbation == "blur":
        func, kwargs = blur_current, {"shape": tuple(x.shape)}
    else:
        rep = replacement_values(x, perturbation, seed=SEED, region=REGION, reference=reference)
        func, kwargs = replace_with, {"replacement": rep.reshape(x.shape[0], -1).numpy()}
    metric = quantus.RegionPerturbation(patch_size=REGION, order=order, regions_evaluation=n_regions, abs=False,
                                        normalise=False, perturb_func=func, perturb_func_kwargs=kwargs,
                                        disable_warnings=True, display_progressbar=False)
    theirs = np.asarray(metric(model=trained_cnn, x_batch=x.numpy(), y_batch=target.numpy(),
                               a_batch=relevance.numpy(), channel_first=True, softmax=False, device="cpu",
                               batch_size=x.shape[0]), dtype=np.float64)
    ours = aopc(trained_cnn, x, target, relevance, order=order, perturbation=perturbation, region=REGION,
                seed=SEED, reference=reference)
    drops = (ours.curve[:, :1] - ours.curve[:, 1:]).double().numpy()
    assert theirs.shape == drops.shape == (16, n_regions)
    # Both feed the same float32 inputs to the same model; only the batch composition differs (xaicore packs 16
    # steps into one forward pass of 256 inputs, Quantus passes the 16 samples of one step), which may change
    # the summation order inside the conv/matmul kernels by a few ulps of logits of magnitude ≤ ~20 (ulp
    # 2e-6). 5e-5 is ~25 ulps, while one disabled region moves the logit by ~1e-2 or more.
    np.testing.assert_allclose(drops, theirs, rtol=0, atol=5e-5)
    np.testing.assert_allclose(ours.aopc.numpy(), theirs.sum(1) / (n_regions + 1), rtol=0, atol=5e-5)
    assert np.abs(theirs).max() > 1.0  # the curves do move: the comparison is not between two flat lines


# ------------------------------------------------------------------------------- (b) model-parameter randomisation
class _SeedAsXaicore:
    """Stands for ``torch`` inside Quantus' model module: ``manual_seed`` seeds the next layer to be reset as
    :func:`xaicore.models.randomize_layers` does (seed · 1_000_003 + crc32(name)); everything else is torch."""

    def __init__(self, layers: list[str], seed: int) -> None:
        self._layers = iter(layers)
        self._seed = seed

    def manual_seed(self, seed: int):  # Quantus passes its own seed + 1: ignored
        return torch.manual_seed(self._seed * 1_000_003 + zlib.crc32(next(self._layers).encode()))

    def __getattr__(self, name: str):
        return getattr(torch, name)


def _ssim_2d(shape: tuple[int, int]):
    from quantus.functions.similarity_func import ssim

    def func(a: np.ndarray, b: np.ndarray, batched: bool = True, **_: object) -> np.ndarray:
        return np.asarray(ssim(a.reshape(-1, *shape), b.reshape(-1, *shape), batched=True))
    return func


@pytest.mark.parametrize("measure", ["spearman", "spearman_abs", "ssim"])
def test_mprt_cascading_equals_ours(trained_cnn, digits16, monkeypatch, measure):
    from quantus.helpers.model import pytorch_model

    x, target = digits16
    layers = parameter_layers(trained_cnn)[::-1]  # top down: fc2, fc1, conv2, conv1
    controls = cascading_controls(trained_cnn, SEED)
    seen: list[dict[str, torch.Tensor]] = []

    def explain_func(model, inputs, targets, **_):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return xaicore.explain(model, torch.as_tensor(inputs), torch.as_tensor(targets), method="gradient").numpy()

    monkeypatch.setattr(pytorch_model, "torch", _SeedAsXaicore(layers, SEED))
    kwargs = {
        "spearman": {"abs": False, "normalise": False},
        "spearman_abs": {"abs": True, "normalise": False},
        "ssim": {"abs": False, "normalise": True, "normalise_func_kwargs": {"normalise_axes": (1, 2, 3)},
                 "similarity_func": _ssim_2d(tuple(x.shape[2:]))},
    }[measure]
    metric = quantus.MPRT(layer_order="top_down", seed=SEED, disable_warnings=True, **kwargs)
    reference = xaicore.explain(trained_cnn, x, target, method="gradient")
    scores = metric(model=trained_cnn, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=reference.numpy(),
                    explain_func=explain_func, channel_first=True, device="cpu", batch_size=x.shape[0])
    assert list(scores) == ["original", *layers]
    np.testing.assert_allclose(scores["original"], 1.0, atol=1e-6)  # the trained model against itself
    assert len(seen) == 1 + len(layers)
    for key, value in trained_cnn.state_dict().items():
        assert torch.equal(seen[0][key], value), key
    for i, name in enumerate(layers):
        control = controls[f"cascade:{name}"]
        for key, value in control.state_dict().items():  # Quantus' randomized model is ours, bit for bit
            assert torch.equal(seen[i + 1][key], value), f"{name}: {key}"
        ours = similarity(reference, xaicore.explain(control, x, target, method="gradient"), measure).numpy()
        # Same heatmaps (same models, inputs and explainer) on both sides; Spearman is computed from float64
        # ranks by both, SSIM in float64 by both (Quantus normalises in float32 first: ~1e-7 relative); xaicore
        # returns float32. 1e-6 covers both roundings; the scores themselves spread over [-0.4, 0.8].
        np.testing.assert_allclose(ours, np.asarray(scores[name], dtype=np.float64), rtol=0, atol=1e-6)
    assert float(np.std(scores[layers[0]])) > 1e-3  # per-sample scores, not one constant


# ------------------------------------------------------------------------------------------- (c) input invariance
def _conv_form(mlp: nn.Sequential, side: int = 28) -> nn.Sequential:
    """The zoo MLP with fc1 written as a side×side Conv2d (1×1 output map): the same function, a first layer
    Quantus can shift."""
    fc1 = mlp.fc1
    conv = nn.Conv2d(1, fc1.out_features, side)
    with torch.no_grad():
        conv.weight.copy_(fc1.weight.view(fc1.out_features, 1, side, side))
        conv.bias.copy_(fc1.bias)
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), mlp.fc2, mlp.relu2, mlp.fc3).eval()


def _shift_every_pixel(arr: np.ndarray, input_shift: float, **_: object) -> np.ndarray:
    return (arr + np.asarray(input_shift, dtype=arr.dtype)).astype(arr.dtype)


def _run_input_invariance(model, x, target, method, shift, perturb_func=None):
    """Quantus' per-sample verdicts and the (model, input, heatmap) of each explain_func call: R₁, then R₂."""
    calls = []

    def explain_func(model, inputs, targets, **_):
        r = xaicore.explain(model, torch.as_tensor(inputs), torch.as_tensor(targets), method=method).numpy()
        calls.append((model, np.array(inputs), r))
        return r

    metric = quantus.InputInvariance(input_shift=shift, perturb_func=perturb_func, disable_warnings=True)
    verdict = metric(model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=None,
                     explain_func=explain_func, channel_first=True, device="cpu", batch_size=x.shape[0])
    assert len(calls) == 2
    return np.asarray(verdict, dtype=bool), calls


@pytest.mark.parametrize("method", ["gradient", "gradient_x_input"])
def test_input_invariance_equals_ours(mlp, digits16, method):
    x, target = digits16
    shift = -1.0
    net1 = _conv_form(mlp)
    with torch.no_grad():
        torch.testing.assert_close(net1(x), mlp(x), rtol=0, atol=1e-5)
    verdict, ((_, x1, r1), (net2, x2, r2)) = _run_input_invariance(net1, x, target, method, shift,
                                                                    _shift_every_pixel)
    np.testing.assert_array_equal(x1, x.numpy())
    np.testing.assert_array_equal(x2, (x + shift).numpy())  # Quantus' network 2 saw exactly x + m
    ours_net2 = shifted_network(mlp, shift, tuple(x.shape[1:]))
    # network 2: b₂ = b₁ − W·m on both sides (float32 sums of 784 terms in different orders)
    torch.testing.assert_close(net2[0].bias.detach(), ours_net2.fc1.bias.detach(), rtol=0, atol=1e-5)
    ours_r1 = xaicore.explain(mlp, x, target, method=method).numpy()
    ours_r2 = xaicore.explain(ours_net2, x + shift, target, method=method).numpy()
    # conv and linear forms of the same layer round differently (~1e-7): a heatmap tolerance of 1e-5
    np.testing.assert_allclose(r1, ours_r1, rtol=0, atol=1e-5)
    np.testing.assert_allclose(r2, ours_r2, rtol=0, atol=1e-5)
    # the verdict: Quantus' test, applied to xaicore's heatmaps, gives Quantus' answer
    np.testing.assert_array_equal(verdict, np.isclose(ours_r1, ours_r2, atol=1e-4).reshape(16, -1).all(1))
    # the number: xaicore's score, recomputed from Quantus' own two heatmaps
    score = input_invariance(mlp, x, target, method, shift).double().numpy()
    theirs = np.abs(r1 - r2).reshape(16, -1).sum(1) / np.abs(r1).reshape(16, -1).sum(1)
    np.testing.assert_allclose(score, theirs, rtol=1e-4, atol=1e-6)
    if method == "gradient":  # invariant (Kindermans et al.): Quantus says so, ours is ~0
        assert verdict.all() and float(score.max()) < 1e-5
    else:  # R₂ − R₁ = m ⊙ g: not invariant, and by far
        assert not verdict.any() and float(score.min()) > 1.0


def test_quantus_default_shift_skips_the_first_pixel(mlp, digits16):
    """Quantus' own perturbation leaves flat pixel 0 of every input unshifted, so network 2 gets an input that
    is not x + m and even the gradient, which is input invariant, fails its test on this MLP."""
    x, target = digits16
    verdict, (_, (_, x2, _)) = _run_input_invariance(_conv_form(mlp), x, target, "gradient", -1.0)
    diff = (x2 - (x - 1.0).numpy()).reshape(16, -1)
    np.testing.assert_array_equal(diff[:, 0], 1.0)  # pixel 0 kept x (the digits' corner is 0; x + m is −1)
    np.testing.assert_array_equal(diff[:, 1:], 0.0)
    assert not verdict.all()
    assert float(input_invariance(mlp, x, target, "gradient", -1.0).max()) < 1e-5  # xaicore: invariant


def test_padded_conv_quantus_compensates_one_value_per_channel(cnn, digits16):
    """On the zoo CNN (3×3 conv, zero padding 1) W∗m is not constant over the map: Quantus subtracts its
    smallest value per channel, xaicore the whole map, so only xaicore's network 2 computes f₂(x + m) = f₁(x)."""
    from quantus.helpers.model.pytorch_model import PyTorchModel

    x = digits16[0]
    shift = -1.0
    theirs = PyTorchModel(cnn, channel_first=True).add_mean_shift_to_first_layer(shift, (1, 1, 28, 28))
    ours = shifted_network(cnn, shift, (1, 28, 28))
    conv = cnn.conv1
    wm = torch.nn.functional.conv2d(torch.full((1, 1, 28, 28), shift), conv.weight, None, 1, 1)[0]  # (16, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(ours.conv1.bias_map, conv.bias[:, None, None] - wm, rtol=0, atol=1e-6)
        torch.testing.assert_close(theirs.conv1.bias, conv.bias - wm.flatten(1).min(1).values, rtol=0, atol=1e-6)
        assert float((wm.flatten(1).max(1).values - wm.flatten(1).min(1).values).min()) > 1e-2  # not constant
        assert float((ours(x + shift) - cnn(x)).abs().max()) < 1e-5
        assert float((theirs(x + shift) - cnn(x)).abs().max()) > 1e-3
