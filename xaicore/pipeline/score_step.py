"""Perturbation scores (AOPC for every perturbation and order, faithfulness), the randomization sanity checks
and input invariance over the heatmap archive; the perturbation scoring runs one Dask task per chunk."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
import zarr
from tqdm.auto import tqdm

from xaicore.config import Config, ScoreConfig
from xaicore.data import DatasetFile, load_saved
from xaicore.engine import batch_slices
from xaicore.errors import XaiCoreError
from xaicore.explain import get_explainer
from xaicore.explain.registry import call_keywords
from xaicore.metrics import aopc, faithfulness, input_invariance, shifted_network
from xaicore.metrics.sanity import Reference
from xaicore.models import load_model
from xaicore.outputs import Paths
from xaicore.pipeline.cluster import dask_client
from xaicore.pipeline.fit_step import explain_kwargs, fitted_state
from xaicore.pipeline.resume import stage_journal
from xaicore.pipeline.runner import Job, run_jobs
from xaicore.pipeline.train_step import TRAINED, survey_models
from xaicore.store import (
    HEATMAP_SCHEMA,
    SCORES_SCHEMA,
    ArchiveWriter,
    explained_counts,
    not_applicable,
    open_archive,
)
from xaicore.store.journal import Journal
from xaicore.threads import compute_threads

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=32)
def _model(path: str) -> torch.nn.Module:
    return load_model(path)


@functools.lru_cache(maxsize=2)
def _images(dataset: str) -> tuple[DatasetFile, np.ndarray, torch.Tensor]:
    """(the dataset file, its test samples' dataset indices, the training set's mean image (1, C, H, W))."""
    ds = DatasetFile(dataset)
    return ds, ds.idx_test.numpy(), ds.train_mean()


def region_side(region: int | None, shape: tuple[int, ...]) -> int:
    """The AOPC region's side in pixels: ``score.region``, or (null) a seventh of the shorter image side, rounded
    up: at most 7 x 7 squares, as the 4-pixel squares of a 28-pixel digit; 10 pixels on 64, 32 on 224."""
    return region if region is not None else -(-min(shape[-2:]) // 7)


def score_chunk(heatmaps: str, dataset: str, model_path: str, mi: int, ei: int, start: int, stop: int,
                target: np.ndarray, score_cfg: ScoreConfig, seed: int) -> dict[str, np.ndarray]:
    """AOPC curves (each perturbation and order) and faithfulness (each perturbation) of one archive chunk."""
    group = zarr.open_group(heatmaps, mode="r")
    sample = np.asarray(group["sample"][start:stop])
    ds, idx_test, mean_image = _images(dataset)
    x = ds.test_images_at(np.searchsorted(idx_test, sample))
    rel = torch.from_numpy(np.asarray(group["relevance"][mi, ei, start:stop]))
    t = torch.from_numpy(target)
    model = _model(model_path)
    kw = dict(region=region_side(score_cfg.region, tuple(x.shape[1:])), score=score_cfg.score, seed=seed,
              backend=score_cfg.backend, reference=mean_image)
    out: dict[str, np.ndarray] = {}
    for p in score_cfg.perturbations:
        for order in score_cfg.orders:
            out[f"curve_{p}_{order}"] = aopc(model, x, t, rel, order=order, perturbation=p, **kw).curve.numpy()
        if score_cfg.faithfulness:
            out[f"faith_{p}"] = faithfulness(model, x, t, rel, perturbation=p, **kw).numpy()
    return out


def _explained(group: zarr.Group) -> np.ndarray:
    """Samples each model explained (the archive's ``n_explained``; all of them in archives without it)."""
    n_models, n = group["relevance"].shape[:3:2]
    return np.asarray(group["n_explained"][:]) if "n_explained" in group else np.full(n_models, n)


def explainer_similarities(heatmaps: str, ei: int, measures: tuple[str, ...]) -> np.ndarray:
    """(model, measure, sample) similarity of every model's heatmaps of explainer ``ei`` to the trained model's
    (Adebayo et al.); NaN where a method could not explain a model. Read in blocks of whole archive chunks, so
    memory does not grow with the samples (every measure is per sample)."""
    group = zarr.open_group(heatmaps, mode="r")
    rel = group["relevance"]
    n_models, n = rel.shape[0], rel.shape[2]
    explained = _explained(group)
    out = np.full((n_models, len(measures), n), np.nan, dtype=np.float32)
    step = max(rel.chunks[2], 1024 // rel.chunks[2] * rel.chunks[2])  # whole archive chunks, ~1024 samples
    failed = np.zeros(n_models, dtype=bool)  # a model with any NaN map (a method that cannot explain it)
    for block in batch_slices(n, step):
        a = block.start
        if a >= explained[0]:  # the trained model's budget ends: nothing left to compare with
            break
        ref_block = np.asarray(rel[0, ei, a:a + step])
        if np.isnan(ref_block[:explained[0] - a]).any():
            return np.full_like(out, np.nan)
        refs: dict[int, Reference] = {}  # the trained maps' HOG once per block (and per length compared)
        for mi in np.flatnonzero(~failed & (explained > a)):
            b = min(a + step, explained[mi], explained[0])  # the samples both models explained
            if b not in refs:
                refs[b] = Reference(torch.from_numpy(ref_block[:b - a]))
            reference = refs[b]
            other = reference.heatmaps if mi == 0 else torch.from_numpy(np.asarray(rel[mi, ei, a:b]))
            if torch.isnan(other).any():
                failed[mi] = True
                continue
            for qi, q in enumerate(measures):
                out[mi, qi, a:b] = reference(other, q).numpy()
    out[failed] = np.nan
    return out


def _sample_mean(values: np.ndarray) -> np.ndarray:
    """Mean over the last (sample) axis of the samples that have a value; NaN where none has (a model outside
    ``score.models``, or samples past a model's ``explain.samples`` budget)."""
    count = np.isfinite(values).sum(-1)
    total = np.where(np.isfinite(values), values, 0).sum(-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(values.dtype)


def invariance_scores(cfg: Config, paths: Paths, heatmaps: xr.Dataset, explained: np.ndarray) -> np.ndarray:
    """(explainer, sample) input-invariance error of each method on ``invariance.model`` (Kindermans et al.):
    network 2 sees x + m with its first layer's bias compensated; NaN where a method cannot run on network 2,
    and past the model's ``explain.samples`` budget."""
    ds, _ = load_saved(paths.dataset)
    x = ds.x_test[np.searchsorted(ds.idx_test.numpy(), heatmaps.sample.values)]
    target = torch.from_numpy(heatmaps.target.values)
    shift = ds.x_train[cfg.invariance.shift_image] * cfg.invariance.scale
    models = survey_models(paths)
    if cfg.invariance.model not in models:
        raise XaiCoreError(f"params.yaml: invariance.model is {cfg.invariance.model!r}, not one of the survey's "
                           f"models ({', '.join(models)}); add its architecture to model.zoo")
    model = load_model(models[cfg.invariance.model])
    out = np.full((heatmaps.sizes["explainer"], x.shape[0]), np.nan, dtype=np.float32)
    n = int(explained[[str(m) for m in heatmaps.model.values].index(cfg.invariance.model)])
    x, target = x[:n], target[:n]
    for ei, name in enumerate(str(e) for e in heatmaps.explainer.values):
        if name in not_applicable(heatmaps).get(cfg.invariance.model, {}):
            continue
        if get_explainer(name).shared_state is not None:  # CEM: its autoencoder is one for every model
            log.info("input invariance of %s left out: its shared %s is fitted on the unshifted data only", name,
                     get_explainer(name).shared_state)
            continue
        try:
            state = state2 = None
            if get_explainer(name).fit is not None:  # fitted once per network on its own data, not per batch
                state = fitted_state(cfg, name, model, ds.x_train).get("state")
                net2 = shifted_network(model, shift, tuple(x.shape[1:]))
                state2 = fitted_state(cfg, name, net2, ds.x_train + shift).get("state")
            mean = ds.x_train.mean(0, keepdim=True)  # each network's training data: network 2's is shifted
            params = call_keywords(name, explain_kwargs(cfg, name), state=state, reference=mean)
            params2 = call_keywords(name, explain_kwargs(cfg, name), state=state2, reference=mean + shift)
            bs = cfg.explain.batch_of(name)
            out[ei, :n] = np.concatenate([input_invariance(model, x[s], target[s], name, shift, params2=params2,
                                                           **params).numpy() for s in batch_slices(n, bs)])
        except XaiCoreError as e:
            log.warning("input invariance of %s left out: %s", name, e)
    return out


def _similarity_job(heatmaps: str, ei: int, measures: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {"similarity": explainer_similarities(heatmaps, ei, measures)}


def _run_chunks(cfg: Config, paths: Paths, jobs: list[tuple[int, int, int, int]], model_paths: list[str],
                target: np.ndarray, n_explainers: int, journal: Journal, sink: Callable[[str, Any, Any], None],
                progress: bool) -> None:
    """Every AOPC/faithfulness chunk and every explainer's sanity similarities, as jobs of
    :func:`~xaicore.pipeline.runner.run_jobs` side by side. Each result goes to ``sink(kind, key, value)`` (the
    archive) and to ``journal`` as it arrives and is then dropped, so memory does not grow with the samples;
    those an interrupted run recorded are taken from the journal."""
    heatmaps, dataset = str(paths.heatmaps), str(paths.dataset)
    measures = tuple(cfg.sanity.measures)
    work = [Job("aopc-{}-{}-{}".format(*job[:3]), score_chunk,
                (heatmaps, dataset, model_paths[mi], mi, ei, a, b, target[a:b], cfg.score, cfg.seed))
            for job in jobs for mi, ei, a, b in [job]]
    work += [Job(f"sanity-{ei}", _similarity_job, (heatmaps, ei, measures)) for ei in range(n_explainers)]
    what = dict(zip((j.key for j in work), [("aopc", job) for job in jobs] +
                    [("sanity", ei) for ei in range(n_explainers)], strict=True))
    bar = tqdm(total=len(work), desc="scoring tasks", disable=not progress)

    def done(job: Job, value: dict[str, np.ndarray]) -> None:
        kind, key = what[job.key]
        sink(kind, key, value["similarity"] if kind == "sanity" else value)
        bar.update()

    def started(kept: int) -> None:
        if kept:
            print(f"score: resuming an interrupted run: {kept} of {len(work)} tasks are kept from its journal "
                  f"({journal.root})", file=sys.stderr, flush=True)

    # no cluster when every job is in the journal
    left = set(j.key for j in work) - set(journal.names())
    with dask_client(cfg.score.workers if left else 0, cfg.score.scheduler) as client:
        run_jobs(work, on_result=done, client=client, journal=journal, on_start=started)
    bar.close()


def score_heatmaps(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """Score every (model, explainer) of the archive; writes ``paths.scores``.

    ``aopc_curve`` (model, explainer, perturbation, order, sample, step) holds f(x⁽ᵏ⁾) and ``faithfulness``
    (model, explainer, perturbation, sample) the per-sample correlation, both for the models of
    ``score.models`` (NaN for the others, and past a model's ``explain.samples`` budget); ``aopc`` is the data-set
    mean AOPC; ``sanity_similarity`` (model, explainer, measure, sample) compares each model's heatmap with the
    trained model's (Adebayo et al.); ``invariance`` (explainer, sample) is Kindermans et al.'s input-invariance
    error. Each chunk's scores are written to the archive as they arrive, so memory stays flat in the samples.
    """
    with compute_threads():
        return _score_heatmaps(cfg, paths, progress)


def _score_heatmaps(cfg: Config, paths: Paths, progress: bool) -> Path:
    from xaicore.features import Regions

    hm = open_archive(paths.heatmaps, schema=HEATMAP_SCHEMA, verify=True, load_small=False)  # streamed
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
    explained = explained_counts(hm)
    jobs = [(mi, ei, a, min(a + chunk, explained[mi])) for m in s.models for mi in [names.index(m)]
            for ei, e in enumerate(explainers) if e not in skip.get(m, {}) for a in range(0, explained[mi], chunk)]
    shape = (hm.sizes["channel"], hm.sizes["y"], hm.sizes["x"])
    region = region_side(s.region, shape)
    n_steps = Regions(torch.zeros((1, *shape)), region).n_features + 1
    measures = tuple(cfg.sanity.measures)
    M, E, P, O, Q = len(names), len(explainers), len(s.perturbations), len(s.orders), len(measures)
    variables = {
        "aopc_curve": (("model", "explainer", "perturbation", "order", "sample", "step"), (M, E, P, O, n, n_steps),
                       (1, 1, P, O, chunk, n_steps)),
        "aopc_per_sample": (("model", "explainer", "perturbation", "order", "sample"), (M, E, P, O, n),
                            (1, 1, P, O, n)),
        "aopc": (("model", "explainer", "perturbation", "order"), (M, E, P, O), (M, E, P, O)),
        "sanity_similarity": (("model", "explainer", "measure", "sample"), (M, E, Q, n), (M, 1, Q, n)),
    }
    if s.faithfulness:
        variables["faithfulness"] = (("model", "explainer", "perturbation", "sample"), (M, E, P, n), (1, 1, P, n))
    if cfg.invariance.enabled:
        variables["invariance"] = (("explainer", "sample"), (E, n), (E, n))
    writer = ArchiveWriter(paths.scores, variables, coords={
        "model": np.asarray(names, dtype=object), "explainer": np.asarray(explainers, dtype=object),
        "perturbation": np.asarray(list(s.perturbations), dtype=object),
        "order": np.asarray(list(s.orders), dtype=object), "measure": np.asarray(measures, dtype=object),
        "sample": hm.sample.values, "step": np.arange(n_steps)},
        attrs={"params": cfg.section_json("seed", "score", "sanity", "invariance"), "region": region,
               "score": s.score}, schema=SCORES_SCHEMA)

    def sink(kind: str, key: Any, value: Any) -> None:
        if kind == "sanity":
            writer.write("sanity_similarity", (slice(None), key), value)
            return
        mi, ei, a = key[:3]
        curve = np.stack([np.stack([value[f"curve_{p}_{o}"] for o in s.orders]) for p in s.perturbations])
        b = a + curve.shape[2]
        writer.write("aopc_curve", (mi, ei, slice(None), slice(None), slice(a, b)), curve)
        writer.write("aopc_per_sample", (mi, ei, slice(None), slice(None), slice(a, b)),
                     (curve[..., :1] - curve).mean(-1))
        if s.faithfulness:
            writer.write("faithfulness", (mi, ei, slice(None), slice(a, b)),
                         np.stack([value[f"faith_{p}"] for p in s.perturbations]))

    journal = stage_journal(cfg, paths, "score")
    _run_chunks(cfg, paths, jobs, [str(models[m]) for m in names], hm.target.values, E, journal, sink, progress)
    for mi in sorted({names.index(m) for m in s.models}):  # the mean over samples, a model at a time
        writer.write("aopc", (mi,), _sample_mean(writer.read("aopc_per_sample", (mi,))))
    if cfg.invariance.enabled:
        writer.write("invariance", (Ellipsis,), invariance_scores(cfg, paths, hm, explained))
    out = writer.finalize()
    journal.remove()
    return out
