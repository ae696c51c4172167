"""Model zoo, the randomized controls of Adebayo et al. (survey §4.4), weights on disk, seeded training."""

from __future__ import annotations

import pytest
import torch

from xaicore import XaiCoreError
from xaicore.models import (
    accuracy,
    build_model,
    cascading_controls,
    independent_controls,
    load_model,
    parameter_layers,
    predict_logits,
    randomize_layers,
    save_model,
    train_model,
)

CNN_LAYERS = ["conv1", "conv2", "fc1", "fc2"]


def changed_layers(reference: torch.nn.Module, other: torch.nn.Module) -> set[str]:
    """Layers of which every parameter differs from the reference; asserts the others are bitwise equal."""
    ref, oth = reference.state_dict(), other.state_dict()
    assert ref.keys() == oth.keys()
    changed: dict[str, list[bool]] = {}
    for key in ref:
        layer = key.rsplit(".", 1)[0]
        changed.setdefault(layer, []).append(not torch.equal(ref[key], oth[key]))
    for layer, flags in changed.items():
        assert all(flags) or not any(flags), f"{layer}: only some parameters changed"
    return {layer for layer, flags in changed.items() if all(flags)}


def test_zoo_shapes_and_layers(cnn, mlp):
    x = torch.rand(3, 1, 28, 28)
    assert cnn(x).shape == (3, 10) and mlp(x).shape == (3, 10)
    assert parameter_layers(cnn) == CNN_LAYERS
    assert parameter_layers(mlp) == ["fc1", "fc2", "fc3"]
    assert sum(p.numel() for p in cnn.parameters()) == (16 * 9 + 16) + (32 * 16 * 9 + 32) + (32 * 49 * 128 + 128) \
        + (128 * 10 + 10)
    with pytest.raises(XaiCoreError, match="unknown model architecture 'vgg'"):
        build_model("vgg", (1, 28, 28), 10)
    with pytest.raises(XaiCoreError, match="divisible by 4, got 30x30"):
        build_model("cnn", (1, 30, 30), 10)


def test_cascading_controls_top_down(cnn, helpers):
    before = helpers.model_state(cnn)
    controls = cascading_controls(cnn, seed=0)
    assert list(controls) == ["cascade:fc2", "cascade:fc1", "cascade:conv2", "cascade:conv1"]
    top_down = CNN_LAYERS[::-1]
    for i, (name, model) in enumerate(controls.items()):
        assert changed_layers(cnn, model) == set(top_down[: i + 1]), name
        assert not model.training
        assert model is not cnn
    helpers.assert_states_equal(before, helpers.model_state(cnn))  # the original model is untouched
    # cumulative: each control keeps the randomized layers of the one above it
    names = list(controls)
    for upper, lower in zip(names, names[1:], strict=False):
        assert changed_layers(controls[upper], controls[lower]) == {lower.split(":")[1]}


def test_independent_controls_change_one_layer(cnn, helpers):
    before = helpers.model_state(cnn)
    controls = independent_controls(cnn, seed=0)
    assert list(controls) == ["independent:fc2", "independent:fc1", "independent:conv2", "independent:conv1"]
    for name, model in controls.items():
        assert changed_layers(cnn, model) == {name.split(":")[1]}
    helpers.assert_states_equal(before, helpers.model_state(cnn))
    # a layer gets the same random draw in both controls and for the same seed; another seed draws anew
    cascade = cascading_controls(cnn, seed=0)
    assert torch.equal(cascade["cascade:fc2"].fc2.weight, controls["independent:fc2"].fc2.weight)
    assert torch.equal(cascade["cascade:conv1"].conv1.weight, controls["independent:conv1"].conv1.weight)
    again = independent_controls(cnn, seed=0)
    assert torch.equal(again["independent:fc1"].fc1.weight, controls["independent:fc1"].fc1.weight)
    other = independent_controls(cnn, seed=1)
    assert not torch.equal(other["independent:fc1"].fc1.weight, controls["independent:fc1"].fc1.weight)


