"""ROAR and KAR (Hooker et al. 2019; survey §4.5.3): heatmaps of the training and test sets, degraded data,
retrained models. The expensive step, so it is its own DVC stage writing ``outputs/roar.zarr``."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from xaicore.config import Config
from xaicore.data import Dataset, load_saved
from xaicore.explain import explain
from xaicore.metrics import Fill, Trainer, make_fill, roar_cell
from xaicore.models import accuracy, load_model
from xaicore.pipeline.cluster import dask_client, one_thread
from xaicore.pipeline.fit_step import explain_kwargs, fitted_state
from xaicore.pipeline.paths import Paths
from xaicore.pipeline.resume import stage_journal
from xaicore.pipeline.steps import TRAINED, survey_models
from xaicore.store import write_dataset

ROAR_SCHEMA = "xaicore.roar/1"
log = logging.getLogger(__name__)


def batched_explain(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, method: str,
                    batch_size: int, **params: object) -> torch.Tensor:
    return torch.cat([explain(model, x[i:i + batch_size], target[i:i + batch_size], method=method, **params)
                      for i in range(0, x.shape[0], batch_size)])


@functools.lru_cache(maxsize=1)
def _dataset(path: str) -> Dataset:
    return load_saved(path)[0]


def roar_heatmaps(cfg: Config, dataset: str, model_path: str, method: str,
                  single_thread: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(training set, test set) heatmaps of ``method`` for the trained model, whose degraded data ROAR/KAR
    retrain on (a fitted method is fitted on the training set first)."""
    if single_thread:
        one_thread()
    ds = _dataset(dataset)
    model = load_model(model_path)
    kw = {**explain_kwargs(cfg, method), **roar_kwargs(cfg, method), **fitted_state(cfg, method, model, ds.x_train)}
    bs = cfg.explain.batch_of(method)
    return (batched_explain(model, ds.x_train, ds.y_train, method, bs, **kw),
            batched_explain(model, ds.x_test, ds.y_test, method, bs, **kw))


def roar_kwargs(cfg: Config, method: str) -> dict[str, Any]:
    """``roar.method_params`` of ``method`` (over ``explain.method_params``) less those only its fit takes."""
    from xaicore.explain import get_explainer

    ex = get_explainer(method)
    return {k: v for k, v in cfg.roar.method_params.get(method, {}).items()
            if k in ex.defaults or k not in ex.fit_defaults}


def roar_retrain(dataset: str, heatmaps: tuple[torch.Tensor, torch.Tensor], mode: str, fraction: float,
                 seed: int, trainer: Trainer, fill: Fill, single_thread: bool) -> float:
    """Test accuracy of one model retrained at ``fraction`` (:func:`~xaicore.metrics.roar_cell`)."""
    if single_thread:
        one_thread()
    ds = _dataset(dataset)
    return roar_cell(ds.x_train, ds.y_train, ds.x_test, ds.y_test, *heatmaps, fraction=fraction, mode=mode,
                     seed=seed, train_fn=trainer, fill=fill)


def run_roar(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """For each method of ``roar.methods`` and each mode: test accuracy of models retrained on data whose most
    (ROAR) or least (KAR) relevant pixels were replaced by the first of ``roar.fills`` (the training set's
    per-channel mean by default): ``roar_accuracy`` (mode, explainer, fraction, repeat). The ROAR mode is also run
    with every other fill: ``roar_accuracy_by_fill`` (fill, explainer, fraction, repeat), the first fill included.

    Every retraining is one job on ``roar.workers`` Dask workers of one torch thread (in this process, also on
    one thread, when it is 0), after its method's heatmaps (one job per method): the figures do not depend on
    the number of workers."""
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

    def cell_args(cell: tuple[int, int, int, int, int]) -> tuple[Any, ...]:
        li, mi, ei, fi, k = cell
        return r.modes[mi], r.fractions[fi], cfg.seed + k, trainer, fills[li], True

    def done(cell: tuple[int, int, int, int, int], value: float, record: bool = True) -> None:
        li, mi, ei, fi, k = cell
        if li == 0:
            acc[mi, ei, fi, k] = value
        if r.modes[mi] == "roar":
            by_fill[li, ei, fi, k] = value
        if record:
            journal.put("cell-{}-{}-{}-{}-{}".format(*cell), {"accuracy": np.float32(value)})
        bar.update()
        bar.set_postfix(method=r.methods[ei], mode=r.modes[mi], fill=r.fills[li])

    for cell in list(cells):  # the retrainings an interrupted run of this configuration finished
        if (found := journal.get("cell-{}-{}-{}-{}-{}".format(*cell))) is not None:
            done(cell, float(found["accuracy"]), record=False)
            cells.remove(cell)
    if bar.n:
        log.info("resuming ROAR/KAR: %d retrained models of an interrupted run are kept", bar.n)
    methods = sorted({c[2] for c in cells})  # those with a retraining left need their heatmaps

    threads = torch.get_num_threads()
    try:
        with dask_client(r.workers if cells else 0, cfg.score.scheduler) as client:
            if client is None:
                for ei in methods:
                    heat = roar_heatmaps(cfg, str(paths.dataset), model_path, r.methods[ei], True)
                    for cell in (c for c in cells if c[2] == ei):
                        done(cell, roar_retrain(str(paths.dataset), heat, *cell_args(cell)))
            else:
                from distributed import as_completed

                heat = {ei: client.submit(roar_heatmaps, cfg, str(paths.dataset), model_path, r.methods[ei], True,
                                          pure=False) for ei in methods}
                futures = {client.submit(roar_retrain, str(paths.dataset), heat[cell[2]], *cell_args(cell),
                                         pure=False): cell for cell in cells}
                for fut in as_completed(futures, loop=client.loop):
                    done(futures[fut], fut.result())
    finally:
        torch.set_num_threads(threads)
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
               "directions": '{"roar": "lower is better", "kar": "higher is better"}'},
    )
    path = write_dataset(out, paths.roar, schema=ROAR_SCHEMA)
    journal.remove()
    return path
