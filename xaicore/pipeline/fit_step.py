"""The ``fit`` stage: the state of every fitted method (``xaicore.fit``) for every survey model; and the
``autoencoder`` stage: the one state fitted on the data alone that CEM and the maximisers share.

Methods declare a ``fit`` hook (PatternNet/PatternAttribution's signal estimators, PDA's patch Gaussians); this
step runs it once per (fit, parameters) and model on the training set (once for all models where the fit ignores
the model: PDA's patch Gaussians) and saves each state with its own
``save`` under ``outputs/fitted/`` with an ``index.json`` (method → model → file); the explain stage loads them,
DVC tracks the folder. The quality ρ(S) of PatternNet's estimators per layer (v fitted on the training set, its
correlation measured on the test set; controls excepted; ``patterns.quality: false`` skips it) goes to
``outputs/pattern_quality.json``, a separate output, so that a change of ``patterns.ridge`` does not make the
explain stage rerun.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from xaicore.atomic import atomic_path, write_text
from xaicore.config import Config
from xaicore.data import load_saved
from xaicore.errors import XaiCoreError
from xaicore.explain import Patterns, get_explainer, pattern_quality
from xaicore.explain.optimisation import fit_autoencoder
from xaicore.explain.registry import fit, fit_params
from xaicore.models import load_model
from xaicore.outputs import Paths, model_file
from xaicore.pipeline.train_step import survey_models
from xaicore.threads import with_compute_threads


def is_control(name: str) -> bool:
    return name.startswith(("cascade:", "independent:"))


def fitted_methods(methods: list[str]) -> list[str]:
    """The methods of ``methods`` whose state the fit stage fits per model (not those with a shared state)."""
    return [m for m in methods if get_explainer(m).fit is not None and get_explainer(m).shared_state is None]


def autoencoder_kwargs(cfg: Config) -> dict[str, Any]:
    a = cfg.autoencoder
    return {"latent": a.latent, "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr,
            "code_penalty": a.code_penalty, "seed": cfg.seed}


@with_compute_threads
def fit_autoencoder_state(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """The ``autoencoder`` stage: the convolutional autoencoder (``autoencoder`` params, ``seed``) fitted on the
    training set, written to ``paths.autoencoder`` (atomically: :mod:`xaicore.atomic`). CEM's methods
    (their ``shared_state``) and the maximisers' generator read it; it does not depend on any model."""
    ds, _ = load_saved(paths.dataset)
    state = fit_autoencoder(ds.x_train, progress=progress, **autoencoder_kwargs(cfg))
    return state.save(paths.autoencoder)


def _shared_state_path(paths: Paths, name: str) -> Path:
    known = {"autoencoder": paths.autoencoder}
    if name not in known:
        raise XaiCoreError(f"no pipeline stage fits the shared state {name!r} (known: {', '.join(known)})")
    return known[name]


