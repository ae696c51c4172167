"""The truth study of the ``analysis`` stage (issue 28): which metric is right, judged against a causal ground
truth on the planted digits (:mod:`xaicore.metrics.truth`).

The ``planted`` stage trains ``analysis.arch`` in every ``analysis.truth.regimes`` (the watermark absent, a
class confound, or class-independent noise). Here each regime's model explains the truth set
(:func:`~xaicore.data.planted.truth_set`) into ``truth_heatmaps.zarr`` (model = regime), and
:func:`truth_study` returns the analysis archive's variables: the causal drops and shares, the relevance on the
mark (RIW), every metric of the survey per (regime, method, image), each metric's Kendall τ against the truth with
a bootstrap CI, and Clark et al.'s variance shares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from xaicore.config import Config, ScoreConfig
from xaicore.data.planted import CAUSES, WATERMARK_BOX, PlantedDigits, TruthSet, causal_drops, planted_digits, truth_set
from xaicore.errors import NotApplicable
from xaicore.explain.registry import call_keywords, explain_batched, get_explainer
from xaicore.metrics import (
    LOCALIZATION_MEASURES,
    aopc,
    conservation_error,
    faithfulness,
    localization,
    positive_fraction,
)
from xaicore.metrics.declarations import metric
from xaicore.metrics.truth import agreement, causal_share, metric_vs_truth, relevance_in_mask, variance_shares
from xaicore.models import load_model
from xaicore.outputs import Paths
from xaicore.pipeline.cluster import dask_client
from xaicore.pipeline.fit_step import explain_kwargs, fitted_state
from xaicore.pipeline.runner import Job, run_jobs
from xaicore.pipeline.score_step import region_side
from xaicore.store import HeatmapArchiveWriter, open_archive


def planted_kwargs(cfg: Config) -> dict[str, Any]:
    """The arguments of :func:`~xaicore.data.planted.planted_digits` that the params fix."""
    return dict(hans_class=cfg.analysis.hans_class, texture_class=cfg.analysis.texture_class, seed=cfg.seed)


def regime_model_path(paths: Paths, regime: str) -> Path:
    """Where the planted stage saves the model trained in ``regime`` (the confound's is the analysis's model)."""
    return paths.planted / ("model.pt" if regime == "confound" else f"model_{regime}.pt")


def _truth_heatmaps(cfg: Config, paths: Paths, truth: TruthSet, progress: bool) -> Path:
    """Every ``analysis.truth.methods`` heatmap of the truth set (target: each image's class) for each regime's
    model (model = regime)."""
    tc = cfg.analysis.truth
    n, methods = len(truth.x), list(tc.methods)
    t = truth.label
    models = {r: load_model(regime_model_path(paths, r)).eval() for r in tc.regimes}
    with torch.no_grad():
        logits = torch.stack([models[r](truth.x) for r in tc.regimes])
    writer = HeatmapArchiveWriter(
        paths.truth_heatmaps, models=list(tc.regimes), explainers=methods, sample=np.arange(n),
        label=truth.label.numpy(), target=t.numpy(), prediction=logits.argmax(2).numpy(),
        score=logits.gather(2, t.expand(len(models), n)[..., None])[..., 0].numpy(),
        image_shape=tuple(truth.x.shape[1:]), chunk=n,
        attrs={"params": cfg.section_json("seed", "analysis.truth", "explain.method_params"),
               "dataset": "planted digits, truth set (the watermark drawn on clean test digits)"})
    bar = tqdm(total=len(models) * len(methods), desc="explain the regimes", unit="map", disable=not progress)
    for mi, regime in enumerate(tc.regimes):
        x_train = planted_digits(**planted_kwargs(cfg), regime=regime).dataset.x_train
        shared: dict[str, dict[str, Any]] = {}
        for ei, method in enumerate(methods):
            key = get_explainer(method).shared_state
            if key is not None and key not in shared:
                shared[key] = fitted_state(cfg, method, models[regime], x_train)
            state = shared[key] if key is not None else fitted_state(cfg, method, models[regime], x_train)
            kw = call_keywords(method, explain_kwargs(cfg, method), state=state.get("state"),
                               reference=x_train.mean(0, keepdim=True))
            try:
                rel = explain_batched(models[regime], truth.x, t, method, batch_size=cfg.explain.batch_size,
                                      **kw).relevance
            except NotApplicable as e:
                writer.mark_not_applicable(mi, ei, str(e))
            else:
                score = logits[mi].gather(1, t[:, None])[:, 0]
                writer.write_block(mi, ei, 0, rel.numpy(), conservation_error(rel, score).numpy(),
                                   positive_fraction(rel).numpy())
            bar.update()
    bar.close()
    return writer.finalize()


def truth_scores(model_path: str, relevance: np.ndarray, x: np.ndarray, target: np.ndarray, reference: np.ndarray,
                 perturbation: str, score_cfg: ScoreConfig, seed: int) -> dict[str, np.ndarray]:
    """(methods, images) AOPC MoRF and LeRF and faithfulness of each method's maps ``relevance`` (M, N, C, H, W)
    under one perturbation, with the score stage's settings: one call per method, so every method meets the
    same fill (NaN for a method whose maps are NaN: not applicable)."""
    model = load_model(model_path).eval()
    xt, t = torch.from_numpy(x), torch.from_numpy(target)
    kw = dict(region=region_side(score_cfg.region, tuple(x.shape[1:])), score=score_cfg.score, seed=seed,
              backend=score_cfg.backend, reference=torch.from_numpy(reference), perturbation=perturbation)
    out = {k: np.full(relevance.shape[:2], np.nan) for k in ("morf", "lerf", "faithfulness")}
    for mi, rel in enumerate(torch.from_numpy(relevance)):
        if not torch.isfinite(rel).all():
            continue
        for order in ("morf", "lerf"):
            out[order][mi] = aopc(model, xt, t, rel, order=order, **kw).aopc.numpy()
        out["faithfulness"][mi] = faithfulness(model, xt, t, rel, **kw).numpy()
    return out


def truth_study(cfg: Config, paths: Paths, planted: PlantedDigits, reliance_measures: list[str],
           regimes: dict[str, dict[str, float]], progress: bool) -> dict[str, Any]:
    """The metrics judged against the causal ground truth (:mod:`xaicore.metrics.truth`): each regime's model
    explained on the truth set, the causal drops, the localisation on the mark, every metric per (regime, method,
    image), Kendall τ of each metric's ranking against the truth's and Clark et al.'s variance shares."""
    tc, sc = cfg.analysis.truth, cfg.score
    truth = truth_set(planted, n=tc.n_images, seed=cfg.seed)
    target = truth.label.numpy()
    _truth_heatmaps(cfg, paths, truth, progress)
    hm = open_archive(paths.truth_heatmaps)
    rel = np.asarray(hm["relevance"].values)  # (regime, method, image, C, H, W)
    drops = np.stack([causal_drops(load_model(regime_model_path(paths, r)).eval(), truth).numpy()
                      for r in tc.regimes])
    share = np.stack([causal_share(d) for d in drops])  # (regime, image)
    y0, x0, y1, x1 = WATERMARK_BOX
    box = torch.zeros(len(truth.x), *truth.x.shape[-2:], dtype=torch.bool)
    box[:, y0:y1, x0:x1] = True
    shape = (len(tc.regimes), len(tc.methods), len(truth.x))
    loc = {m: np.full(shape, np.nan) for m in LOCALIZATION_MEASURES}
    riw = np.full(shape, np.nan)
    for ri, ei in np.ndindex(*shape[:2]):
        if np.isfinite(rel[ri, ei]).all():
            maps = torch.from_numpy(rel[ri, ei])
            res = localization(maps, box)
            for m in LOCALIZATION_MEASURES:
                loc[m][ri, ei] = res.measure(m).numpy()
            riw[ri, ei] = relevance_in_mask(maps, box).numpy()
    # every metric of the survey on the planted models' maps, one job per (regime, perturbation)
    references = {r: planted_digits(**planted_kwargs(cfg), regime=r).dataset.x_train.mean(0, keepdim=True).numpy()
                  for r in tc.regimes}
    work = [Job(f"truth-{r}-{p}", truth_scores, (str(regime_model_path(paths, r)), rel[ri], truth.x.numpy(), target,
                                                  references[r], p, sc, cfg.seed))
            for ri, r in enumerate(tc.regimes) for p in sc.perturbations]
    values: dict[str, np.ndarray] = {}
    bar = tqdm(total=len(work), desc="metrics on the regimes", disable=not progress)

    def done(job: Job, result: dict[str, np.ndarray]) -> None:
        _, regime, pert = str(job.key).split("-", 2)
        ri = list(tc.regimes).index(regime)
        for name, v in result.items():
            key = f"{name}_{pert}" if name == "faithfulness" else f"aopc_{name}_{pert}"
            values.setdefault(key, np.full(shape, np.nan))[ri] = v
        bar.update()

    with dask_client(tc.workers, sc.scheduler) as client:
        run_jobs(work, on_result=done, client=client)
    bar.close()
    names = [f"aopc_{o}_{p}" for p in sc.perturbations for o in ("morf", "lerf")] + \
        [f"faithfulness_{p}" for p in sc.perturbations] + [f"localization_{m}" for m in LOCALIZATION_MEASURES]
    values.update({f"localization_{m}": loc[m] for m in LOCALIZATION_MEASURES})
    agree = agreement(riw, share[:, None, :])  # (regime, method, image)
    stacked = np.stack([values[n] for n in names])  # (metric, regime, method, image)
    taus = np.full(len(names), np.nan)
    cis = np.full((len(names), 2), np.nan)
    for i, name in enumerate(names):
        higher = metric(name.split("_")[0] if name.startswith(("faithfulness", "localization"))
                        else "_".join(name.split("_")[:2])).higher_is_better
        res = metric_vs_truth(stacked[i].transpose(1, 0, 2), agree.transpose(1, 0, 2), higher_is_better=higher,
                              n_boot=tc.n_boot, seed=cfg.seed)
        taus[i], cis[i] = res.kendall_tau, res.ci
    eta2, r2 = variance_shares(riw.transpose(1, 0, 2), truth.salience.numpy())
    return {
        "regime_reliance": (("regime", "reliance_measure"),
                            np.array([[regimes[r][k] for k in reliance_measures] for r in tc.regimes],
                                     dtype=np.float64)),
        "causal_drop": (("regime", "truth_sample", "cause"), drops),
        "causal_share": (("regime", "truth_sample"), share),
        "truth_localization": (("regime", "truth_method", "measure", "truth_sample"),
                               np.stack([loc[m] for m in LOCALIZATION_MEASURES], 2)),
        "truth_metric_value": (("truth_metric", "regime", "truth_method", "truth_sample"), stacked),
        "riw": (("regime", "truth_method", "truth_sample"), riw),
        "truth_agreement": (("regime", "truth_method", "truth_sample"), agree),
        "metric_truth_tau": (("truth_metric",), taus),
        "metric_truth_ci": (("truth_metric", "bound"), cis),
        "riw_eta2_regime": (("truth_method",), eta2),
        "riw_r2_salience": (("truth_method",), r2),
        "_coords": {"regime": list(tc.regimes), "truth_method": list(tc.methods), "truth_metric": names,
                    "truth_sample": np.arange(len(truth.x)), "cause": list(CAUSES), "bound": ["low", "high"],
                    "salience": ("truth_sample", truth.salience.numpy().astype(np.float64)),
                    "truth_index": ("truth_sample", truth.index), "truth_label": ("truth_sample",
                                                                                  truth.label.numpy())},
    }
