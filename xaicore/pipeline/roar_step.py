"""ROAR and KAR (Hooker et al. 2019; survey §4.5.3): heatmaps of the training and test sets, degraded data,
retrained models. The expensive step, so it is its own DVC stage writing ``outputs/roar.zarr``."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from xaicore.config import Config
from xaicore.data import Dataset, load_saved
from xaicore.explain import explain_batched
from xaicore.explain.registry import call_keywords
from xaicore.metrics import Fill, Trainer, make_fill, metric, roar_cell
from xaicore.metrics.roar import MODES
from xaicore.models import accuracy, load_model
from xaicore.outputs import Paths
from xaicore.pipeline.cluster import dask_client
from xaicore.pipeline.fit_step import explain_kwargs, fitted_state
from xaicore.pipeline.resume import stage_journal
from xaicore.pipeline.runner import Job, Needs, run_jobs
from xaicore.pipeline.train_step import TRAINED, survey_models
from xaicore.store import write_dataset
from xaicore.store.schemas import ROAR_SCHEMA
from xaicore.threads import compute_threads

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _dataset(path: str) -> Dataset:
    return load_saved(path)[0]


def roar_heatmaps(cfg: Config, dataset: str, model_path: str, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(training set, test set) heatmaps of ``method`` for the trained model, whose degraded data ROAR/KAR
    retrain on (a fitted method is fitted on the training set first)."""
    ds = _dataset(dataset)
    model = load_model(model_path)
    kw = call_keywords(method, {**explain_kwargs(cfg, method), **roar_kwargs(cfg, method)},
                       state=fitted_state(cfg, method, model, ds.x_train).get("state"),
                       reference=ds.x_train.mean(0, keepdim=True))
    bs = cfg.explain.batch_of(method)
    return (explain_batched(model, ds.x_train, ds.y_train, method, batch_size=bs, **kw).relevance,
            explain_batched(model, ds.x_test, ds.y_test, method, batch_size=bs, **kw).relevance)


def roar_kwargs(cfg: Config, method: str) -> dict[str, Any]:
    """``roar.method_params`` of ``method`` (over ``explain.method_params``) less those only its fit takes."""
    from xaicore.explain import get_explainer

    ex = get_explainer(method)
    return {k: v for k, v in cfg.roar.method_params.get(method, {}).items()
            if k in ex.defaults or k not in ex.fit_defaults}


def roar_retrain(dataset: str, heatmaps: tuple[torch.Tensor, torch.Tensor], mode: str, fraction: float,
                 seed: int, trainer: Trainer, fill: Fill) -> dict[str, np.ndarray]:
    """Test accuracy of one model retrained at ``fraction`` (:func:`~xaicore.metrics.roar_cell`), as the
    journal records it."""
    ds = _dataset(dataset)
    return {"accuracy": np.float32(roar_cell(ds.x_train, ds.y_train, ds.x_test, ds.y_test, *heatmaps,
                                             fraction=fraction, mode=mode, seed=seed, train_fn=trainer, fill=fill))}


