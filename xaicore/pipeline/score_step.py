"""Perturbation scores (AOPC for every perturbation and order, faithfulness), the randomization sanity checks
and input invariance over the heatmap archive; the perturbation scoring runs one Dask task per chunk."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
import zarr
from tqdm.auto import tqdm

from xaicore.config import Config, ScoreConfig
from xaicore.data import load_saved
from xaicore.errors import XaiCoreError
from xaicore.explain import get_explainer
from xaicore.metrics import aopc, faithfulness, input_invariance, shifted_network
from xaicore.metrics.sanity import Reference
from xaicore.models import load_model
from xaicore.pipeline.cluster import dask_client, one_thread
from xaicore.pipeline.fit_step import explain_kwargs, fitted_state
from xaicore.pipeline.paths import Paths
from xaicore.pipeline.steps import TRAINED, survey_models
from xaicore.store import HEATMAP_SCHEMA, SCORES_SCHEMA, not_applicable, open_archive, write_dataset
from xaicore.store.journal import RESUME_DIR, Journal, run_key

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=32)
def _model(path: str) -> torch.nn.Module:
    return load_model(path)


@functools.lru_cache(maxsize=2)
def _images(dataset: str) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """(test images, their dataset indices, the training set's mean image (1, C, H, W))."""
    ds, _ = load_saved(dataset)
    return ds.x_test, ds.idx_test.numpy(), ds.x_train.to(torch.float64).mean(0, keepdim=True).float()


def score_chunk(heatmaps: str, dataset: str, model_path: str, mi: int, ei: int, start: int, stop: int,
                target: np.ndarray, score_cfg: ScoreConfig, seed: int, single_thread: bool) -> dict[str, np.ndarray]:
    """AOPC curves (each perturbation and order) and faithfulness (each perturbation) of one archive chunk."""
    if single_thread:
        one_thread()
    group = zarr.open_group(heatmaps, mode="r")
    sample = np.asarray(group["sample"][start:stop])
    x_test, idx_test, mean_image = _images(dataset)
    x = x_test[np.searchsorted(idx_test, sample)]
    rel = torch.from_numpy(np.asarray(group["relevance"][mi, ei, start:stop]))
    t = torch.from_numpy(target)
    model = _model(model_path)
    kw = dict(region=score_cfg.region, score=score_cfg.score, seed=seed, backend=score_cfg.backend,
              reference=mean_image)
    out: dict[str, np.ndarray] = {}
    for p in score_cfg.perturbations:
        for order in score_cfg.orders:
            out[f"curve_{p}_{order}"] = aopc(model, x, t, rel, order=order, perturbation=p, **kw).curve.numpy()
        if score_cfg.faithfulness:
            out[f"faith_{p}"] = faithfulness(model, x, t, rel, perturbation=p, **kw).numpy()
    return out


def explainer_similarities(heatmaps: str, ei: int, measures: tuple[str, ...], single_thread: bool) -> np.ndarray:
    """(model, measure, sample) similarity of every model's heatmaps of explainer ``ei`` to the trained model's
    (Adebayo et al.); NaN where a method could not explain a model."""
    if single_thread:
        one_thread()
    rel = zarr.open_group(heatmaps, mode="r")["relevance"]
    n_models, n = rel.shape[0], rel.shape[2]
    out = np.full((n_models, len(measures), n), np.nan, dtype=np.float32)
    reference = Reference(torch.from_numpy(np.asarray(rel[0, ei])))  # its HOG once, not once per model
    if torch.isnan(reference.heatmaps).any():
        return out
    for mi in range(n_models):
        other = reference.heatmaps if mi == 0 else torch.from_numpy(np.asarray(rel[mi, ei]))
        if torch.isnan(other).any():
            continue
        for qi, q in enumerate(measures):
            out[mi, qi] = reference(other, q).numpy()
    return out


def invariance_scores(cfg: Config, paths: Paths, heatmaps: xr.Dataset) -> np.ndarray:
    """(explainer, sample) input-invariance error of each method on ``invariance.model`` (Kindermans et al.):
    network 2 sees x + m with its first layer's bias compensated; NaN where a method cannot run on network 2."""
    ds, _ = load_saved(paths.dataset)
    x_test, idx_test, _ = _images(str(paths.dataset))
    x = x_test[np.searchsorted(idx_test, heatmaps.sample.values)]
    target = torch.from_numpy(heatmaps.target.values)
    shift = ds.x_train[cfg.invariance.shift_image] * cfg.invariance.scale
    models = survey_models(paths)
    if cfg.invariance.model not in models:
        raise XaiCoreError(f"params.yaml: invariance.model is {cfg.invariance.model!r}, not one of the survey's "
                           f"models ({', '.join(models)}); add its architecture to model.zoo")
    model = load_model(models[cfg.invariance.model])
    out = np.full((heatmaps.sizes["explainer"], x.shape[0]), np.nan, dtype=np.float32)
    for ei, name in enumerate(str(e) for e in heatmaps.explainer.values):
        if name in not_applicable(heatmaps).get(cfg.invariance.model, {}):
            continue
        if get_explainer(name).shared_state is not None:  # CEM: its autoencoder is one for every model
            log.info("input invariance of %s left out: its shared %s is fitted on the unshifted data only", name,
                     get_explainer(name).shared_state)
            continue
        try:
            params = explain_kwargs(cfg, name)
            params2 = params
            if get_explainer(name).fit is not None:  # fitted once per network on its own data, not per batch
                params = {**params, **fitted_state(cfg, name, model, ds.x_train)}
                net2 = shifted_network(model, shift, tuple(x.shape[1:]))
                params2 = {**params2, **fitted_state(cfg, name, net2, ds.x_train + shift)}
            bs = cfg.explain.batch_of(name)
            out[ei] = np.concatenate([input_invariance(model, x[i:i + bs], target[i:i + bs], name, shift,
                                                       params2=params2, **params).numpy()
                                      for i in range(0, x.shape[0], bs)])
        except XaiCoreError as e:
            log.warning("input invariance of %s left out: %s", name, e)
    return out


SCORE_PARAMS = ("seed", "score", "sanity", "invariance", "autoencoder", "patterns.batch_size",
                "explain.method_params", "explain.batch_size", "explain.batch_sizes")  # dvc.yaml's, for resume


def _run_chunks(cfg: Config, paths: Paths, jobs: list[tuple[int, int, int, int]], model_paths: list[str],
                target: np.ndarray, n_explainers: int, journal: Journal, progress: bool
                ) -> tuple[dict[tuple[int, int, int], dict[str, np.ndarray]], list[np.ndarray]]:
    """Every AOPC/faithfulness chunk and every explainer's sanity similarities, as Dask tasks side by side; each
    result is recorded in ``journal`` as it arrives, and those an interrupted run recorded are taken from it."""
    args = (str(paths.heatmaps), str(paths.dataset))
    measures = tuple(cfg.sanity.measures)
    results: dict[tuple[int, int, int], dict[str, np.ndarray]] = {}
    sims: list[np.ndarray] = [np.empty(0)] * n_explainers
    for job in jobs:
        if (found := journal.get("aopc-{}-{}-{}".format(*job[:3]))) is not None:
            results[job[:3]] = found
    for ei in range(n_explainers):
        if (found := journal.get(f"sanity-{ei}")) is not None:
            sims[ei] = found["similarity"]
    todo = [job for job in jobs if job[:3] not in results]
    todo_sims = [ei for ei in range(n_explainers) if not sims[ei].size]
    if len(todo) + len(todo_sims) < len(jobs) + n_explainers:
        log.info("resuming the scores: %d of %d tasks of an interrupted run are kept",
                 len(jobs) + n_explainers - len(todo) - len(todo_sims), len(jobs) + n_explainers)

    def chunk_args(job: tuple[int, int, int, int], single_thread: bool) -> tuple[Any, ...]:
        mi, ei, a, b = job
        return (*args, model_paths[mi], mi, ei, a, b, target[a:b], cfg.score, cfg.seed, single_thread)

    def done(kind: str, key: Any, value: Any) -> None:
        if kind == "aopc":
            results[key[:3]] = value
            journal.put("aopc-{}-{}-{}".format(*key[:3]), value)
        else:
            sims[key] = value
            journal.put(f"sanity-{key}", {"similarity": value})
        bar.update()

    bar = tqdm(total=len(jobs) + n_explainers, initial=len(jobs) + n_explainers - len(todo) - len(todo_sims),
               desc="scoring tasks", disable=not progress)
    with dask_client(cfg.score.workers if todo or todo_sims else 0, cfg.score.scheduler) as client:
        if client is None:
            for job in todo:
                done("aopc", job, score_chunk(*chunk_args(job, False)))
            for ei in todo_sims:
                done("sanity", ei, explainer_similarities(args[0], ei, measures, False))
        else:
            from distributed import as_completed

            futures: dict[Any, tuple[str, Any]] = {
                client.submit(score_chunk, *chunk_args(job, True), pure=False): ("aopc", job) for job in todo}
            futures.update({client.submit(explainer_similarities, args[0], ei, measures, True, pure=False):
                            ("sanity", ei) for ei in todo_sims})
            for fut in as_completed(futures, loop=client.loop):
                done(*futures[fut], fut.result())
    bar.close()
    return results, sims


def score_heatmaps(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """Score every (model, explainer) of the archive; writes ``paths.scores``.

    ``aopc_curve`` (model, explainer, perturbation, order, sample, step) holds f(x⁽ᵏ⁾) and ``faithfulness``
    (model, explainer, perturbation, sample) the per-sample correlation, both for the models of
    ``score.models`` (NaN for the others); ``aopc`` is the data-set mean AOPC; ``sanity_similarity``
    (model, explainer, measure, sample) compares each model's heatmap with the trained model's (Adebayo et
    al.); ``invariance`` (explainer, sample) is Kindermans et al.'s input-invariance error.
    """
    hm = open_archive(paths.heatmaps, schema=HEATMAP_SCHEMA, verify=True)
    models = survey_models(paths)
    names = [str(m) for m in hm.model.values]
    if names[0] != TRAINED or set(names) - set(models):
        raise XaiCoreError(f"the archive's models {names} do not match the trained models {list(models)}; "
                           "rerun the explain stage")
    s = cfg.score
    unknown = [m for m in s.models if m not in names]
    if unknown:
        raise XaiCoreError(f"params.yaml: score.models names {unknown}, which the archive lacks; it holds {names}")
    explainers = [str(e) for e in hm.explainer.values]
    n = hm.sizes["sample"]
    chunk = hm["relevance"].encoding.get("chunks", (1, 1, n))[2] or n
    skip = not_applicable(hm)
    jobs = [(names.index(m), ei, a, min(a + chunk, n)) for m in s.models for ei, e in enumerate(explainers)
            if e not in skip.get(m, {}) for a in range(0, n, chunk)]
    journal = Journal(paths.root / RESUME_DIR / "score", run_key("score", cfg.section_json(*SCORE_PARAMS), [
        paths.dataset, paths.models, paths.controls, paths.heatmaps, paths.autoencoder, paths.fitted]))
    results, sims = _run_chunks(cfg, paths, jobs, [str(models[m]) for m in names], hm.target.values,
                                len(explainers), journal, progress)

    n_steps = next(iter(results.values()))[f"curve_{s.perturbations[0]}_{s.orders[0]}"].shape[1]
    shape = (len(names), len(explainers), len(s.perturbations))
    curve = np.full(shape + (len(s.orders), n, n_steps), np.nan, dtype=np.float32)
    faith = np.full(shape + (n,), np.nan, dtype=np.float32)
    for (mi, ei, a), r in results.items():
        for pi, p in enumerate(s.perturbations):
            for oi, o in enumerate(s.orders):
                block = r[f"curve_{p}_{o}"]
                curve[mi, ei, pi, oi, a:a + block.shape[0]] = block
            if s.faithfulness:
                faith[mi, ei, pi, a:a + block.shape[0]] = r[f"faith_{p}"]
    measures = tuple(cfg.sanity.measures)
    per_sample = (curve[..., :1] - curve).mean(-1)
    data: dict[str, Any] = {
        "aopc_curve": (("model", "explainer", "perturbation", "order", "sample", "step"), curve),
        "aopc_per_sample": (("model", "explainer", "perturbation", "order", "sample"), per_sample),
        "aopc": (("model", "explainer", "perturbation", "order"), per_sample.mean(-1)),
        "sanity_similarity": (("model", "explainer", "measure", "sample"), np.stack(sims, axis=1)),
    }
    if s.faithfulness:
        data["faithfulness"] = (("model", "explainer", "perturbation", "sample"), faith)
    if cfg.invariance.enabled:
        data["invariance"] = (("explainer", "sample"), invariance_scores(cfg, paths, hm))
    ds = xr.Dataset(
        data,
        coords={"model": np.asarray(names, dtype=object), "explainer": np.asarray(explainers, dtype=object),
                "perturbation": np.asarray(list(s.perturbations), dtype=object),
                "order": np.asarray(list(s.orders), dtype=object), "measure": np.asarray(measures, dtype=object),
                "sample": hm.sample.values, "step": np.arange(n_steps)},
        attrs={"params": cfg.section_json("seed", "score", "sanity", "invariance"), "region": s.region,
               "score": s.score},
    )
    out = write_dataset(ds, paths.scores, schema=SCORES_SCHEMA)
    journal.remove()
    return out
