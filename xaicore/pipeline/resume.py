"""The journals of the resumable stages (explain, score, ROAR), keyed from one table.

``RESUME_PARAMS`` lists the params sections each stage's results depend on and ``RESUME_INPUTS`` the output
folders it reads. ``dvc.yaml`` declares the same (its ``params`` add ``score.scheduler``, which only says where
the jobs run); ``tests/flows/test_dvc_deps.py`` checks that the two agree.
"""

from __future__ import annotations

from xaicore.config import Config
from xaicore.outputs import Paths
from xaicore.store.journal import RESUME_DIR, Journal, run_key

_METHODS = ("autoencoder", "patterns.batch_size", "explain.method_params", "explain.batch_size",
            "explain.batch_sizes")  # what ROAR and input invariance recompute heatmaps with
RESUME_PARAMS: dict[str, tuple[str, ...]] = {
    "explain": ("seed", "data", "model", "controls", "explain"),
    "score": ("seed", "score", "sanity", "invariance", *_METHODS),
    "roar": ("seed", "model", "roar", *_METHODS),
}
RESUME_INPUTS: dict[str, tuple[str, ...]] = {  # Paths attributes
    "explain": ("dataset", "models", "controls", "fitted", "autoencoder"),
    "score": ("dataset", "models", "controls", "fitted", "autoencoder", "heatmaps"),
    "roar": ("dataset", "models"),
}


def stage_journal(cfg: Config, paths: Paths, stage: str) -> Journal:
    """The journal of ``stage`` under ``paths``: kept when an interrupted run had the same params, inputs and
    xaicore source, wiped otherwise (:mod:`xaicore.store.journal`)."""
    return Journal(paths.root / RESUME_DIR / stage,
                   run_key(stage, cfg.section_json(*RESUME_PARAMS[stage]),
                           [getattr(paths, name) for name in RESUME_INPUTS[stage]]))
