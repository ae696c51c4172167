"""The ``planted`` and ``analysis`` stages: the meta methods of survey §7 on digits with a planted ground truth
(:mod:`xaicore.data.planted`).

``planted`` generates the data (a Clever-Hans watermark on ``analysis.hans_class``, stripes on
``analysis.texture_class``, dots on every class) and trains ``analysis.arch`` on it; ``reliance.json`` records
that the model uses the watermark (:func:`~xaicore.data.planted.watermark_reliance`).

``analysis`` writes three archives:

* ``planted_heatmaps.zarr`` (the heatmaps schema, model ``clever_hans``): every ``analysis.methods`` heatmap of
  the watermarked class's images — its own digits of both splits (SpRAy's set) and the watermarked ones with
  another class's strokes; their ``split``, ``index`` and flags are coordinates of ``analysis.zarr``, whose
  ``sample`` is the same;
* ``activations.zarr``: the model's ``analysis.dissect.layers`` on ``analysis.dissect.n_images`` images with
  the cues planted at random (:func:`~xaicore.data.planted.dissection_probe`);
* ``analysis.zarr`` (``xaicore.analysis/1``), queryable with xarray:

  - ``localization`` (model, explainer, measure, sample): relevance mass and pointing game on the watermark box
    (:func:`xaicore.metrics.localization`) for every watermarked sample (NaN for the others);
  - ``spray_cluster`` (class, sample) SpRAy labels of ``analysis.spray.method``'s maps of the watermarked class
    (−1: not in its set), ``spray_eigenvalue`` (class, k), ``spray_n_clusters`` (class), ``spray_tsne`` (class,
    sample, axis), ``spray_prototype`` and ``spray_prototype_image`` (class, cluster, y, x), the mean heatmap and
    image of each cluster; ``spray_watermark_cluster`` (class), the cluster holding most watermarked images, and
    ``spray_ari`` (class), the adjusted Rand index of "in that cluster" against the watermark flag (1: SpRAy
    isolated exactly the Clever-Hans images; the clean digits may form several clusters of their own). Only the
    watermarked class has values (NaN / −1 for the others);
  - ``tcav_score``, ``tcav_pvalue``, ``tcav_significant`` (1/0), ``tcav_magnitude``, ``tcav_accuracy`` (concept,
    layer, class) and ``tcav_random_score`` (layer, class): every class, the planted cues as concepts;
  - ``dissection_iou`` (layer, unit, concept), ``dissection_label`` and ``dissection_threshold`` (layer, unit);
  - the ``layer`` and ``concept`` coordinates are the unions of TCAV's and dissection's (NaN where one of them
    does not look);
  - ``reliance`` (reliance_measure): the watermark's effect on the model (``planted/reliance.json``).
  - the truth study's variables (``riw``, ``metric_truth_tau``, ...; :mod:`xaicore.pipeline.truth_step`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from xaicore.analysis import dissect, open_activations, spray, tcav, write_activations
from xaicore.atomic import write_text
from xaicore.config import Config
from xaicore.data import load_saved, save_dataset
from xaicore.data.planted import (
    CONCEPTS,
    WATERMARK_BOX,
    PlantedDigits,
    concept_sets,
    dissection_probe,
    planted_digits,
    watermark_reliance,
)
from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.explain.registry import call_keywords, explain_batched, get_explainer
from xaicore.metrics import (
    LOCALIZATION_MEASURES,
    conservation_error,
    localization,
    positive_fraction,
)
from xaicore.metrics.declarations import directions_json
from xaicore.models import load_model, save_model, train_model
from xaicore.outputs import Paths
from xaicore.pipeline.fit_step import explain_kwargs, fitted_state
from xaicore.pipeline.truth_step import planted_kwargs, regime_model_path, truth_study
from xaicore.store import HeatmapArchiveWriter, open_archive, write_dataset
from xaicore.store.schemas import ANALYSIS_SCHEMA
from xaicore.threads import compute_threads

MODEL = "clever_hans"
FLAGS = ("watermark", "stripes", "dots", "swapped")


def run_planted(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """Generate the planted digits and train ``analysis.arch`` on them in every ``analysis.truth.regimes`` (the
    same test split; the confound's model is the analysis's); writes ``paths.planted`` with ``reliance.json``:
    the confound model's reliance, and under ``regimes`` each regime's."""
    out = paths.planted
    out.mkdir(parents=True, exist_ok=True)
    regimes: dict[str, dict[str, float]] = {}
    for regime in cfg.analysis.truth.regimes:
        with compute_threads():
            planted = planted_digits(**planted_kwargs(cfg), regime=regime)
            ds = planted.dataset
            result = train_model(cfg.analysis.arch, ds.x_train, ds.y_train, n_classes=ds.n_classes,
                                 epochs=cfg.analysis.epochs, batch_size=cfg.model.batch_size, lr=cfg.model.lr,
                                 seed=cfg.seed, x_test=ds.x_test, y_test=ds.y_test,
                                 desc=f"train {MODEL if regime == 'confound' else regime}", progress=progress)
            regimes[regime] = {"test_accuracy": result.test_accuracy,
                               **watermark_reliance(result.model.eval(), planted)}
        if regime == "confound":
            save_dataset(ds, out / "dataset.npz", **{f"flag_{k}": v.numpy() for k, v in planted.flags.items()})
        save_model(result.model, regime_model_path(paths, regime), arch=cfg.analysis.arch,
                   input_shape=ds.input_shape, n_classes=ds.n_classes, test_accuracy=result.test_accuracy)
    write_text(out / "reliance.json", json.dumps({**regimes["confound"], "regimes": regimes}, indent=2))
    return out


def load_planted(cfg: Config, paths: Paths) -> tuple[PlantedDigits, torch.nn.Module]:
    """The planted digits and model the ``planted`` stage wrote."""
    ds, extra = load_saved(paths.planted / "dataset.npz")
    flags = {k.removeprefix("flag_"): v.bool() for k, v in extra.items() if k.startswith("flag_")}
    planted = PlantedDigits(dataset=ds, flags=flags, seed=cfg.seed, hans_class=cfg.analysis.hans_class,
                            texture_class=cfg.analysis.texture_class)
    return planted, load_model(paths.planted / "model.pt")


def analysis_set(planted: PlantedDigits) -> dict[str, Any]:
    """The images of the watermarked class the analysis explains: its own digits (train, then test; SpRAy's
    set) and the watermarked ones with another class's strokes (test), with their flags."""
    ds, cls = planted.dataset, planted.hans_class
    parts = []
    for split in ("train", "test"):
        y = getattr(ds, f"y_{split}")
        own = (y == cls) & ~planted.flag("swapped", split)
        parts.append((split, own))
    swapped = (ds.y_test == cls) & planted.flag("swapped", "test")
    parts.append(("test", swapped))
    x = torch.cat([getattr(ds, f"x_{s}")[m] for s, m in parts])
    out: dict[str, Any] = {
        "x": x, "split": np.concatenate([[s] * int(m.sum()) for s, m in parts]).astype(object),
        "index": np.concatenate([np.flatnonzero(m.numpy()) for _, m in parts]),
        "spray": np.concatenate([np.full(int(m.sum()), i < 2) for i, (_, m) in enumerate(parts)]),
    }
    for f in FLAGS:
        out[f] = np.concatenate([planted.flag(f, s)[m].numpy() for s, m in parts])
    return out


