"""ROAR and KAR (Hooker et al. 2019; survey §4.5.3): heatmaps of the training and test sets, degraded data,
retrained models. The expensive step, so it is its own DVC stage writing ``outputs/roar.zarr``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from xaicore.config import Config
from xaicore.data import load_saved
from xaicore.explain import explain
from xaicore.metrics import Trainer, roar_kar
from xaicore.models import accuracy, load_model
from xaicore.pipeline.fit_step import explain_kwargs, fitted_state
from xaicore.pipeline.paths import Paths
from xaicore.pipeline.steps import TRAINED, survey_models
from xaicore.store import write_dataset

ROAR_SCHEMA = "xaicore.roar/1"


def batched_explain(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, method: str,
                    batch_size: int, **params: object) -> torch.Tensor:
    return torch.cat([explain(model, x[i:i + batch_size], target[i:i + batch_size], method=method, **params)
                      for i in range(0, x.shape[0], batch_size)])


def run_roar(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """For each method of ``roar.methods`` and each mode: test accuracy of models retrained on data whose most
    (ROAR) or least (KAR) relevant pixels were replaced by the training set's per-channel mean."""
    ds, _ = load_saved(paths.dataset)
    model = load_model(survey_models(paths)[TRAINED])
    r, m = cfg.roar, cfg.model
    trainer = Trainer(arch=m.arch, n_classes=ds.n_classes, epochs=r.epochs, batch_size=m.batch_size, lr=m.lr)
    acc = np.empty((len(r.modes), len(r.methods), len(r.fractions), r.n_repeats), dtype=np.float32)
    bar = tqdm(total=acc.shape[0] * acc.shape[1], desc="ROAR/KAR retraining", disable=not progress)
    for ei, method in enumerate(r.methods):
        kw = {**explain_kwargs(cfg, method), **fitted_state(cfg, method, model, ds.x_train)}
        rel_train = batched_explain(model, ds.x_train, ds.y_train, method, cfg.explain.batch_size, **kw)
        rel_test = batched_explain(model, ds.x_test, ds.y_test, method, cfg.explain.batch_size, **kw)
        for mi, mode in enumerate(r.modes):
            res = roar_kar(ds.x_train, ds.y_train, ds.x_test, ds.y_test, rel_train, rel_test, mode=mode,
                           fractions=r.fractions, repeats=r.n_repeats, train_fn=trainer, seed=cfg.seed)
            acc[mi, ei] = res.accuracy.numpy()
            bar.update()
            bar.set_postfix(method=method, mode=mode)
    bar.close()
    out = xr.Dataset(
        {"roar_accuracy": (("mode", "explainer", "fraction", "repeat"), acc)},
        coords={"mode": np.asarray(list(r.modes), dtype=object), "explainer": np.asarray(list(r.methods), dtype=object),
                "fraction": np.asarray(r.fractions, dtype=np.float64), "repeat": np.arange(r.n_repeats)},
        attrs={"params": cfg.section_json("seed", "model", "roar"),
               "trained_test_accuracy": accuracy(model, ds.x_test, ds.y_test),
               "directions": '{"roar": "lower is better", "kar": "higher is better"}'},
    )
    return write_dataset(out, paths.roar, schema=ROAR_SCHEMA)
