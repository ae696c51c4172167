"""The ``maximize`` stage: activation maximisation (survey §6.6) of every class logit for the trained model and
its controls, with pixels (Yosinski et al.'s regularisers) and with the autoencoder's decoder as generator;
written to ``outputs/maximize.zarr``.

Beside each maximiser (model, parameterization, unit, channel, y, x): ``own_class`` (1 when the model classifies
its maximiser as the unit's class), ``trained_class`` (the class the *trained* model sees in it) and
``reconstruction_error`` (the autoencoder's mean squared error on it: its distance from the digits' manifold;
lower looks more like a digit). The controls are a sanity check of their own: a randomized model's maximisers
should not look like digits to the trained model.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from xaicore.analysis import maximize
from xaicore.config import Config
from xaicore.data import load_saved
from xaicore.errors import XaiCoreError
from xaicore.explain.optimisation import AutoencoderState
from xaicore.metrics.declarations import directions_json
from xaicore.models import load_model
from xaicore.outputs import Paths
from xaicore.pipeline.train_step import TRAINED, survey_models
from xaicore.store import write_dataset
from xaicore.store.schemas import MAXIMIZE_SCHEMA
from xaicore.threads import compute_threads


def maximize_models(cfg: Config, names: list[str]) -> list[str]:
    """The survey models ``maximize.models`` names (shell patterns, e.g. ``cascade:*``), in survey order."""
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in cfg.maximize.models)]
    if not chosen:
        raise XaiCoreError(f"params.yaml: maximize.models {list(cfg.maximize.models)} matches none of the survey's "
                           f"models ({', '.join(names)})")
    return chosen


def run_maximize(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """Maximise every class logit of each ``maximize.models`` model with each parameterization; writes
    ``paths.maximize``."""
    if not paths.autoencoder.is_file():
        raise XaiCoreError(f"{paths.autoencoder} is missing; run the autoencoder stage first "
                           "(python -m flows autoencoder)")
    with compute_threads():
        ds, _ = load_saved(paths.dataset)
        state = AutoencoderState.load(paths.autoencoder)
        models = survey_models(paths)
        names = maximize_models(cfg, list(models))
        trained = load_model(models[TRAINED])
        shape = tuple(int(s) for s in ds.x_train.shape[1:])
        units = list(range(ds.n_classes))
        params = list(cfg.maximize.parameterizations)
        images = np.zeros((len(names), len(params), len(units), *shape), dtype=np.float32)
        own = np.zeros(images.shape[:3], dtype=np.int8)
        seen = np.zeros(images.shape[:3], dtype=np.int64)
        rec = np.zeros(images.shape[:3], dtype=np.float32)
        bar = tqdm(total=len(names) * len(params), desc="maximize", unit="run", disable=not progress)
        for mi, name in enumerate(names):
            model = load_model(models[name])
            for pi, p in enumerate(params):
                kw = dict(cfg.maximize.pixels if p == "pixels" else cfg.maximize.generator)
                x = maximize(model, units, shape=shape, parameterization=p, seed=cfg.seed,
                             reference=state if p == "generator" else None, **kw)
                with torch.no_grad():
                    own[mi, pi] = (model(x).argmax(1) == torch.tensor(units)).numpy()
                    seen[mi, pi] = trained(x).argmax(1).numpy()
                    rec[mi, pi] = (state.reconstruct(x) - x).pow(2).flatten(1).mean(1).numpy()
                images[mi, pi] = x.numpy()
                bar.update()
                bar.set_postfix(model=name, parameterization=p)
        bar.close()
    dims = ("model", "parameterization", "unit")
    out = xr.Dataset(
        {"maximizer": (dims + ("channel", "y", "x"), images),
         "own_class": (dims, own), "trained_class": (dims, seen), "reconstruction_error": (dims, rec)},
        coords={"model": names, "parameterization": params, "unit": units},
        attrs={"params": cfg.section_json("seed", "maximize", "autoencoder"),
               "units": "class logits",
               "directions": directions_json("own_class", "reconstruction_error")},
    )
    return write_dataset(out, paths.maximize, schema=MAXIMIZE_SCHEMA)
