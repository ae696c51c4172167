"""params.yaml -> frozen dataclasses; every bad value is one XaiCoreError naming its key."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path

import pytest
import yaml

from xaicore import XaiCoreError
from xaicore.config import Config, config_from_dict, load_config

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def with_value(raw: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(raw)
    *parents, leaf = dotted.split(".")
    d = out
    for p in parents:
        d = d.setdefault(p, {})
    d[leaf] = value
    return out


def test_shipped_params_load(raw):
    cfg = load_config(PARAMS)
    assert isinstance(cfg, Config)
    assert cfg.seed == raw["seed"]
    assert cfg.data.dataset == raw["data"]["dataset"] and cfg.data.size == raw["data"]["size"]
    assert cfg.data.test_fraction == pytest.approx(raw["data"]["test_fraction"])
    assert cfg.model.arch == raw["model"]["arch"] and cfg.model.epochs == raw["model"]["epochs"]
    assert cfg.model.lr == pytest.approx(raw["model"]["lr"])
    assert cfg.explain.methods == tuple(raw["explain"]["methods"])  # lists become tuples
    assert cfg.explain.method_params == raw["explain"]["method_params"]
    assert cfg.score.region == raw["score"]["region"]
    assert cfg.score.orders == tuple(raw["score"]["orders"])
    assert cfg.score.scheduler is None
    assert cfg.sanity.measures == tuple(raw["sanity"]["measures"])
    assert cfg == config_from_dict(raw)
    # frozen and picklable (it travels to Dask workers)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    assert cfg.to_dict()["score"]["orders"] == list(raw["score"]["orders"])


def test_flat_names_are_run_tracker_names(raw):
    """MLflow refuses ``*`` in a param name: a sample budget's pattern is logged with ``_`` in its place."""
    import re

    flat = config_from_dict(with_value(raw, "explain.samples", {"cascade:*": 100, "trained": 50})).flat()
    assert flat["explain.samples.cascade:_"] == "100" and flat["explain.samples.trained"] == "50"
    assert all(re.fullmatch(r"[\w\-. :/]+", k) for k in flat)


def test_defaults_and_empty_document():
    assert config_from_dict({}) == Config()
    assert config_from_dict({"data": None}) == Config()


@pytest.mark.parametrize("dotted,value,message", [
    ("colour", "red", r"params\.yaml: colour is not a known key"),
    ("score.order", "morf", r"params\.yaml: score\.order is not a known key \(known: .*orders"),
    ("data.sizes", 28, r"data\.sizes is not a known key"),
    ("explain.method_params.lrp.nope", 1, r"explain\.method_params\.lrp is not a registered method"),
    ("explain.batch_sizes.occlusions", 8, r"explain\.batch_sizes\.occlusions is not a registered method"),
    ("roar.method_params.smoothgrads", {"squared": True}, r"roar\.method_params\.smoothgrads is not a registered"),
    ("roar.method_params.smoothgrad", {"square": True},
     r"roar\.method_params\.smoothgrad has unknown parameter 'square'; smoothgrad takes: .*squared"),
    ("roar.fills", ["mean", "median"], r"roar\.fills is 'median'; expected one of mean, background, noise"),
    ("roar.fills", ["noise", "noise"], r"roar\.fills lists a fill twice"),
    ("roar.fills", [], r"roar\.fills is empty"),
])
def test_unknown_key(raw, dotted, value, message):
    with pytest.raises(XaiCoreError, match=message):
        config_from_dict(with_value(raw, dotted, value))


@pytest.mark.parametrize("dotted,value,message", [
    ("seed", "zero", r"seed is 'zero'; expected an integer"),
    ("seed", 1.5, r"seed is 1\.5; expected an integer"),
    ("score.region", "four", r"score\.region is 'four'; expected an integer"),
    ("score.region", True, r"score\.region is True; expected an integer"),
    ("model.lr", "fast", r"model\.lr is 'fast'; expected a number"),
    ("controls.cascading", "yes", r"controls\.cascading is 'yes'; expected true or false"),
    ("explain.methods", "gradient", r"explain\.methods is 'gradient'; expected a list"),
    ("score.orders", ["morf", 3], r"score\.orders\[1\] is 3; expected a string"),
    ("explain.method_params", [1], r"explain\.method_params is \[1\]; expected a mapping"),
    ("explain.batch_sizes.lime", "32", r"explain\.batch_sizes\.lime is '32'; expected an integer"),
    ("data", [1, 2], r"data must be a mapping"),
])
def test_wrong_type(raw, dotted, value, message):
    with pytest.raises(XaiCoreError, match=message):
        config_from_dict(with_value(raw, dotted, value))


