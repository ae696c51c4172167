"""The explainer contract on every zoo model (DESIGN §3), and the zoo's own contract.

Every registered method — those registered later included — runs on every architecture of the zoo (untrained,
seeded, BatchNorm statistics made non-trivial), in eval and in train mode: the relevance has x's shape and dtype
and is finite, batched equals per-sample, and the model is left exactly as it was (parameters and buffers bitwise —
BatchNorm running statistics must not move — no hooks, training flags, no ``.grad``). A method that cannot apply
to a model must say so with one :class:`XaiCoreError` line, and leave the model as it was too.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.modules.module as module_globals

import xaicore
from tests.zoo_models import fitted_params, seeded_zoo_model
from xaicore import XaiCoreError, last_bits
from xaicore.config import ARCHS as CONFIG_ARCHS
from xaicore.data import load_digits28
from xaicore.explain import get_explainer
from xaicore.models import (
    ARCHS,
    build_model,
    cascading_controls,
    independent_controls,
    parameter_layers,
    randomize_layers,
    train_model,
)

ZOO = ["cnn", "mlp", "vgg_bn", "resnet", "densenet"]
METHODS = xaicore.methods()
# CEM on untrained models (logits within ±0.1; the label is rarely the prediction, so a PN needs a margin that
# δ = 0 does not meet): big steps, no autoencoder term
CEM_FAST = {"c_steps": 2, "n_steps": 10, "lr": 0.05, "c_init": 100.0, "gamma": 0.0, "data_range": (0.0, 1.0)}
FAST_PARAMS = {"integrated_gradients": {"n_steps": 4}, "smoothgrad": {"n_samples": 4},
               "lime": {"n_samples": 80, "n_segments": 20}, "pda": {"stride": 4, "n_samples": 2},
               "anchors": {"max_samples": 400, "batch_size": 20, "n_segments": 10},
               "occlusion": {"stride": 4}}
#: (method, arch) pairs that must raise XaiCoreError: the method needs something the model lacks
NOT_APPLICABLE = {("gradcam", "mlp")}
#: methods every zoo model must support (outside NOT_APPLICABLE); every method must support the survey's cnn
CORE = {"gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "deconvnet", "guided_backprop",
        "gradcam", "random"}
RTOL = 1e-5
FAST_PARAMS.update({"cem.pp": {**CEM_FAST, "kappa": 0.0}, "cem.pn": {**CEM_FAST, "kappa": 0.1}})


def zoo_model(arch: str, seed: int = 0) -> nn.Module:
    return seeded_zoo_model(arch, seed=seed)


def must_apply(method: str, arch: str) -> bool:
    return (method, arch) not in NOT_APPLICABLE and (method in CORE or arch == "cnn")


def snapshot(model: nn.Module) -> tuple:
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            {name: m.training for name, m in model.named_modules()},
            [p.requires_grad for p in model.parameters()])


def assert_unchanged(model: nn.Module, before: tuple, helpers) -> None:
    state, flags, requires_grad = before
    helpers.assert_states_equal(state, model.state_dict())  # parameters and buffers, bitwise
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert [p.requires_grad for p in model.parameters()] == requires_grad
    assert all(p.grad is None for p in model.parameters()), "explainer left .grad on the parameters"
    helpers.assert_no_hooks(model)
    for name in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks"):
        left = [h for h in getattr(module_globals, name).values() if h is not last_bits.hook]  # the test mode's
        assert not left, f"a global module hook remains in {name}"
    assert not torch._C._is_torch_function_mode_enabled(), "a TorchFunctionMode remains active"


def run(model, x, target, method):
    kw = {**FAST_PARAMS.get(method, {}), **fitted_params(method, model, x)}
    return xaicore.explain(model, x, target, method=method, **kw)


@pytest.fixture(scope="module")
def batch(digits):
    return digits.x_test[10:13].clone(), digits.y_test[10:13].clone()


# train mode checks everything eval mode does, plus the restored flags and still BatchNorm statistics: it is the
# quick tier; the eval-mode twin runs with the slow tests
@pytest.mark.parametrize("mode", ["train", pytest.param("eval", marks=pytest.mark.slow)])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ZOO)
def test_every_method_on_every_zoo_model(arch, method, mode, batch, helpers):
    model = zoo_model(arch).train(mode == "train")
    x, target = batch
    before = snapshot(model)
    try:
        out = run(model, x, target, method)
    except XaiCoreError as err:
        assert_unchanged(model, before, helpers)
        assert not must_apply(method, arch), f"{method} must apply to {arch}: {err}"
        message = str(err)
        assert message and "\n" not in message and len(message) < 400
        with pytest.raises(XaiCoreError):  # not a batch-dependent failure
            run(model, x[:1], target[:1], method)
        return
    assert (method, arch) not in NOT_APPLICABLE, f"{method} on {arch} should have raised XaiCoreError"
    assert_unchanged(model, before, helpers)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert not out.requires_grad and bool(torch.isfinite(out).all())
    single = torch.cat([run(model, x[i:i + 1], target[i:i + 1], method) for i in range(x.shape[0])])
    scale = max(float(single.abs().max()), 1e-30)
    tol = RTOL
    if get_explainer(method).family == "perturbation":
        # relevance is a difference of two forward passes: their float32 rounding, which depends on how many
        # inputs share a pass, is relative to the scores, not to their (small) difference
        with torch.no_grad():
            scale = max(scale, float(model.eval()(x).abs().max()))
        model.train(mode == "train")
    elif method == "taylor":
        # 50 bisection steps on f in float32 end where f's rounding (batch-size dependent) decides the sign: the
        # root point moves by ~1e-7 relative, the gradient there by more (measured: 5e-5 of the largest value)
        tol = 1e-4
    torch.testing.assert_close(out, single, rtol=tol, atol=tol * scale)
    assert_unchanged(model, before, helpers)
    if mode == "train":  # the heatmap is that of the model in eval mode
        torch.testing.assert_close(out, run(model.eval(), x, target, method), rtol=0, atol=0)


# --- the zoo -----------------------------------------------------------------------------------------------

LAYERS = {
    "cnn": ["conv1", "conv2", "fc1", "fc2"],
    "mlp": ["fc1", "fc2", "fc3"],
    "vgg_bn": ["conv1_1", "bn1_1", "conv1_2", "bn1_2", "conv2_1", "bn2_1", "conv2_2", "bn2_2", "fc1", "fc2"],
    "resnet": ["conv1", "bn1", "block1.conv1", "block1.bn1", "block1.conv2", "block1.bn2", "block1.downsample.conv",
               "block1.downsample.bn", "block2.conv1", "block2.bn1", "block2.conv2", "block2.bn2", "fc"],
    "densenet": ["conv0", "dense1.bn", "dense1.conv", "dense2.bn", "dense2.conv", "transition.bn",
                 "transition.conv", "bn_final", "fc"],
}


def test_zoo_is_configurable():
    assert list(ARCHS) == ZOO
    assert set(CONFIG_ARCHS) == set(ARCHS)
    with pytest.raises(XaiCoreError, match="unknown model architecture 'vgg'"):
        build_model("vgg", (1, 28, 28), 10)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 28, 28), (3, 32, 32), (1, 20, 24)])
@pytest.mark.parametrize("arch", ["vgg_bn", "resnet", "densenet"])
def test_zoo_shapes_and_layer_names(arch, shape):
    model = zoo_model(arch) if shape == (1, 28, 28) else build_model(arch, shape, 7)
    n_classes = 10 if shape == (1, 28, 28) else 7
    assert model.eval()(torch.rand(2, *shape)).shape == (2, n_classes)
    assert parameter_layers(model) == LAYERS[arch]
    assert all(isinstance(m, nn.ReLU) for name, m in model.named_modules() if "relu" in name.rsplit(".", 1)[-1])


@pytest.mark.parametrize("stride", [1, 2])
def test_resnet_block_is_torchvisions_basic_block(stride):
    """The zoo's BasicBlock (kept out of torchvision for its 3 s import) has torchvision's state-dict keys, calls
    its modules in torchvision's order and gives the same numbers, bit for bit, in eval and in train mode."""
    from torchvision.models.resnet import BasicBlock as TorchvisionBlock

    from xaicore.models.zoo import BasicBlock

    def down() -> nn.Module | None:
        return None if stride == 1 else nn.Sequential(nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))

    planes = 4 if stride == 1 else 8
    torch.manual_seed(0)
    ours, theirs = BasicBlock(4, planes, stride, down()), TorchvisionBlock(4, planes, stride, down())
    for m in ours.modules():  # non-trivial BatchNorm statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.2, 0.2)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 4, 9, 9)
    for train in (False, True):
        order: dict[str, list[str]] = {"ours": [], "theirs": []}
        for key, block in (("ours", ours), ("theirs", theirs)):
            block.train(train)
            hooks = [m.register_forward_hook(lambda m, i, o, n=n, seen=order[key]: seen.append(n))
                     for n, m in block.named_modules() if n]
            out = block(x.clone())
            for h in hooks:
                h.remove()
            order[key + "_out"] = out  # type: ignore[assignment]
        assert torch.equal(order["ours_out"], order["theirs_out"])  # type: ignore[arg-type]
        assert order["ours"] == order["theirs"]