def run_roar(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """For each method of ``roar.methods`` and each mode: test accuracy of models retrained on data whose most
    (ROAR) or least (KAR) relevant pixels were replaced by the first of ``roar.fills`` (the training set's
    per-channel mean by default): ``roar_accuracy`` (mode, explainer, fraction, repeat). The ROAR mode is also run
    with every other fill: ``roar_accuracy_by_fill`` (fill, explainer, fraction, repeat), the first fill included.

    Every retraining is one job of :func:`~xaicore.pipeline.runner.run_jobs` on ``roar.workers`` Dask workers (in
    this process when it is 0), fed by its method's heatmaps (one job per method): the figures do not depend on
    the number of workers."""
    with compute_threads():
        return _run_roar(cfg, paths, progress)


def _run_roar(cfg: Config, paths: Paths, progress: bool) -> Path:
    ds = _dataset(str(paths.dataset))
    model_path = str(survey_models(paths)[TRAINED])
    r, m = cfg.roar, cfg.model
    trainer = Trainer(arch=m.spec, n_classes=ds.n_classes, epochs=r.epochs, batch_size=m.batch_size, lr=m.lr)
    fills = [make_fill(kind, ds.x_train) for kind in r.fills]
    acc = np.empty((len(r.modes), len(r.methods), len(r.fractions), r.n_repeats), dtype=np.float32)
    by_fill = np.full((len(r.fills), len(r.methods), len(r.fractions), r.n_repeats), np.nan, dtype=np.float32)
    # (fill, mode, method, fraction, repeat): every mode with the first fill, the ROAR mode with the others too
    cells = [(li, mi, ei, fi, k) for ei in range(len(r.methods)) for li in range(len(r.fills))
             for mi in range(len(r.modes)) if li == 0 or r.modes[mi] == "roar"
             for fi in range(len(r.fractions)) for k in range(r.n_repeats)]
    journal = stage_journal(cfg, paths, "roar")
    bar = tqdm(total=len(cells), desc="ROAR/KAR retraining", unit="model", disable=not progress)
    dataset = str(paths.dataset)
    jobs = [Job(f"heatmaps-{ei}", roar_heatmaps, (cfg, dataset, model_path, r.methods[ei]), record=False,
                report=False) for ei in range(len(r.methods))]
    jobs += [Job("cell-{}-{}-{}-{}-{}".format(*cell), roar_retrain,
                 (dataset, Needs(f"heatmaps-{cell[2]}"), r.modes[cell[1]], r.fractions[cell[3]], cfg.seed + cell[4],
                  trainer, fills[cell[0]])) for cell in cells]
    cell_of = {f"cell-{li}-{mi}-{ei}-{fi}-{k}": (li, mi, ei, fi, k) for li, mi, ei, fi, k in cells}

    def done(job: Job, value: dict[str, np.ndarray]) -> None:
        li, mi, ei, fi, k = cell_of[job.key]
        if li == 0:
            acc[mi, ei, fi, k] = value["accuracy"]
        if r.modes[mi] == "roar":
            by_fill[li, ei, fi, k] = value["accuracy"]
        bar.update()
        bar.set_postfix(method=r.methods[ei], mode=r.modes[mi], fill=r.fills[li])

    def started(kept: int) -> None:
        if kept:
            print(f"roar: resuming an interrupted run: {kept} retrained models are kept from its journal "
                  f"({journal.root})", file=sys.stderr, flush=True)

    left = set(cell_of) - set(journal.names())
    with dask_client(r.workers if left else 0, cfg.score.scheduler) as client:
        run_jobs(jobs, on_result=done, client=client, journal=journal, on_start=started)
    bar.close()
    trained = load_model(model_path)
    explainers = np.asarray(list(r.methods), dtype=object)
    fractions = np.asarray(r.fractions, dtype=np.float64)
    data = {"roar_accuracy": (("mode", "explainer", "fraction", "repeat"), acc)}
    if "roar" in r.modes:
        data["roar_accuracy_by_fill"] = (("fill", "explainer", "fraction", "repeat"), by_fill)
    out = xr.Dataset(
        data,
        coords={"mode": np.asarray(list(r.modes), dtype=object), "explainer": explainers, "fraction": fractions,
                "repeat": np.arange(r.n_repeats), "fill": np.asarray(list(r.fills), dtype=object)},
        attrs={"params": cfg.section_json("seed", "model", "roar"),
               "trained_test_accuracy": accuracy(trained, ds.x_test, ds.y_test),
               "fill": r.fills[0],
               "directions": json.dumps({m: metric(f"{m}_accuracy").verdict for m in MODES})},
    )
    path = write_dataset(out, paths.roar, schema=ROAR_SCHEMA)
    journal.remove()
    return path