@pytest.mark.parametrize("dotted,value,message", [
    ("score.orders", ["up"], r"score\.orders is 'up'; expected one of morf, lerf"),
    ("score.orders", [], r"score\.orders is empty"),
    ("score.perturbations", ["blur9"], r"score\.perturbations is 'blur9'"),
    ("score.score", "loss", r"score\.score is 'loss'"),
    ("score.backend", "cupy", r"score\.backend is 'cupy'"),
    ("score.device", "tpu", r"score\.device is 'tpu'"),
    ("score.region", 0, r"score\.region is 0; expected a positive number"),
    ("score.workers", -1, r"score\.workers is -1; expected a non-negative number"),
    ("score.models", [], r"score\.models is empty"),
    ("data.dataset", "cifar", r"data\.dataset is 'cifar'; expected one of digits, mnist"),
    ("data.test_fraction", 1.5, r"data\.test_fraction is 1\.5; expected a fraction in \(0, 1\)"),
    ("data.n_explain", 0, r"data\.n_explain is 0"),
    ("model.arch", "vgg", r"model\.arch is 'vgg'; expected one of cnn, mlp, vgg_bn, resnet, densenet"),
    ("model.epochs", 0, r"model\.epochs is 0"),
    ("model.zoo_epochs", 0, r"model\.zoo_epochs is 0"),
    ("model.zoo", ["mlp", "mlp"], r"model\.zoo lists an architecture twice"),
    ("patterns.batch_size", 0, r"patterns\.batch_size is 0"),
    ("patterns.ridge", -1.0, r"patterns\.ridge is -1\.0"),
    ("seed", -1, r"seed is -1; expected a non-negative integer"),
    ("explain.methods", [], r"explain\.methods is empty"),
    ("explain.methods", ["gradient", "gradient"], r"explain\.methods lists a method twice"),
    ("explain.chunk", 0, r"explain\.chunk is 0"),
    ("explain.batch_sizes.pda", 0, r"explain\.batch_sizes\.pda is 0"),
    ("explain.samples", {"cascade:*": 0}, r"explain\.samples\.cascade:\* is 0; expected a positive number"),
    ("explain.samples", {"cascade:*": "all"}, r"explain\.samples\.cascade:\* is 'all'; expected an integer"),
    ("sanity.measures", ["ssim9"], r"sanity\.measures is 'ssim9'"),
])
def test_impossible_value(raw, dotted, value, message):
    with pytest.raises(XaiCoreError, match=message):
        config_from_dict(with_value(raw, dotted, value))


def test_unknown_method_name(raw):
    with pytest.raises(XaiCoreError, match=r"params\.yaml: explain\.methods names unknown method 'lrp\.nope'; "
                                           r"registered: .*gradient"):
        config_from_dict(with_value(raw, "explain.methods", ["gradient", "lrp.nope"]))


def test_unknown_method_parameter(raw):
    """A misspelt hyper-parameter must fail when params.yaml is read, not after training, deep in the
    explain step."""
    with pytest.raises(XaiCoreError, match=r"explain\.method_params\.integrated_gradients.*'n_step'"):
        config_from_dict(with_value(raw, "explain.method_params", {"integrated_gradients": {"n_step": 64}}))
    ok = config_from_dict(with_value(raw, "explain.method_params", {"integrated_gradients": {"n_steps": 8},
                                                                    "random": {"seed": 3}}))
    assert ok.explain.method_params["integrated_gradients"] == {"n_steps": 8}


def test_nullable_keys(raw):
    cfg = config_from_dict(with_value(raw, "data.n_explain", None))
    assert cfg.data.n_explain is None
    cfg = config_from_dict(with_value(raw, "score.scheduler", "tcp://127.0.0.1:8786"))
    assert cfg.score.scheduler == "tcp://127.0.0.1:8786"


def test_load_config_file_errors(tmp_path):
    with pytest.raises(XaiCoreError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(XaiCoreError, match="is not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(XaiCoreError, match="the document must be a mapping"):
        load_config(listy)
    good = tmp_path / "good.yaml"
    good.write_text("seed: 3\nscore: {region: 7}\n")
    cfg = load_config(good)
    assert cfg.seed == 3 and cfg.score.region == 7 and cfg.model == Config().model
