"""Prefect tasks: thin wrappers that call one xaicore function each (no maths here)."""

from tasks import _env  # noqa: F401  (sets the offline environment before prefect is imported)
from tasks.survey import (
    aggregate_metrics,
    build_controls,
    explain_branch,
    fit_autoencoder,
    fit_states,
    generate_heatmaps,
    load_params,
    log_mlflow_run,
    make_figures,
    prepare_data,
    run_analysis,
    run_maximize,
    run_planted,
    run_roar,
    score_heatmaps,
    train_branch,
    train_models,
    write_html_report,
)

__all__ = [
    "aggregate_metrics",
    "build_controls",
    "explain_branch",
    "fit_autoencoder",
    "fit_states",
    "generate_heatmaps",
    "load_params",
    "log_mlflow_run",
    "make_figures",
    "prepare_data",
    "run_analysis",
    "run_maximize",
    "run_planted",
    "run_roar",
    "score_heatmaps",
    "train_branch",
    "train_models",
    "write_html_report",
]
