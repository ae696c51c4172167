"""One flow per DVC stage. Parameters are paths (JSON-friendly, so a deployment can set them)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from prefect import flow

import tasks
from xaicore.pipeline.lock import outputs_lock


def stage_flow(name: str) -> Callable[[Callable[[str, str], None]], Any]:
    """A Prefect flow that holds its output folder while it runs (:func:`xaicore.pipeline.lock.outputs_lock`): a
    second run on the same folder, by hand, by DVC or on a schedule, refuses instead of writing beside it."""

    def wrap(fn: Callable[[str, str], None]) -> Any:
        @functools.wraps(fn)
        def run(params: str = "params.yaml", out: str = "outputs") -> None:
            with outputs_lock(out, f"{name} flow"):
                fn(params, out)

        return flow(name=name, log_prints=True)(run)

    return wrap


@stage_flow("data")
def data_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.prepare_data(cfg, paths)


@stage_flow("train")
def train_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.train_models(cfg, paths)


@stage_flow("controls")
def controls_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.build_controls(cfg, paths)


@stage_flow("autoencoder")
def autoencoder_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.fit_autoencoder(cfg, paths)


@stage_flow("fit")
def fit_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.fit_states(cfg, paths)


@stage_flow("explain")
def explain_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.generate_heatmaps(cfg, paths)


@stage_flow("score")
def score_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.score_heatmaps(cfg, paths)


@stage_flow("roar")
def roar_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.run_roar(cfg, paths)


@stage_flow("maximize")
def maximize_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.run_maximize(cfg, paths)


@stage_flow("planted")
def planted_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.run_planted(cfg, paths)


@stage_flow("analysis")
def analysis_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.run_analysis(cfg, paths)


@stage_flow("tabular")
def tabular_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.train_branch(cfg, paths, "tabular")
    tasks.explain_branch(cfg, paths, "tabular")


@stage_flow("text")
def text_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.train_branch(cfg, paths, "text")
    tasks.explain_branch(cfg, paths, "text")


@stage_flow("aggregate")
def aggregate_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    _, paths = tasks.load_params(params, out)
    tasks.aggregate_metrics(paths)


@stage_flow("report")
def report_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    figures = tasks.make_figures(paths)
    page = tasks.write_html_report(paths, figures)
    tasks.log_mlflow_run(cfg, paths, figures, page)
