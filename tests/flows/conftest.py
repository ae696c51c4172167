"""A tiny survey (few samples, short training) run once per test session, in process through the pipeline steps
each flow calls, under a trace of what each stage runs and reads (the DVC-coverage test). The flows themselves,
Prefect, MLflow and `dvc repro` are run end to end by tests/flows/test_own_model.py on a researcher's own
network and images; the stages' determinism by the reruns of tests/flows/test_pipeline.py."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.flows.own_model import TINY_ANALYSIS
from tests.flows.tracing import StageTrace, trace_stage
from xaicore.config import Config, config_from_dict
from xaicore.pipeline import (
    Paths,
    build_controls,
    fit_autoencoder_state,
    fit_states,
    generate_heatmaps,
    prepare_data,
    run_analysis,
    run_branch_explain,
    run_branch_train,
    run_maximize,
    run_planted,
    run_roar,
    score_heatmaps,
    train_models,
)
from xaicore.report import aggregate_metrics, write_html_report

ROOT = Path(__file__).resolve().parents[2]


def tiny_params() -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["data"]["n_explain"] = 16
    # the BN/residual zoo: tests/test_zoo_contract
    raw["model"].update(epochs=3, random_labels_epochs=3, zoo=["mlp"], workers=0)
    raw["explain"].update(chunk=8, batch_size=8, workers=0, samples={"independent:*": 5})  # a budget, mid-chunk
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
    raw["roar"].update(fractions=[0.1], repeats=2, epochs=1, workers=0, fills=["mean", "noise"],
                       methods=["gradient", "vargrad", "random"],  # a base method, an ensemble, the baseline
                       method_params={"vargrad": {"n_samples": 8}})
    raw["analysis"] = {**raw["analysis"], **TINY_ANALYSIS}
    raw["tabular"] = {**raw["tabular"], "epochs": 3, "n_explain": 12}
    raw["tabular"]["method_params"] = {**raw["tabular"]["method_params"], "lime": {"n_samples": 100}}
    raw["text"] = {**raw["text"], "epochs": 3, "n_explain": 8}
    raw["text"]["method_params"] = {**raw["text"]["method_params"], "lime": {"n_samples": 100}}
    return raw


def run_flow(stage: str, params: dict, tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m flows <stage>``, as dvc.yaml runs it."""
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "flows", stage, "--params", str(p), "--out",
                           str(tmp_path / "outputs")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


# dvc.yaml's stages in order, each as the pipeline call its flow makes (flows/stages.py -> tasks -> these)
STEPS: dict[str, Callable[[Config, Paths], object]] = {
    "data": lambda cfg, paths: prepare_data(cfg, paths),
    "train": lambda cfg, paths: train_models(cfg, paths, progress=False),
    "controls": lambda cfg, paths: build_controls(cfg, paths),
    "autoencoder": lambda cfg, paths: fit_autoencoder_state(cfg, paths, progress=False),
    "fit": lambda cfg, paths: fit_states(cfg, paths, progress=False),
    "explain": lambda cfg, paths: generate_heatmaps(cfg, paths, progress=False),
    "score": lambda cfg, paths: score_heatmaps(cfg, paths, progress=False),
    "roar": lambda cfg, paths: run_roar(cfg, paths, progress=False),
    "maximize": lambda cfg, paths: run_maximize(cfg, paths, progress=False),
    "planted": lambda cfg, paths: run_planted(cfg, paths, progress=False),
    "analysis": lambda cfg, paths: run_analysis(cfg, paths, progress=False),
    "tabular": lambda cfg, paths: (run_branch_train(cfg, paths, "tabular", progress=False),
                                   run_branch_explain(cfg, paths, "tabular", progress=False)),
    "text": lambda cfg, paths: (run_branch_train(cfg, paths, "text", progress=False),
                                run_branch_explain(cfg, paths, "text", progress=False)),
    "aggregate": lambda cfg, paths: aggregate_metrics(paths),
    "report": lambda cfg, paths: write_html_report(paths),
}


def run_survey(cfg: Config, root: Path, *, trace: bool = False) -> tuple[Paths, dict[str, StageTrace]]:
    """Every stage in-process; with ``trace``, what each one ran (tests/flows/tracing.py)."""
    paths, traces = Paths(root), {}
    for stage, step in STEPS.items():
        if trace:
            with trace_stage(cfg) as traces[stage]:
                step(cfg, paths)
        else:
            step(cfg, paths)
    return paths, traces


@pytest.fixture(scope="session")
def tiny_cfg() -> Config:
    return config_from_dict(tiny_params())


@pytest.fixture(scope="session")
def traced_survey(tmp_path_factory: pytest.TempPathFactory, tiny_cfg: Config) -> tuple[Paths, dict[str, StageTrace]]:
    """The tiny survey, every stage in process and traced: its outputs and what each stage ran."""
    return run_survey(tiny_cfg, tmp_path_factory.mktemp("survey") / "outputs", trace=True)


@pytest.fixture(scope="session")
def tiny_survey(traced_survey: tuple[Paths, dict[str, StageTrace]]) -> Paths:
    """The tiny survey's outputs: every stage, once."""
    return traced_survey[0]
