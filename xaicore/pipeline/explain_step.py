"""Heatmaps of every survey model and method into the Zarr archive, chunk-parallel on Dask.

One job is one (model, method, chunk of samples); jobs run on Dask workers of one torch thread each (or in this
process when ``explain.workers`` is 0) and return their block, which this process writes. Each job computes the
same batches in the same order whatever runs it, so a parallel run equals a serial one bit for bit.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from xaicore.atomic import partial_path
from xaicore.config import Config
from xaicore.data import DatasetFile
from xaicore.engine import batch_slices
from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.explain import get_explainer
from xaicore.explain.registry import call_keywords, explain_batched
from xaicore.metrics import conservation_error, positive_fraction
from xaicore.models import load_model, predict_logits
from xaicore.outputs import Paths
from xaicore.pipeline.cluster import dask_client_starting
from xaicore.pipeline.fit_step import explain_kwargs, load_states
from xaicore.pipeline.resume import RESUME_PARAMS, stage_journal
from xaicore.pipeline.runner import Job, run_jobs
from xaicore.pipeline.train_step import survey_models
from xaicore.store import HeatmapArchiveWriter
from xaicore.threads import compute_threads

log = logging.getLogger(__name__)


def git_revision() -> str:
    """The git commit of the xaicore code that runs (its checkout's, whatever the working directory), or
    ``unknown`` when it is not in a repository."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def explained_samples(cfg: Config, paths: Paths) -> tuple[DatasetFile, torch.Tensor, np.ndarray]:
    """(the dataset file, label, dataset index) of the test samples the survey explains: the first
    ``data.n_explain``; their images are read a chunk at a time (``DatasetFile.test_images``)."""
    ds = DatasetFile(paths.dataset)
    n = ds.n_test if cfg.data.n_explain is None else min(cfg.data.n_explain, ds.n_test)
    return ds, ds.y_test[:n], ds.idx_test[:n].numpy()


def method_params(cfg: Config, method: str) -> dict:
    return explain_kwargs(cfg, method)


@functools.lru_cache(maxsize=8)
def _model(path: str) -> torch.nn.Module:
    return load_model(path)


@functools.lru_cache(maxsize=8)
def _state(out: str, method: str, model: str) -> Any:
    return load_states(Paths(Path(out)), method, [model])[model]


@functools.lru_cache(maxsize=2)
def _images(dataset: str) -> tuple[DatasetFile, torch.Tensor]:
    """(the dataset file, the training set's mean image (1, C, H, W)): the ``mean`` fill's reference, as AOPC's."""
    ds = DatasetFile(dataset)
    return ds, ds.train_mean()


def explain_chunk(out: str, dataset: str, model_name: str, model_path: str, method: str, params: dict[str, Any],
                  start: int, stop: int, target: np.ndarray, score: np.ndarray, batch_size: int) -> dict[str, Any]:
    """Heatmaps, axiom figures and extras of test samples ``start:stop`` for one (model, method), in batches of
    ``batch_size`` from ``start``; ``{"not_applicable": reason}`` when the method cannot explain the model."""
    try:
        model = _model(model_path)
        ds, mean_image = _images(dataset)
        x = ds.test_images(start, stop)
        t = torch.from_numpy(target)
        ex = get_explainer(method)
        state = _state(out, method, model_name) if ex.fit is not None else None
        kw = call_keywords(method, params, state=state, reference=mean_image)  # `mean` fill: the training mean
        out = explain_batched(model, x, t, method, batch_size=batch_size, **kw)
    except NotApplicable as e:  # e.g. Grad-CAM on a model without a conv layer
        return {"not_applicable": str(e)}
    rel = out.relevance
    return {"relevance": rel.numpy(),
            "conservation_error": conservation_error(rel, torch.from_numpy(score)).numpy(),
            "positive_fraction": positive_fraction(rel).numpy(),
            "extras": {k: out.extras[k].float().numpy() for k in ex.extras}}


def sample_budget(cfg: Config, models: list[str], n: int) -> np.ndarray:
    """Samples each model explains (``explain.samples``: the first pattern that matches it, else all ``n``):
    model i explains the first ``budget[i]`` of the explained samples. A pattern that matches no model is
    refused, naming it."""
    import fnmatch

    budget = np.full(len(models), n, dtype=np.int64)
    claimed = np.zeros(len(models), dtype=bool)
    for pattern, count in cfg.explain.samples.items():
        hits = [i for i, m in enumerate(models) if fnmatch.fnmatchcase(m, pattern)]
        if not hits:
            raise XaiCoreError(f"params.yaml: explain.samples.{pattern} matches none of the survey's models "
                               f"({', '.join(models)})")
        for i in hits:
            if not claimed[i]:
                budget[i], claimed[i] = min(count, n), True
    return budget


def explain_jobs(cfg: Config, budget: np.ndarray | list[int]) -> list[tuple[int, int, int, int]]:
    """(model, method, start, stop) of every explain-stage job, model i over its first ``budget[i]`` samples:
    one archive chunk of ``explain.chunk`` samples, or one batch of the method's ``explain.batch_sizes`` entry
    where that is smaller (a chunk then becomes several jobs, so that costly methods spread over the workers in
    pieces)."""
    chunk = cfg.explain.chunk
    jobs = []
    for mi, n in enumerate(int(b) for b in budget):
        for ei, method in enumerate(cfg.explain.methods):
            step = min(chunk, cfg.explain.batch_of(method))
            jobs += [(mi, ei, a, min(a + step, c + chunk, n)) for c in range(0, n, chunk)
                     for a in range(c, min(c + chunk, n), step)]
    return jobs


def archive_bytes(n_maps: int, image_shape: tuple[int, ...]) -> int:
    """Upper bound of the heatmap archive's size: float32 relevance of ``n_maps`` heatmaps before compression,
    plus their per-heatmap figures (Zarr's compression rarely saves much on relevance maps)."""
    per_map = int(np.prod(image_shape)) * 4 + 16 * 4
    return n_maps * per_map


def check_disk(cfg: Config, paths: Paths, budget: np.ndarray, image_shape: tuple[int, ...],
               progress: bool) -> int:
    """Estimate the archive, print the estimate, and refuse before any work when the output folder's disk cannot
    hold it (a kept partial archive of an interrupted run counts as space already taken)."""
    import shutil

    n_models, n_samples = len(budget), int(budget.max(initial=0))
    per_model = "" if (budget == n_samples).all() else \
        f" ({int(budget.sum())} model-samples by explain.samples, {int(budget.min())}-{n_samples} per model)"
    need = archive_bytes(int(budget.sum()) * len(cfg.explain.methods), image_shape)
    paths.root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(paths.root).free
    partial = partial_path(paths.heatmaps)
    if partial.is_dir():
        free += sum(p.stat().st_size for p in partial.rglob("*") if p.is_file())
    gb = 1024 ** 3
    what = (f"heatmap archive: at most {need / gb:.2f} GiB ({n_models} models x {len(cfg.explain.methods)} methods "
            f"x {n_samples} samples{per_model} x {int(np.prod(image_shape))} values, float32 before "
            "compression); "
            f"{free / gb:.1f} GiB free under {paths.root}")
    if need > free:
        raise XaiCoreError(f"{what}: the disk cannot hold it; lower data.n_explain, explain.methods or the models "
                           "(model.zoo, controls), or give the run another --out")
    print(what, file=sys.stderr, flush=True)  # always: README promises it, with or without progress bars
    return need


def generate_heatmaps(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """Explain the label class of each sample for every model × method; writes ``paths.heatmaps``.

    Jobs of ``explain.chunk`` samples (computed in batches of ``explain.batch_size``), or of a method's smaller
    ``explain.batch_sizes`` entry, run on ``explain.workers`` Dask workers; each chunk is written once its jobs
    have finished. The per-heatmap conservation error (against the
    target logit f(x)), positive fraction and the methods' extras (LIME's surrogate R², ...) are stored beside.
    """
    ds, label, sample = explained_samples(cfg, paths)
    target = label.clone()
    models = survey_models(paths)
    methods = list(cfg.explain.methods)
    for m in methods:  # a missing fit fails here, before any work
        if get_explainer(m).fit is not None:
            load_states(paths, m, list(models))
    budget = sample_budget(cfg, list(models), label.shape[0])
    check_disk(cfg, paths, budget, ds.input_shape, progress)
    # the workers start while this process computes the logits and creates the archive
    with compute_threads(), dask_client_starting(cfg.explain.workers, cfg.score.scheduler) as starting:
        return _generate(cfg, paths, ds, label, target, sample, models, budget, methods, starting, progress)


def _generate(cfg: Config, paths: Paths, ds: DatasetFile, label: torch.Tensor, target: torch.Tensor,
              sample: np.ndarray, models: dict[str, Path], budget: np.ndarray, methods: list[str], starting: Any,
              progress: bool) -> Path:
    n = label.shape[0]
    logits, pass_s = {}, {}
    for name, path in models.items():
        start = time.perf_counter()
        model = load_model(path)  # in blocks of whole 512-sample batches: the logits of one pass over all
        logits[name] = torch.cat([predict_logits(model, ds.test_images(s.start, s.stop))
                                  for s in batch_slices(n, 4096)])
        pass_s[name] = time.perf_counter() - start
    prediction = np.stack([logits[n].argmax(1).numpy() for n in models])
    score = np.stack([logits[n].gather(1, target[:, None])[:, 0].numpy() for n in models])
    attrs = {
        "params": cfg.section_json(*RESUME_PARAMS["explain"]),
        "method_params": json.dumps({m: {**get_explainer(m).defaults, **method_params(cfg, m)} for m in methods},
                                    sort_keys=True, default=str),
        "dataset": cfg.data.dataset,
        "target": "label",
        "git_revision": git_revision(),
    }
    extras = sorted({k for m in methods for k in get_explainer(m).extras})
    chunk = cfg.explain.chunk
    journal = stage_journal(cfg, paths, "explain")
    writer = HeatmapArchiveWriter(paths.heatmaps, models=list(models), explainers=methods, sample=sample,
                                  label=label.numpy(), target=target.numpy(), prediction=prediction, score=score,
                                  image_shape=ds.input_shape, chunk=chunk, attrs=attrs, extras=extras,
                                  journal=journal, explained=budget)
    names = list(models)
    jobs = [j for j in explain_jobs(cfg, budget) if j[:2] not in writer.resumed_not_applicable
            and (j[0], j[1], j[2] - j[2] % chunk) not in writer.resumed_blocks]
    if writer.resumed_blocks or writer.resumed_not_applicable:
        print(f"explain: resuming an interrupted run of {paths.heatmaps}: {len(writer.resumed_blocks)} blocks and "
              f"{len(writer.resumed_not_applicable)} not-applicable marks are kept ({journal.root})", file=sys.stderr,
              flush=True)
    # the longest jobs first, so that the workers finish together: a perturbation method costs 10²-10³ passes,
    # a gradient method a few; a model costs what its forward pass took above (the order changes no number)
    weight = {m: (100.0 if get_explainer(m).family == "perturbation" else 1.0) for m in methods}

    def cost(j: tuple[int, int, int, int]) -> float:
        return weight[methods[j[1]]] * pass_s[names[j[0]]] * (j[3] - j[2])

    skip: set[tuple[int, int]] = set()
    pending: dict[tuple[int, int, int], list[tuple[int, dict[str, Any]]]] = {}
    done = int(sum(writer.written[mi, :, :b].sum() for mi, b in enumerate(budget)))
    bar = tqdm(total=int(budget.sum()) * len(methods), initial=done, desc="heatmaps",
               unit="map", disable=not progress)

    def args(job: tuple[int, int, int, int]) -> tuple[Any, ...]:
        mi, ei, a, b = job
        return (str(paths.root), str(paths.dataset), names[mi], str(models[names[mi]]), methods[ei],
                method_params(cfg, methods[ei]), a, b, target[a:b].numpy(), score[mi, a:b],
                cfg.explain.batch_of(methods[ei]))

    def write(job: Job, res: dict[str, Any]) -> None:
        """Write a job's block once every job of its archive chunk has returned."""
        mi, ei, a, b = job.key
        bar.update(b - a)
        bar.set_postfix(model=names[mi], method=methods[ei])
        if "not_applicable" in res:
            if (mi, ei) not in skip:
                skip.add((mi, ei))
                writer.mark_not_applicable(mi, ei, res["not_applicable"])
            return
        if (mi, ei) in skip:
            return
        c = a - a % chunk
        parts = pending.setdefault((mi, ei, c), [])
        parts.append((a, res))
        if sum(p["relevance"].shape[0] for _, p in parts) < min(c + chunk, budget[mi]) - c:
            return
        del pending[(mi, ei, c)]
        block = [p for _, p in sorted(parts, key=lambda ap: ap[0])]
        writer.write_block(mi, ei, c, *(np.concatenate([p[k] for p in block])
                                        for k in ("relevance", "conservation_error", "positive_fraction")),
                           {k: np.concatenate([p["extras"][k] for p in block]) for k in block[0]["extras"]})

    # the archive writer keeps the resume of this stage: its journal records whole chunks, verified against
    # their files in the partial store, rather than the (large) relevance of every job
    run_jobs([Job(job, explain_chunk, args(job), cost=cost(job), record=False) for job in jobs], on_result=write,
             client=starting.result())
    bar.close()
    out = writer.finalize()
    journal.remove()
    return out