def test_randomize_layers_uses_default_init_and_keeps_global_rng(cnn):
    state = torch.get_rng_state()
    model = randomize_layers(cnn, ["fc1"], seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    # PyTorch's Linear init: kaiming_uniform(a=√5) weights, bias in ±1/√fan_in: all in ±1/√fan_in
    bound = 1 / (32 * 49) ** 0.5
    w = model.fc1.weight.detach()
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.99 * bound
    assert abs(float(w.std()) - bound / 3 ** 0.5) < 0.01 * bound  # U(-a, a) has sd a/√3
    with pytest.raises(XaiCoreError,
                       match=r"cannot randomize layer 'relu1': it has no parameters; parameter layers: conv1, conv2"):
        randomize_layers(cnn, ["relu1"], seed=0)
    with pytest.raises(XaiCoreError, match="cannot randomize layer 'fc9'"):
        randomize_layers(cnn, ["fc9"], seed=0)


def test_controls_of_the_mlp(mlp):
    assert list(cascading_controls(mlp, seed=2)) == ["cascade:fc3", "cascade:fc2", "cascade:fc1"]
    controls = cascading_controls(mlp, seed=2)
    assert changed_layers(mlp, controls["cascade:fc2"]) == {"fc3", "fc2"}


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_save_and_load_round_trip(arch, tmp_path, helpers, digit_batch):
    model = helpers.seeded_model(arch, seed=5)
    path = tmp_path / "models" / f"{arch}.pt"
    save_model(model, path, arch=arch, input_shape=(1, 28, 28), n_classes=10, test_accuracy=0.5)
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert not path.with_name(path.name + ".partial").exists()
    loaded = load_model(path)
    assert not loaded.training
    helpers.assert_states_equal(helpers.model_state(model), helpers.model_state(loaded))
    x, _ = digit_batch
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_load_model_errors(tmp_path, cnn):
    with pytest.raises(XaiCoreError, match="are missing; run the train stage first"):
        load_model(tmp_path / "nope.pt")
    path = tmp_path / "m.pt"
    save_model(cnn, path, arch="cnn", input_shape=(1, 28, 28), n_classes=10)
    path.write_bytes(b"garbage")
    with pytest.raises(XaiCoreError, match=r"model weights .*m\.pt cannot be read \(not a torch file: "
                                           r"Unsupported operand 103\); rerun the train"):
        load_model(path)
    # weights of another architecture under the cnn's metadata
    save_model(build_model("mlp", (1, 28, 28), 10), path, arch="mlp", input_shape=(1, 28, 28), n_classes=10)
    path.with_suffix(".json").write_text('{"arch": "cnn", "input_shape": [1, 28, 28], "n_classes": 10}')
    with pytest.raises(XaiCoreError, match=r"model weights .*m\.pt do not fit its cnn \(.*\); rerun the train"):
        load_model(path)


def test_load_model_refuses_pickled_code(tmp_path, cnn):
    """weights_only=True: a file that pickles an arbitrary object is refused, never executed."""
    path = tmp_path / "evil.pt"
    save_model(cnn, path, arch="cnn", input_shape=(1, 28, 28), n_classes=10)
    torch.save({"state": cnn.state_dict(), "hook": print}, path)  # a callable in the pickle
    with pytest.raises(XaiCoreError, match=r"holds a pickled object \(print\), not only tensors; weights_only "
                                           r"loading refuses it") as info:
        load_model(path)
    assert "\n" not in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_train_model_is_deterministic(arch, digits, helpers, one_thread):
    x, y = digits.x_train[:96], digits.y_train[:96]
    kw = dict(n_classes=10, epochs=2, batch_size=32, lr=0.003, progress=False)
    rng = torch.get_rng_state()
    a = train_model(arch, x, y, seed=3, **kw)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is not consumed
    b = train_model(arch, x, y, seed=3, **kw)
    c = train_model(arch, x, y, seed=4, **kw)
    helpers.assert_states_equal(helpers.model_state(a.model), helpers.model_state(b.model))
    assert a.losses == b.losses and len(a.losses) == 2
    assert not torch.equal(a.model.state_dict()["fc2.weight"], c.model.state_dict()["fc2.weight"])
    assert not a.model.training
    assert a.losses[1] < a.losses[0]  # it learns
    assert a.train_accuracy == pytest.approx(accuracy(a.model, x, y))
    assert a.test_accuracy != a.test_accuracy  # NaN without a test set


def test_predict_logits_batches_and_restores_mode(cnn, digits):
    x = digits.x_test[:37]
    cnn.train()
    logits = predict_logits(cnn, x, batch_size=8)
    assert cnn.training
    cnn.eval()
    with torch.no_grad():
        torch.testing.assert_close(logits, cnn(x), rtol=0, atol=1e-6)
    assert accuracy(cnn, x, digits.y_test[:37]) == pytest.approx(
        float((logits.argmax(1) == digits.y_test[:37]).float().mean()))