def _explain_all(cfg: Config, model: torch.nn.Module, planted: PlantedDigits, chosen: dict[str, Any],
                 path: Path, progress: bool) -> Path:
    """Every ``analysis.methods`` heatmap of the analysis set, written as a heatmaps archive."""
    x = chosen["x"]
    n = len(x)
    target = torch.full((n,), planted.hans_class, dtype=torch.long)
    with torch.no_grad():
        logits = model(x)
    score = logits.gather(1, target[:, None])[:, 0]
    methods = list(cfg.analysis.methods)
    writer = HeatmapArchiveWriter(
        path, models=[MODEL], explainers=methods, sample=np.arange(n), label=target.numpy(), target=target.numpy(),
        prediction=logits.argmax(1).numpy()[None], score=score.numpy()[None], image_shape=tuple(x.shape[1:]),
        chunk=n, attrs={"params": cfg.section_json("seed", "analysis", "explain.method_params"),
                        "dataset": "planted_digits"})
    mean_image = planted.dataset.x_train.mean(0, keepdim=True)
    bar = tqdm(methods, desc="explain clever_hans", unit="method", disable=not progress)
    shared: dict[str, dict[str, Any]] = {}  # one autoencoder for cem.pp and cem.pn
    for ei, method in enumerate(bar):
        key = get_explainer(method).shared_state
        if key is not None and key not in shared:
            shared[key] = fitted_state(cfg, method, model, planted.dataset.x_train)
        state = shared[key] if key is not None else fitted_state(cfg, method, model, planted.dataset.x_train)
        kw = call_keywords(method, explain_kwargs(cfg, method), state=state.get("state"), reference=mean_image)
        try:
            rel = explain_batched(model, x, target, method, batch_size=cfg.explain.batch_size, **kw).relevance
        except NotApplicable as e:
            writer.mark_not_applicable(0, ei, str(e))
            continue
        writer.write_block(0, ei, 0, rel.numpy(), conservation_error(rel, score).numpy(),
                           positive_fraction(rel).numpy())
    return writer.finalize()