def fit_kwargs(cfg: Config, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keywords of ``method``'s fit: those of its explain parameters it takes, and ``patterns.batch_size``
    as the batch of its statistics pass when it has one."""
    params = dict(cfg.explain.method_params.get(method, {})) if params is None else params
    kw = fit_params(method, params)
    if "batch_size" in get_explainer(method).fit_defaults:
        kw.setdefault("batch_size", cfg.patterns.batch_size)
    return kw


def fitted_state(cfg: Config, method: str, model: torch.nn.Module, x_fit: torch.Tensor) -> dict[str, Any]:
    """``{"state": ...}`` fitted now on ``x_fit`` for a fitted method, ``{}`` for the others (ROAR and the
    invariance check fit each network on its own data; a shared autoencoder with the ``autoencoder`` params)."""
    ex = get_explainer(method)
    if ex.fit is None:
        return {}
    if ex.shared_state == "autoencoder":
        return {"state": fit_autoencoder(x_fit, **autoencoder_kwargs(cfg))}
    return {"state": fit(model, x_fit, method, **fit_kwargs(cfg, method))}


def explain_kwargs(cfg: Config, method: str) -> dict[str, Any]:
    """``explain.method_params`` of ``method`` less those only its fit takes."""
    ex = get_explainer(method)
    return {k: v for k, v in cfg.explain.method_params.get(method, {}).items()
            if k in ex.defaults or k not in ex.fit_defaults}


@with_compute_threads
def fit_states(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """Fit the state of every fitted method of ``explain.methods`` for every survey model on the training set,
    written to ``paths.fitted`` (a ``.partial`` folder renamed when complete: :mod:`xaicore.atomic`). Methods with
    the same fit and parameters (PatternNet, PatternAttribution) share one state. ρ(S) of the trained,
    random-label and zoo models' signal estimators goes to ``paths.pattern_quality``."""
    ds, _ = load_saved(paths.dataset)
    models = survey_models(paths)
    methods = fitted_methods(list(cfg.explain.methods))
    paths.pattern_quality.unlink(missing_ok=True)  # never a stale ρ(S) beside new states
    with atomic_path(paths.fitted) as tmp:
        tmp.mkdir()
        quality = _fit_into(tmp, cfg, ds, models, methods, progress)
    write_text(paths.pattern_quality, json.dumps(quality, indent=1, sort_keys=True))
    return paths.fitted


def _fit_into(tmp: Path, cfg: Config, ds: Any, models: dict[str, Path], methods: list[str], progress: bool
              ) -> dict[str, dict[str, dict[str, float]]]:
    index: dict[str, dict[str, str]] = {m: {} for m in methods}
    quality: dict[str, dict[str, dict[str, float]]] = {}
    groups: dict[str, list[str]] = {}
    for m in methods:
        ex = get_explainer(m)
        key = f"{ex.fit.__module__}.{ex.fit.__qualname__}:{json.dumps(fit_kwargs(cfg, m), sort_keys=True)}"
        groups.setdefault(key, []).append(m)
    bar = tqdm(total=len(groups) * len(models), desc="fit", unit="state", disable=not progress)
    for gi, group in enumerate(groups.values()):
        once = not get_explainer(group[0]).fit_uses_model
        for mi, (name, path) in enumerate(models.items()):
            if once and mi > 0:  # the state does not depend on the model: the first model's file serves all
                for m in group:
                    index[m][name] = index[m][next(iter(models))]
                bar.update()
                continue
            model = load_model(path)
            state = fit(model, ds.x_train, group[0], **fit_kwargs(cfg, group[0]))
            if isinstance(state, Patterns) and not is_control(name) and cfg.patterns.quality:
                quality[name] = pattern_quality(model, state, ds.x_test, fit_data=ds.x_train,
                                                batch_size=cfg.patterns.batch_size, ridge=cfg.patterns.ridge)
            file = f"{gi}_{model_file(name)}.pt"
            state.save(tmp / file)
            for m in group:
                index[m][name] = file
            bar.update()
            bar.set_postfix(method=group[0], model=name)
    bar.close()
    (tmp / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True))
    return quality


def load_states(paths: Paths, method: str, names: list[str]) -> dict[str, Any]:
    """The fitted states of ``method`` for the models ``names`` (one clear error when the fit stage has not
    run or did not fit them); a shared state (CEM's autoencoder) is one object for all of them."""
    ex = get_explainer(method)
    if ex.shared_state is not None:
        path = _shared_state_path(paths, ex.shared_state)
        if not path.is_file():
            raise XaiCoreError(f"{path} is missing; {method!r} needs it: run the {ex.shared_state} stage first "
                               f"(python -m flows {ex.shared_state})")
        state = ex.state_type.load(path)  # type: ignore[union-attr]
        return dict.fromkeys(names, state)
    index_path = paths.fitted / "index.json"
    if not index_path.is_file():
        raise XaiCoreError(f"{index_path} is missing; run the fit stage first (python -m flows.fit)")
    index = json.loads(index_path.read_text())
    missing = [n for n in names if n not in index.get(method, {})]
    if missing:
        raise XaiCoreError(f"{paths.fitted} has no fitted state of {method!r} for {', '.join(missing)}; rerun "
                           "the fit stage (its explain.methods or models changed)")
    state_type = get_explainer(method).state_type
    return {n: state_type.load(paths.fitted / index[method][n]) for n in names}  # type: ignore[union-attr]
