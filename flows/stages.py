"""One flow per DVC stage. Parameters are paths (JSON-friendly, so a deployment can set them)."""

from __future__ import annotations

from prefect import flow

import tasks


@flow(name="data", log_prints=True)
def data_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.prepare_data(cfg, paths)


@flow(name="train", log_prints=True)
def train_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.train_models(cfg, paths)


@flow(name="controls", log_prints=True)
def controls_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.build_controls(cfg, paths)


@flow(name="autoencoder", log_prints=True)
def autoencoder_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.fit_autoencoder(cfg, paths)


@flow(name="fit", log_prints=True)
def fit_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.fit_states(cfg, paths)


@flow(name="explain", log_prints=True)
def explain_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.generate_heatmaps(cfg, paths)


@flow(name="score", log_prints=True)
def score_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.score_heatmaps(cfg, paths)


@flow(name="roar", log_prints=True)
def roar_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.run_roar(cfg, paths)


@flow(name="maximize", log_prints=True)
def maximize_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.run_maximize(cfg, paths)


@flow(name="aggregate", log_prints=True)
def aggregate_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    _, paths = tasks.load_params(params, out)
    tasks.aggregate_metrics(paths)


@flow(name="report", log_prints=True)
def report_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    figures = tasks.make_figures(paths)
    tasks.log_mlflow_run(cfg, paths, figures)