def _localization(heatmaps: xr.Dataset, chosen: dict[str, Any]) -> np.ndarray:
    """(1, explainer, measure, sample): localisation on the watermark box, NaN off the watermarked samples."""
    marked = np.flatnonzero(chosen["watermark"])
    y0, x0, y1, x1 = WATERMARK_BOX
    size = heatmaps.sizes["y"], heatmaps.sizes["x"]
    box = torch.zeros(len(marked), *size, dtype=torch.bool)
    box[:, y0:y1, x0:x1] = True
    out = np.full((1, heatmaps.sizes["explainer"], len(LOCALIZATION_MEASURES), heatmaps.sizes["sample"]), np.nan)
    for ei in range(heatmaps.sizes["explainer"]):
        rel = torch.from_numpy(heatmaps["relevance"].isel(model=0, explainer=ei, sample=marked).values)
        if not torch.isfinite(rel).all():  # not applicable: NaN maps
            continue
        res = localization(rel, box)
        for mi, measure in enumerate(LOCALIZATION_MEASURES):
            out[0, ei, mi, marked] = res.measure(measure).numpy()
    return out


def _spray(cfg: Config, heatmaps: xr.Dataset, planted: PlantedDigits, chosen: dict[str, Any]) -> dict[str, Any]:
    """SpRAy of the watermarked class; the (class, ...) variables hold NaN / −1 for the other classes."""
    sc = cfg.analysis.spray
    c, n_classes = planted.hans_class, planted.dataset.n_classes
    members = np.flatnonzero(chosen["spray"])
    rel = heatmaps["relevance"].sel(model=MODEL, explainer=sc.method).isel(sample=members)
    res = spray(rel, k_max=sc.k_max, n_neighbors=sc.n_neighbors, size=sc.size, embedding=True, seed=cfg.seed)
    n, k = heatmaps.sizes["sample"], sc.k_max + 1
    h, w = heatmaps.sizes["y"], heatmaps.sizes["x"]
    labels = np.full((n_classes, n), -1, dtype=np.int64)
    labels[c, members] = res.labels
    tsne = np.full((n_classes, n, 2), np.nan)
    tsne[c, members] = res.tsne
    eigenvalues = np.full((n_classes, k), np.nan)
    eigenvalues[c] = res.eigenvalues
    proto = np.full((n_classes, k, h, w), np.nan)
    proto_img = np.full((n_classes, k, h, w), np.nan)
    proto[c, :res.n_clusters] = res.prototypes(rel.values.sum(1))
    proto_img[c, :res.n_clusters] = res.prototypes(chosen["x"][members].numpy().sum(1))
    n_clusters = np.full(n_classes, -1, dtype=np.int64)
    n_clusters[c] = res.n_clusters
    from sklearn.metrics import adjusted_rand_score

    flag = chosen["watermark"][members]
    found = int(np.argmax([flag[res.labels == j].sum() for j in range(res.n_clusters)]))
    ari, cluster = np.full(n_classes, np.nan), np.full(n_classes, -1, dtype=np.int64)
    ari[c], cluster[c] = adjusted_rand_score(flag, res.labels == found), found
    return {
        "spray_cluster": (("class", "sample"), labels),
        "spray_eigenvalue": (("class", "k"), eigenvalues),
        "spray_n_clusters": (("class",), n_clusters),
        "spray_ari": (("class",), ari),
        "spray_watermark_cluster": (("class",), cluster),
        "spray_tsne": (("class", "sample", "axis"), tsne),
        "spray_prototype": (("class", "cluster", "y", "x"), proto),
        "spray_prototype_image": (("class", "cluster", "y", "x"), proto_img),
    }


