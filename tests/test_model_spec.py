"""A researcher's own network: torchvision or own-code architectures, weights from a file, the normalization in
front, the randomized controls by named layers, and params.yaml's model section."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torchvision
import yaml

from tests.flows.conftest import ROOT
from xaicore.config import config_from_dict
from xaicore.errors import XaiCoreError
from xaicore.models import (
    ModelSpec,
    Normalized,
    cascading_controls,
    control_layers,
    independent_controls,
    load_model,
    load_weights,
    parameter_layers,
    randomize_layers,
    save_model,
)
from xaicore.pipeline.train_step import preflight

SHAPE = (3, 32, 32)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4).eval()
    path = tmp_path_factory.mktemp("w") / "resnet18.pt"
    torch.save(net.state_dict(), path)
    return net, path


def test_torchvision_weights_load_behind_the_normalization(resnet_file, tmp_path):
    net, path = resnet_file
    spec = ModelSpec("torchvision", "resnet18", {}, *IMAGENET)
    model = load_weights(spec, path, SHAPE, 4)
    assert isinstance(model, Normalized) and not model.training
    x = torch.rand(2, *SHAPE)
    torch.testing.assert_close(model(x), net(model.normalize(x)))
    assert parameter_layers(model)[:2] == ["conv1", "bn1"]  # the network's own names
    save_model(model, tmp_path / "m.pt", arch=spec, input_shape=SHAPE, n_classes=4)
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["source"] == "torchvision" and meta["normalize"]["mean"] == list(IMAGENET[0])
    torch.testing.assert_close(load_model(tmp_path / "m.pt")(x), model(x))


def test_checkpoints_and_data_parallel_prefixes_are_read(resnet_file, tmp_path):
    net, _ = resnet_file
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    model = load_weights(ModelSpec("torchvision", "resnet18"), path, SHAPE, 4)
    x = torch.rand(1, *SHAPE)
    torch.testing.assert_close(model(x), net(x))


def test_weights_of_another_shape_or_code_are_one_clear_error(resnet_file, tmp_path):
    _, path = resnet_file
    with pytest.raises(XaiCoreError, match=r"do not fit model.arch 'resnet18' with 10 classes: .*fc"):
        load_weights(ModelSpec("torchvision", "resnet18"), path, SHAPE, 10)
    grey = (1, *SHAPE[1:])  # 1-channel images into a 3-channel network (issue 29, point 10)
    with pytest.raises(XaiCoreError, match=rf"cannot take the data's images of shape \(1, {SHAPE[1]}, {SHAPE[2]}\) "
                                           r"\(data.channels, data.size\)"):
        load_weights(ModelSpec("torchvision", "resnet18"), path, grey, 4)
    bad = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "obj": ModelSpec()}, bad)
    with pytest.raises(XaiCoreError, match="pickled object"):
        load_weights(ModelSpec("torchvision", "resnet18"), bad, SHAPE, 4)


def test_own_code_builds_the_network(tmp_path):
    (tmp_path / "mynet.py").write_text(
        "import torch.nn as nn\n"
        "def build(width=8, classes=3):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(width, classes))\n")
    spec = ModelSpec("file", f"{tmp_path / 'mynet.py'}:build", {"width": 5})
    net = spec.build(SHAPE, 3)
    assert net[0].out_channels == 5
    torch.save(net.state_dict(), tmp_path / "w.pt")
    assert load_weights(spec, tmp_path / "w.pt", SHAPE, 3)(torch.rand(2, *SHAPE)).shape == (2, 3)
    with pytest.raises(XaiCoreError, match=r"logits of shape \(1, 3\).*the data has 4 classes"):
        load_weights(spec, tmp_path / "w.pt", SHAPE, 4)
    with pytest.raises(XaiCoreError, match="has no function 'nope'"):
        ModelSpec("file", f"{tmp_path / 'mynet.py'}:nope").build(SHAPE, 3)
    with pytest.raises(XaiCoreError, match="cannot import no_such_module_xyz"):
        ModelSpec("file", "no_such_module_xyz:build").build(SHAPE, 3)


def test_a_block_is_randomized_as_its_layers_are_one_by_one(resnet_file):
    net, path = resnet_file
    model = load_weights(ModelSpec("torchvision", "resnet18", {}, *IMAGENET), path, SHAPE, 4)
    block = randomize_layers(model, ["layer4"], seed=3)
    inner = [n for n in parameter_layers(model) if n.startswith("layer4.")]
    one_by_one = randomize_layers(model, inner, seed=3)
    for (k, a), b in zip(block.state_dict().items(), one_by_one.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    changed = {k for k, v in block.state_dict().items() if not torch.equal(v, model.state_dict()[k])}
    assert changed and all(k.startswith("net.layer4.") for k in changed)
    assert torch.equal(model.state_dict()["net.layer4.0.conv1.weight"], net.state_dict()["layer4.0.conv1.weight"])


def test_controls_by_named_layers_top_first(resnet_file):
    _, path = resnet_file
    model = load_weights(ModelSpec("torchvision", "resnet18"), path, SHAPE, 4)
    assert control_layers(model, ["conv1", "fc", "layer1"]) == ["fc", "layer1", "conv1"]
    casc = cascading_controls(model, 0, ["layer1", "fc"])
    assert list(casc) == ["cascade:fc", "cascade:layer1"]
    sd, top = casc["cascade:layer1"].state_dict(), casc["cascade:fc"].state_dict()
    assert torch.equal(sd["fc.weight"], top["fc.weight"]) and not torch.equal(sd["fc.weight"], model.fc.weight)
    ind = independent_controls(model, 0, ["layer1", "fc"])
    assert torch.equal(ind["independent:layer1"].state_dict()["fc.weight"], model.state_dict()["fc.weight"])
    with pytest.raises(XaiCoreError, match="controls.layers: the model has no module 'layer9'"):
        cascading_controls(model, 0, ["layer9"])
    with pytest.raises(XaiCoreError, match="'relu': it has no parameters"):
        randomize_layers(model, ["relu"], 0)


def params(**model) -> dict:
    raw = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw["model"].update(model)
    return raw


@pytest.mark.parametrize("model, message", [
    ({"source": "hub"}, "model.source is 'hub'; expected one of zoo, torchvision, file"),
    ({"source": "torchvision", "arch": "resnet1800"}, "'resnet1800' is not a torchvision.models architecture"),
    ({"source": "file", "arch": "no colon"}, "needs module:function or path/to/file.py:function"),
    ({"arch": "resnet18"}, "model.arch is 'resnet18'; expected one of cnn"),
    ({"kwargs": {"a": 1}}, "model.kwargs applies to model.source torchvision or file"),
    ({"normalize": {"mean": [0.5], "std": [0.2, 0.3]}}, "model.normalize needs mean and std lists of one value"),
    ({"normalize": {"mean": [0.5], "std": [0.0]}}, r"model.normalize.std must be > 0"),
    ({"normalize": {"mean": [0.5], "sd": [1.0]}}, "model.normalize.sd is not a known key"),
])
def test_bad_model_params_are_one_clear_error(model, message):
    with pytest.raises(XaiCoreError, match=message):
        config_from_dict(params(**model))


def test_missing_weights_fail_before_any_work(tmp_path):
    cfg = config_from_dict(params(source="torchvision", arch="resnet18", weights=str(tmp_path / "no.pt")))
    with pytest.raises(XaiCoreError, match=r"model.weights .*no.pt is not a file"):
        preflight(cfg)


def test_controls_layers_params():
    raw = params()
    raw["controls"]["layers"] = ["fc1", "fc1"]
    with pytest.raises(XaiCoreError, match="controls.layers lists a layer twice"):
        config_from_dict(raw)
    raw["controls"]["layers"] = ["fc2", "conv1"]
    assert config_from_dict(raw).controls.layers == ("fc2", "conv1")


@pytest.mark.parametrize("side, region, grid", [(28, 4, 7), (64, 10, 7), (224, 32, 7), (30, 5, 6)])
def test_the_aopc_region_scales_with_the_image(side, region, grid):
    """``score.region: null``: a seventh of the shorter side, rounded up (at most 7 x 7 squares; 4 pixels on the
    digits); a number is taken as it is."""
    from xaicore.features import Regions
    from xaicore.pipeline.score_step import region_side

    assert region_side(None, (3, side, side + 8)) == region and region_side(16, (3, side, side)) == 16
    assert Regions(torch.zeros(1, 1, side, side), region).n_features == grid * grid
