"""Heatmaps of every survey model and method into the Zarr archive, one chunk of samples at a time."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from xaicore.config import Config
from xaicore.data import load_saved
from xaicore.errors import NotApplicable
from xaicore.explain import explain, get_explainer
from xaicore.metrics import conservation_error, positive_fraction
from xaicore.models import load_model, predict_logits
from xaicore.pipeline.paths import Paths
from xaicore.pipeline.pattern_step import load_signal_estimators
from xaicore.pipeline.steps import survey_models
from xaicore.store import HeatmapArchiveWriter


def git_revision() -> str:
    """The project's git commit, or ``unknown`` outside a repository."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def explained_samples(cfg: Config, paths: Paths) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(x, label, dataset index) of the test samples the survey explains: the first ``data.n_explain``."""
    ds, _ = load_saved(paths.dataset)
    n = ds.x_test.shape[0] if cfg.data.n_explain is None else min(cfg.data.n_explain, ds.x_test.shape[0])
    return ds.x_test[:n], ds.y_test[:n], ds.idx_test[:n].numpy()


def method_params(cfg: Config, method: str) -> dict:
    return dict(cfg.explain.method_params.get(method, {}))


def generate_heatmaps(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """Explain the label class of each sample for every model × method; writes ``paths.heatmaps``.

    Relevance is computed in batches of ``explain.batch_size`` and written chunk by chunk, so memory holds one
    chunk whatever the data set's size. The per-heatmap conservation error (against the target logit f(x))
    and positive fraction are stored beside it.
    """
    x, label, sample = explained_samples(cfg, paths)
    target = label.clone()
    models = survey_models(paths)
    methods = list(cfg.explain.methods)
    loaded = {name: load_model(path) for name, path in models.items()}
    fitted = {m: get_explainer(m).fitted for m in methods if get_explainer(m).fitted}
    patterns = load_signal_estimators(paths, list(models)) if "patterns" in fitted.values() else {}
    logits = {name: predict_logits(model, x) for name, model in loaded.items()}
    prediction = np.stack([logits[n].argmax(1).numpy() for n in models])
    score = np.stack([logits[n].gather(1, target[:, None])[:, 0].numpy() for n in models])
    attrs = {
        "params": cfg.section_json("seed", "data", "model", "controls", "explain"),
        "method_params": json.dumps({m: {**get_explainer(m).defaults, **method_params(cfg, m)} for m in methods},
                                    sort_keys=True, default=str),
        "dataset": cfg.data.dataset,
        "target": "label",
        "git_revision": git_revision(),
    }
    chunk = cfg.explain.chunk
    writer = HeatmapArchiveWriter(paths.heatmaps, models=list(models), explainers=methods, sample=sample,
                                  label=label.numpy(), target=target.numpy(), prediction=prediction, score=score,
                                  image_shape=tuple(x.shape[1:]), chunk=chunk, attrs=attrs)
    jobs = [(mi, name, ei, meth) for mi, name in enumerate(models) for ei, meth in enumerate(methods)]
    bar = tqdm(total=len(jobs) * x.shape[0], desc="heatmaps", unit="map", disable=not progress)
    for mi, name, ei, meth in jobs:
        model, kw = loaded[name], method_params(cfg, meth)
        if fitted.get(meth) == "patterns":
            kw["patterns"] = patterns[name]
        for start in range(0, x.shape[0], chunk):
            stop = min(start + chunk, x.shape[0])
            try:
                parts = [explain(model, x[i:min(i + cfg.explain.batch_size, stop)],
                                 target[i:min(i + cfg.explain.batch_size, stop)], method=meth, **kw)
                         for i in range(start, stop, cfg.explain.batch_size)]
            except NotApplicable as e:  # e.g. Grad-CAM on a model without a conv layer
                writer.mark_not_applicable(mi, ei, str(e))
                bar.update(x.shape[0] - start)
                break
            rel = torch.cat(parts)
            writer.write_block(mi, ei, start, rel.numpy(),
                               conservation_error(rel, torch.from_numpy(score[mi, start:stop])).numpy(),
                               positive_fraction(rel).numpy())
            bar.update(stop - start)
            bar.set_postfix(model=name, method=meth)
    bar.close()
    return writer.finalize()