def _tcav(cfg: Config, model: torch.nn.Module, planted: PlantedDigits, layers: list[str],
          progress: bool) -> dict[str, Any]:
    """TCAV of the planted cues for every class at ``analysis.tcav.layers``, on the (concept, layer, class)
    grid of the archive (NaN where a concept or layer is not tested)."""
    tc = cfg.analysis.tcav
    concepts, randoms = concept_sets(planted, n_examples=tc.n_examples, n_random=tc.n_random, seed=cfg.seed)
    ds = planted.dataset
    ci = [CONCEPTS.index(c) for c in concepts]
    li = [layers.index(layer) for layer in tc.layers]
    shape = (len(CONCEPTS), len(layers), ds.n_classes)
    out = {k: np.full(shape, np.nan) for k in ("score", "pvalue", "magnitude", "accuracy", "significant")}
    random_score = np.full(shape[1:], np.nan)
    for cls in tqdm(range(ds.n_classes), desc="tcav", unit="class", disable=not progress):
        res = tcav(model, ds.x_test[ds.y_test == cls], cls, concepts, randoms, layer=list(tc.layers),
                   classifier=tc.classifier, alpha=tc.alpha, seed=cfg.seed)
        grid = np.ix_(ci, li, [cls])
        for key, value in (("score", res.score), ("pvalue", res.pvalue), ("magnitude", res.magnitude),
                           ("accuracy", res.accuracy.mean(-1)), ("significant", res.significant)):
            out[key][grid] = value[..., None]
        random_score[li, cls] = res.random_scores.mean(-1)
    dims = ("concept", "layer", "class")
    return {**{f"tcav_{k}": (dims, v) for k, v in out.items()}, "tcav_random_score": (("layer", "class"),
                                                                                        random_score)}


