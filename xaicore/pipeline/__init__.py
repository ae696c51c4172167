"""The survey's steps as plain functions (one per DVC stage): path in, path out, no orchestration.

Prefect tasks in ``tasks/`` wrap these; a notebook can call them directly.
"""

from xaicore.outputs import Paths
from xaicore.pipeline.analysis_step import run_analysis, run_planted
from xaicore.pipeline.branch_step import BRANCHES, open_features, run_branch_explain, run_branch_train
from xaicore.pipeline.explain_step import generate_heatmaps
from xaicore.pipeline.fit_step import fit_autoencoder_state, fit_states, load_states
from xaicore.pipeline.maximize_step import run_maximize
from xaicore.pipeline.roar_step import run_roar
from xaicore.pipeline.score_step import score_heatmaps
from xaicore.pipeline.train_step import build_controls, preflight, prepare_data, train_models

__all__ = [
    "BRANCHES",
    "Paths",
    "build_controls",
    "fit_autoencoder_state",
    "fit_states",
    "generate_heatmaps",
    "load_states",
    "open_features",
    "preflight",
    "prepare_data",
    "run_analysis",
    "run_branch_explain",
    "run_branch_train",
    "run_maximize",
    "run_planted",
    "run_roar",
    "score_heatmaps",
    "train_models",
]
