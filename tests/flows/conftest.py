"""A tiny survey (few samples, short training) run once per test session through the pipeline steps."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from xaicore.config import Config, config_from_dict
from xaicore.pipeline import (
    Paths,
    build_controls,
    fit_autoencoder_state,
    fit_states,
    generate_heatmaps,
    prepare_data,
    run_maximize,
    run_roar,
    score_heatmaps,
    train_models,
)

ROOT = Path(__file__).resolve().parents[2]


def tiny_params() -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["data"]["n_explain"] = 24
    # the BN/residual zoo: tests/test_zoo_contract
    raw["model"].update(epochs=3, random_labels_epochs=3, zoo=["mlp"], workers=0)
    raw["explain"].update(chunk=16, batch_size=16, workers=0)
    raw["explain"]["method_params"]["integrated_gradients"] = {"n_steps": 16}
    mp = raw["explain"]["method_params"]  # the perturbation methods at a tenth of their passes per sample
    mp["occlusion"] = {**mp.get("occlusion", {}), "stride": 4}
    mp["lime"] = {**mp.get("lime", {}), "n_segments": 16, "n_samples": 48}
    mp["pda"] = {**mp.get("pda", {}), "n_samples": 1}
    for m in ("cem.pp", "cem.pn"):
        mp[m] = {**mp.get(m, {}), "c_steps": 2, "n_steps": 15, "lr": 0.01}
    raw["autoencoder"] = {**raw.get("autoencoder", {}), "epochs": 2}
    raw["maximize"] = {**raw.get("maximize", {}), "models": ["trained", "cascade:fc2"],
                       "pixels": {"lr": 0.1, "n_steps": 30, "jitter": 1, "blur_every": 8},
                       "generator": {"lr": 0.05, "n_steps": 30}}
    raw["score"].update(workers=0, region=7)
    raw["roar"].update(fractions=[0.1, 0.5], repeats=2, epochs=1, workers=0, fills=["mean", "noise"],
                       methods=["gradient", "vargrad", "random"],  # a base method, an ensemble, the baseline
                       method_params={"vargrad": {"n_samples": 8}})
    return raw


def run_survey(cfg: Config, root: Path) -> Paths:
    paths = Paths(root)
    prepare_data(cfg, paths)
    train_models(cfg, paths, progress=False)
    build_controls(cfg, paths)
    fit_autoencoder_state(cfg, paths, progress=False)
    fit_states(cfg, paths, progress=False)
    generate_heatmaps(cfg, paths, progress=False)
    score_heatmaps(cfg, paths, progress=False)
    run_roar(cfg, paths, progress=False)
    run_maximize(cfg, paths, progress=False)
    return paths


@pytest.fixture(scope="session")
def tiny_cfg() -> Config:
    return config_from_dict(tiny_params())


@pytest.fixture(scope="session")
def tiny_survey(tmp_path_factory: pytest.TempPathFactory, tiny_cfg: Config) -> Paths:
    return run_survey(tiny_cfg, tmp_path_factory.mktemp("survey") / "outputs")
