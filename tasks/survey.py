"""One Prefect task per survey step. DVC decides what reruns, so results are not cached by Prefect."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from xaicore import pipeline, report
from xaicore.config import Config, load_config
from xaicore.pipeline import Paths


@task(name="load_params", cache_policy=NO_CACHE)
def load_params(params: str, out: str) -> tuple[Config, Paths]:
    return load_config(params), Paths(Path(out))


@task(name="prepare_data", cache_policy=NO_CACHE)
def prepare_data(cfg: Config, paths: Paths) -> Path:
    return pipeline.prepare_data(cfg, paths)


@task(name="train_models", cache_policy=NO_CACHE)
def train_models(cfg: Config, paths: Paths) -> Path:
    return pipeline.train_models(cfg, paths)


@task(name="build_controls", cache_policy=NO_CACHE)
def build_controls(cfg: Config, paths: Paths) -> Path:
    return pipeline.build_controls(cfg, paths)


@task(name="fit_autoencoder", cache_policy=NO_CACHE)
def fit_autoencoder(cfg: Config, paths: Paths) -> Path:
    return pipeline.fit_autoencoder_state(cfg, paths)


@task(name="fit_states", cache_policy=NO_CACHE)
def fit_states(cfg: Config, paths: Paths) -> Path:
    return pipeline.fit_states(cfg, paths)


@task(name="generate_heatmaps", cache_policy=NO_CACHE)
def generate_heatmaps(cfg: Config, paths: Paths) -> Path:
    return pipeline.generate_heatmaps(cfg, paths)


@task(name="score_heatmaps", cache_policy=NO_CACHE)
def score_heatmaps(cfg: Config, paths: Paths) -> Path:
    return pipeline.score_heatmaps(cfg, paths)


@task(name="run_roar", cache_policy=NO_CACHE)
def run_roar(cfg: Config, paths: Paths) -> Path:
    return pipeline.run_roar(cfg, paths)


@task(name="run_maximize", cache_policy=NO_CACHE)
def run_maximize(cfg: Config, paths: Paths) -> Path:
    return pipeline.run_maximize(cfg, paths)


@task(name="run_planted", cache_policy=NO_CACHE)
def run_planted(cfg: Config, paths: Paths) -> Path:
    return pipeline.run_planted(cfg, paths)


@task(name="run_analysis", cache_policy=NO_CACHE)
def run_analysis(cfg: Config, paths: Paths) -> Path:
    return pipeline.run_analysis(cfg, paths)


@task(name="train_branch", cache_policy=NO_CACHE)
def train_branch(cfg: Config, paths: Paths, kind: str) -> Path:
    return pipeline.run_branch_train(cfg, paths, kind)


@task(name="explain_branch", cache_policy=NO_CACHE)
def explain_branch(cfg: Config, paths: Paths, kind: str) -> Path:
    return pipeline.run_branch_explain(cfg, paths, kind)


@task(name="aggregate_metrics", cache_policy=NO_CACHE)
def aggregate_metrics(paths: Paths) -> dict[str, Any]:
    return report.aggregate_metrics(paths)


@task(name="make_figures", cache_policy=NO_CACHE)
def make_figures(paths: Paths) -> list[Path]:
    return report.make_figures(paths)


@task(name="write_html_report", cache_policy=NO_CACHE)
def write_html_report(paths: Paths, figures: list[Path]) -> Path:
    return report.write_html_report(paths, figures)


@task(name="log_mlflow_run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def log_mlflow_run(cfg: Config, paths: Paths, figures: list[Path], page: Path | None = None) -> str:
    """Record params.yaml, the metrics of metrics.json, the figures, report.html and the git/dvc.lock
    revisions."""
    import mlflow

    from xaicore.pipeline.explain_step import git_revision
    from xaicore.report.aggregate import flat_metrics

    mlflow.set_tracking_uri(f"sqlite:///{(paths.root / 'mlflow.db').resolve()}")
    name = "xaicore-survey"
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=(paths.root / "mlartifacts").resolve().as_uri())
    mlflow.set_experiment(name)
    lock = Path("dvc.lock")
    with mlflow.start_run() as run:
        mlflow.log_params(cfg.flat())
        mlflow.log_metrics(flat_metrics(paths.metrics))
        mlflow.set_tags({"git_revision": git_revision(),
                         "dvc_lock_md5": hashlib.md5(lock.read_bytes()).hexdigest() if lock.is_file() else "none"})
        for fig in figures:
            mlflow.log_artifact(str(fig), artifact_path="figures")
        mlflow.log_artifact(str(paths.metrics))
        if page is not None:
            mlflow.log_artifact(str(page))
        return run.info.run_id



@task(name="repro_survey", cache_policy=NO_CACHE)
def repro_survey(project: str, params: str, out: str) -> str:
    from xaicore.cli import repro

    log = repro(project, params, out)
    print(f"survey run done; its output: {log}")
    return str(log)
