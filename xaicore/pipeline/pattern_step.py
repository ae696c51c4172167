"""The signal estimators of PatternNet/PatternAttribution (Kindermans et al. 2018), fitted for every survey model.

One ``.pt`` per model under ``outputs/patterns`` (statistics accumulated batch-wise over the training set) with an
``index.json``; the explain step loads them, DVC tracks the folder. The quality ρ(S) of each estimator per layer
(v fitted on the training set, its correlation measured on the test set; controls excepted: their patterns are
fitted, their quality is not the question) goes to ``outputs/pattern_quality.json``, a separate output, so that a
change of ``patterns.ridge`` does not make the explain stage rerun.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from xaicore.config import Config
from xaicore.data import load_saved
from xaicore.errors import XaiCoreError
from xaicore.explain import Patterns, fit_patterns, get_explainer, pattern_quality
from xaicore.models import load_model
from xaicore.pipeline.paths import Paths, model_file
from xaicore.pipeline.steps import survey_models


def is_control(name: str) -> bool:
    return name.startswith(("cascade:", "independent:"))


def fit_signal_estimators(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """Fit S_w, S_a and S_a+- of every survey model on the training set, written to ``paths.patterns`` (a
    ``.partial`` folder renamed when complete); ρ(S) of the trained, random-label and zoo models to
    ``paths.pattern_quality``."""
    ds, _ = load_saved(paths.dataset)
    models = survey_models(paths)
    tmp = paths.patterns.with_name(paths.patterns.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    index: dict[str, dict[str, Any]] = {}
    quality: dict[str, dict[str, dict[str, float]]] = {}
    for name, path in tqdm(models.items(), desc="signal estimators", unit="model", disable=not progress):
        model = load_model(path)
        patterns = fit_patterns(model, ds.x_train, batch_size=cfg.patterns.batch_size)
        if not is_control(name):
            quality[name] = pattern_quality(model, patterns, ds.x_test, fit_data=ds.x_train,
                                            batch_size=cfg.patterns.batch_size, ridge=cfg.patterns.ridge)
        stem = model_file(name)
        patterns.save(tmp / f"{stem}.pt")
        index[name] = {"file": f"{stem}.pt", "n_samples": patterns.n_samples}
    (tmp / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True))
    paths.pattern_quality.unlink(missing_ok=True)
    shutil.rmtree(paths.patterns, ignore_errors=True)
    tmp.rename(paths.patterns)
    part = paths.pattern_quality.with_name(paths.pattern_quality.name + ".partial")
    part.write_text(json.dumps(quality, indent=1, sort_keys=True))
    part.replace(paths.pattern_quality)
    return paths.patterns


def load_signal_estimators(paths: Paths, names: list[str]) -> dict[str, Patterns]:
    """The fitted patterns of the models ``names`` (one clear error when the patterns stage has not run)."""
    index_path = paths.patterns / "index.json"
    if not index_path.is_file():
        raise XaiCoreError(f"{index_path} is missing; run the patterns stage first (python -m flows.patterns)")
    index = json.loads(index_path.read_text())
    missing = [n for n in names if n not in index]
    if missing:
        raise XaiCoreError(f"{paths.patterns} has no patterns for {', '.join(missing)}; rerun the patterns stage")
    return {n: Patterns.load(paths.patterns / index[n]["file"]) for n in names}


def fitted_params(method: str, model: torch.nn.Module, x_fit: torch.Tensor, batch_size: int = 256
                  ) -> dict[str, Any]:
    """The fitted keyword ``method`` needs, fitted now on ``x_fit`` ({} for methods that need none)."""
    if get_explainer(method).fitted == "patterns":
        return {"patterns": fit_patterns(model, x_fit, batch_size=batch_size)}
    return {}
