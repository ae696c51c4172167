"""AOPC and the randomization sanity checks over the heatmap archive, one Dask task per archive chunk."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
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
from xaicore.metrics import aopc, similarity
from xaicore.models import load_model
from xaicore.pipeline.paths import Paths
from xaicore.pipeline.steps import TRAINED, survey_models
from xaicore.store import HEATMAP_SCHEMA, SCORES_SCHEMA, open_archive, write_dataset


@functools.lru_cache(maxsize=32)
def _model(path: str) -> torch.nn.Module:
    return load_model(path)


@functools.lru_cache(maxsize=2)
def _test_images(dataset: str) -> tuple[torch.Tensor, np.ndarray]:
    ds, _ = load_saved(dataset)
    return ds.x_test, ds.idx_test.numpy()


def score_chunk(heatmaps: str, dataset: str, model_path: str, mi: int, ei: int, start: int, stop: int,
                target: np.ndarray, score_cfg: ScoreConfig, seed: int, single_thread: bool) -> dict[str, np.ndarray]:
    """AOPC curves (each configured order) of one archive chunk."""
    if single_thread:
        torch.set_num_threads(1)
    group = zarr.open_group(heatmaps, mode="r")
    rel_all = group["relevance"]
    sample = np.asarray(group["sample"][start:stop])
    x_test, idx_test = _test_images(dataset)
    x = x_test[np.searchsorted(idx_test, sample)]
    rel = torch.from_numpy(np.asarray(rel_all[mi, ei, start:stop]))
    t = torch.from_numpy(target)
    model = _model(model_path)
    out: dict[str, np.ndarray] = {}
    for order in score_cfg.orders:
        res = aopc(model, x, t, rel, order=order, perturbation=score_cfg.perturbation, region=score_cfg.region,
                   score=score_cfg.score, seed=seed, backend=score_cfg.backend)
        out[f"curve_{order}"] = res.curve.numpy()
    return out


def sanity_similarities(heatmaps: xr.Dataset, measures: tuple[str, ...]) -> np.ndarray:
    """(model, explainer, measure, sample) similarity of every model's heatmaps to the trained model's."""
    rel = heatmaps["relevance"]
    out = np.empty((rel.sizes["model"], rel.sizes["explainer"], len(measures), rel.sizes["sample"]), np.float32)
    for ei in range(rel.sizes["explainer"]):
        reference = torch.from_numpy(rel[0, ei].values)
        for mi in range(rel.sizes["model"]):
            other = reference if mi == 0 else torch.from_numpy(rel[mi, ei].values)
            for qi, q in enumerate(measures):
                out[mi, ei, qi] = similarity(reference, other, q).numpy()
    return out


@contextlib.contextmanager
def dask_client(score_cfg: ScoreConfig) -> Iterator[Any]:
    """A ``distributed.Client`` on the configured scheduler, or on a local cluster of process workers;
    ``None`` (run in this process) when ``score.workers`` is 0 and no scheduler is named."""
    if score_cfg.scheduler is None and score_cfg.workers == 0:
        yield None
        return
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if score_cfg.scheduler is not None:
        with Client(score_cfg.scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=score_cfg.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


def score_heatmaps(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """Score every (model, explainer) of the archive; writes ``paths.scores``.

    ``aopc_curve`` (model, explainer, perturbation, order, sample, step) holds f(x⁽ᵏ⁾) for the models of
    ``score.models`` (NaN for the others); ``aopc`` its data-set mean AOPC; ``sanity_similarity``
    (model, explainer, measure, sample) compares each model's heatmap
    with the trained model's (Adebayo et al.).
    """
    hm = open_archive(paths.heatmaps, schema=HEATMAP_SCHEMA)
    models = survey_models(paths)
    names = [str(m) for m in hm.model.values]
    if names[0] != TRAINED or set(names) - set(models):
        raise ValueError(f"the archive's models {names} do not match the trained models {list(models)}")
    explainers = [str(e) for e in hm.explainer.values]
    target = hm.target.values
    n = hm.sizes["sample"]
    chunk = hm["relevance"].encoding.get("chunks", (1, 1, n))[2] or n
    s = cfg.score
    measures = tuple(cfg.sanity.measures)
    unknown = [m for m in s.models if m not in names]
    if unknown:
        raise XaiCoreError(f"params.yaml: score.models names {unknown}, which the archive lacks; it holds {names}")
    scored = [names.index(m) for m in s.models]
    jobs = [(mi, ei, start, min(start + chunk, n)) for mi in scored for ei in range(len(explainers))
            for start in range(0, n, chunk)]
    args = (str(paths.heatmaps), str(paths.dataset))
    results: dict[tuple[int, int, int], dict[str, np.ndarray]] = {}
    bar = tqdm(total=len(jobs), desc="scoring chunks", disable=not progress)
    def chunk_args(job: tuple[int, int, int, int], single_thread: bool) -> tuple[Any, ...]:
        mi, ei, a, b = job
        return (*args, str(models[names[mi]]), mi, ei, a, b, target[a:b], s, cfg.seed, single_thread)

    with dask_client(s) as client:
        if client is None:
            for job in jobs:
                results[job[:3]] = score_chunk(*chunk_args(job, False))
                bar.update()
        else:
            from distributed import as_completed

            futures = {client.submit(score_chunk, *chunk_args(job, True), pure=False): job for job in jobs}
            for fut in as_completed(futures):
                results[futures[fut][:3]] = fut.result()
                bar.update()
    bar.close()
    n_steps = next(iter(results.values()))[f"curve_{s.orders[0]}"].shape[1]
    curve = np.full((len(names), len(explainers), 1, len(s.orders), n, n_steps), np.nan, dtype=np.float32)
    for (mi, ei, a), r in results.items():
        b = a + r[f"curve_{s.orders[0]}"].shape[0]
        for oi, o in enumerate(s.orders):
            curve[mi, ei, 0, oi, a:b] = r[f"curve_{o}"]
    sim = sanity_similarities(hm, measures)
    per_sample = (curve[..., :1] - curve).mean(-1)
    ds = xr.Dataset(
        {
            "aopc_curve": (("model", "explainer", "perturbation", "order", "sample", "step"), curve),
            "aopc_per_sample": (("model", "explainer", "perturbation", "order", "sample"), per_sample),
            "aopc": (("model", "explainer", "perturbation", "order"), per_sample.mean(-1)),
            "sanity_similarity": (("model", "explainer", "measure", "sample"), sim),
        },
        coords={"model": np.asarray(names, dtype=object), "explainer": np.asarray(explainers, dtype=object),
                "perturbation": np.asarray([s.perturbation], dtype=object),
                "order": np.asarray(list(s.orders), dtype=object), "measure": np.asarray(measures, dtype=object),
                "sample": hm.sample.values, "step": np.arange(n_steps)},
        attrs={"params": cfg.section_json("seed", "score", "sanity"), "region": s.region, "score": s.score,
               "directions": '{"aopc morf": "higher is better", "aopc lerf": "lower is better"}'},
    )
    return write_dataset(ds, paths.scores, schema=SCORES_SCHEMA)