def _dissect(cfg: Config, model: torch.nn.Module, planted: PlantedDigits, layers: list[str],
             paths: Paths) -> dict[str, Any]:
    """Network Dissection of ``analysis.dissect.layers`` from the activations archive, on the (layer, unit,
    concept) grid (NaN / "" past a layer's units and at layers not dissected)."""
    dc = cfg.analysis.dissect
    x, masks, names = dissection_probe(planted, n=dc.n_images, seed=cfg.seed)
    write_activations({MODEL: model}, x, list(dc.layers), paths.activations, chunk=128,
                      attrs={"dataset": "planted digits, dissection probe",
                             "params": cfg.section_json("seed", "analysis.dissect")})
    acts = open_activations(paths.activations)
    results = {layer: dissect(acts[layer].sel(model=MODEL), masks, quantile=dc.quantile, threshold=dc.threshold,
                              concepts=names) for layer in dc.layers}
    units = max(r.iou.shape[0] for r in results.values())
    iou = np.full((len(layers), units, len(names)), np.nan)
    label = np.full((len(layers), units), "", dtype=object)
    threshold = np.full((len(layers), units), np.nan)
    for layer, r in results.items():
        li, u = layers.index(layer), r.iou.shape[0]
        iou[li, :u], threshold[li, :u] = r.iou, r.thresholds
        label[li, :u] = [name or "" for name in r.names]
    return {"dissection_iou": (("layer", "unit", "concept"), iou),
            "dissection_label": (("layer", "unit"), label.astype(str)),
            "dissection_threshold": (("layer", "unit"), threshold)}


def run_analysis(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """Localisation, SpRAy, TCAV and Network Dissection of the planted model (see the module docstring)."""
    if not (paths.planted / "model.pt").is_file():
        raise XaiCoreError(f"{paths.planted / 'model.pt'} is missing; run the planted stage first "
                           "(python -m flows planted)")
    with compute_threads():
        planted, model = load_planted(cfg, paths)
        chosen = analysis_set(planted)
        _explain_all(cfg, model, planted, chosen, paths.planted_heatmaps, progress)
        heatmaps = open_archive(paths.planted_heatmaps)
        variables: dict[str, Any] = {"localization": (("model", "explainer", "measure", "sample"),
                                                      _localization(heatmaps, chosen))}
        variables.update(_spray(cfg, heatmaps, planted, chosen))
        named = [n for n, _ in model.named_modules() if n]
        wanted = set(cfg.analysis.tcav.layers) | set(cfg.analysis.dissect.layers)
        unknown = sorted(wanted - set(named))
        if unknown:
            raise XaiCoreError(f"params.yaml: analysis layer {unknown[0]!r} is not a layer of the planted model; "
                               f"its layers are: {', '.join(named)}")
        layers = [n for n in named if n in wanted]  # in the model's order
        variables.update(_tcav(cfg, model, planted, layers, progress))
        variables.update(_dissect(cfg, model, planted, layers, paths))
        reliance = json.loads((paths.planted / "reliance.json").read_text())
        regimes = reliance.pop("regimes")
        variables.update(truth_study(cfg, paths, planted, list(reliance), regimes, progress))
    truth_coords = variables.pop("_coords")
    variables["reliance"] = (("reliance_measure",), np.array(list(reliance.values()), dtype=np.float64))
    k = cfg.analysis.spray.k_max + 1
    out = xr.Dataset(
        variables,
        coords={
            "model": [MODEL], "explainer": list(cfg.analysis.methods), "measure": list(LOCALIZATION_MEASURES),
            "sample": np.arange(len(chosen["x"])), "class": np.arange(planted.dataset.n_classes),
            "k": np.arange(k), "cluster": np.arange(k), "axis": ["x", "y"], "concept": list(CONCEPTS),
            "layer": layers, "unit": np.arange(variables["dissection_iou"][1].shape[1]),
            "reliance_measure": list(reliance),
            **{f: ("sample", chosen[f]) for f in FLAGS}, "split": ("sample", chosen["split"].astype(str)),
            "index": ("sample", chosen["index"]), **truth_coords,
        },
        attrs={"params": cfg.section_json("seed", "analysis"), "model": MODEL,
               "watermark_box": json.dumps(WATERMARK_BOX), "hans_class": planted.hans_class,
               "texture_class": planted.texture_class,
               "directions": directions_json("localization", "tcav_pvalue", "dissection_iou", "truth_agreement",
                                             "metric_truth_tau")},
    )
    return write_dataset(out, paths.analysis, schema=ANALYSIS_SCHEMA)