@pytest.mark.parametrize("arch", ["vgg_bn", "resnet", "densenet"])
def test_too_small_images_are_refused(arch):
    with pytest.raises(XaiCoreError, match=f"{arch} needs images of at least"):
        build_model(arch, (1, 1, 1), 10)


@pytest.mark.parametrize("arch", ZOO)
def test_controls_on_the_zoo(arch, helpers):
    """One control per parameter layer; BatchNorm layers are reset to their default init (γ=1, β=0, running
    statistics 0/1); the model itself is not touched."""
    model = zoo_model(arch).eval()
    before = helpers.model_state(model)
    layers = parameter_layers(model)
    cascade, independent = cascading_controls(model, seed=0), independent_controls(model, seed=0)
    assert list(cascade) == [f"cascade:{n}" for n in layers[::-1]]
    assert list(independent) == [f"independent:{n}" for n in layers[::-1]]
    helpers.assert_states_equal(before, helpers.model_state(model))
    x = torch.rand(2, 1, 28, 28)
    ref = model(x)
    for name in layers:
        control = independent[f"independent:{name}"]
        changed = {k for k, v in control.state_dict().items() if not torch.equal(v, before[k])}
        assert changed and all(k.startswith(f"{name}.") for k in changed), (name, changed)
        assert not torch.equal(control(x), ref)
        layer = dict(control.named_modules())[name]
        if isinstance(layer, nn.BatchNorm2d):
            assert bool((layer.weight == 1).all() and (layer.bias == 0).all())
            assert bool((layer.running_mean == 0).all() and (layer.running_var == 1).all())
    bottom = cascade[f"cascade:{layers[0]}"]
    assert all(not torch.equal(v, before[k]) for k, v in bottom.state_dict().items()
               if k.rsplit(".", 1)[-1] in ("weight", "running_var"))
    assert torch.equal(randomize_layers(model, [layers[-1]], seed=0).state_dict()[f"{layers[-1]}.weight"],
                       independent[f"independent:{layers[-1]}"].state_dict()[f"{layers[-1]}.weight"])


@pytest.mark.slow
@pytest.mark.hostdep
@pytest.mark.parametrize("arch", ["vgg_bn", "resnet", "densenet"])
def test_new_architectures_learn_the_digits_in_three_epochs(arch, one_thread):
    """Two of three training seeds reach 80 % test accuracy in 3 epochs. One run is no test of that on every CPU:
    the BatchNorm VGG's seed 0 reached 0.947 on one host and 0.597 on another (the last bits of its convolutions
    differ, and so does the whole trajectory), and its seed 1 falls from 0.933 at 3 epochs to 0.656 at 5 on the
    first. (How long training takes is measured in benchmarks/, not asserted here.)"""
    data = load_digits28()
    accuracies = []
    for seed in range(3):
        result = train_model(arch, data.x_train, data.y_train, n_classes=10, epochs=3, batch_size=32, lr=0.003,
                             seed=seed, x_test=data.x_test, y_test=data.y_test, progress=False)
        accuracies.append(result.test_accuracy)
        if sum(a > 0.8 for a in accuracies) >= 2:
            break
    assert sum(a > 0.8 for a in accuracies) >= 2, accuracies
