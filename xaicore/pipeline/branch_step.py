"""The ``tabular`` and ``text`` stages: §6's perturbation methods where the survey shows them on other data.

Each stage runs one branch, data → train → explain → score, into ``outputs/<kind>/``:

* ``dataset.npz`` (:func:`xaicore.data.save_dataset`) and ``model.pt`` + ``model.json``
  (:func:`xaicore.models.embedding.save_embedding_model`, with its accuracies);
* ``features.zarr`` (schema ``xaicore.features/1``, :func:`xaicore.store.open_archive` refuses a foreign or
  incomplete one), queryable with xarray:

  - ``relevance`` (model, explainer, sample, feature) — tabular, ``feature`` = the column names — or (model,
    explainer, sample, token) — text, with the words as the coordinate ``word`` (sample, token), "" at padding;
    tabular rows carry ``x`` (sample, feature) and ``value`` (sample, feature), the readable bin of each value
    ("sex = female", "2.50 < age <= 7.00") and ``bin`` (sample, feature) its index;
  - coords ``label``, ``target`` (the model's prediction: every method explains it, anchors need it) and
    ``prediction``/``score`` (model, sample), the target's probability;
  - per-method extras as (model, explainer, sample) variables (``surrogate_r2``, ``p_class``) and the anchors'
    ``anchor_rule``, ``anchor_precision``, ``anchor_coverage``, ``anchor_found``, ``anchor_model_calls`` (model,
    sample);
  - scores: ``aopc_curve`` (model, explainer, order, sample, step) and ``aopc`` (model, explainer, order) of
    feature removal (MoRF/LeRF, :func:`xaicore.metrics.aopc`: a column to its training mean/mode, a token
    to UNK) and ``faithfulness`` (model, explainer, sample);
  - attrs: params, the method parameters, ``not_applicable`` (JSON, method → reason).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from xaicore.config import Config, TabularConfig, TextConfig
from xaicore.data import Dataset, load_dataset, load_saved, save_dataset
from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.explain.perturbation.anchors import ANCHOR_EXTRAS as ANCHOR_STATS
from xaicore.explain.registry import call_keywords, explanation
from xaicore.features import ColumnStats
from xaicore.metrics import aopc, faithfulness
from xaicore.models.embedding import load_embedding_model, save_embedding_model, train_embedding_model
from xaicore.outputs import BRANCHES, Paths
from xaicore.store import open_archive, write_dataset
from xaicore.store.schemas import FEATURES_SCHEMA
from xaicore.threads import compute_threads

ANCHOR_EXTRAS = ("rule", *ANCHOR_STATS)  # the rule in words, then what the explainer returns beside it


def branch_config(cfg: Config, kind: str) -> TabularConfig | TextConfig:
    if kind not in BRANCHES:
        raise XaiCoreError(f"unknown branch {kind!r}; expected one of {', '.join(BRANCHES)}")
    return cfg.tabular if kind == "tabular" else cfg.text


def column_stats(ds: Dataset) -> ColumnStats:
    """The training statistics of a tabular data set's columns (what lime, anchors, pda and removal read)."""
    return ColumnStats.fit(ds.x_train, nominal=ds.nominal, names=ds.feature_names, categories=ds.categories)


def run_branch_train(cfg: Config, paths: Paths, kind: str, *, progress: bool = True) -> Path:
    """Load the branch's data set and train its model: writes ``<kind>/dataset.npz`` and ``<kind>/model.pt``."""
    branch = branch_config(cfg, kind)
    extra = ({"label": branch.label, "nominal": branch.nominal} if kind == "tabular"
             else {"max_len": branch.max_len})
    ds = load_dataset(branch.dataset, root=branch.root, seed=cfg.seed, **extra)
    if ds.kind != kind:
        raise XaiCoreError(f"{kind}.dataset {branch.dataset!r} is {ds.kind} data")
    with compute_threads():
        model, train_acc, test_acc = train_embedding_model(branch.arch, ds, epochs=branch.epochs,
                                                         batch_size=cfg.model.batch_size, seed=cfg.seed,
                                                         progress=progress)
    out = paths.root / kind
    save_dataset(ds, out / "dataset.npz")
    save_embedding_model(model, out / "model.pt", dataset=ds.name, train_accuracy=train_acc, test_accuracy=test_acc)
    return out


def method_kwargs(kind: str, method: str, branch: TabularConfig | TextConfig, ds: Dataset,
                  stats: ColumnStats | None, seed: int) -> dict[str, Any]:
    """A method's keywords in the branch: params.yaml's, the training statistics as ``reference`` (tabular), the
    vocabulary for anchors' rules (text) and the survey's seed."""
    return call_keywords(method, branch.method_params.get(method, {}), reference=stats if kind == "tabular" else None,
                         vocab=ds.vocab if kind == "text" else None, seed=seed)


def _recorded(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if k not in ("reference", "vocab")}


def run_branch_explain(cfg: Config, paths: Paths, kind: str, *, progress: bool = True) -> Path:
    """Explain the branch's first ``n_explain`` test samples with every method, score them by feature removal
    and write ``<kind>/features.zarr`` (see the module docstring)."""
    branch = branch_config(cfg, kind)
    folder = paths.root / kind
    ds, _ = load_saved(folder / "dataset.npz")
    model = load_embedding_model(folder / "model.pt")
    stats = column_stats(ds) if kind == "tabular" else None
    n = min(branch.n_explain, ds.x_test.shape[0])
    x, label = ds.x_test[:n], ds.y_test[:n]
    with compute_threads():
        with torch.no_grad():
            prob = torch.softmax(model(x).double(), 1)
        target = prob.argmax(1)
        score = prob.gather(1, target[:, None])[:, 0]
        rel = np.full((1, len(branch.methods), n, x.shape[1]), np.nan, dtype=np.float32)
        extras: dict[str, np.ndarray] = {}
        anchor: dict[str, np.ndarray] = {}
        skipped: dict[str, str] = {}
        params: dict[str, Any] = {}
        for e, method in enumerate(tqdm(branch.methods, desc=f"explain {kind}", disable=not progress,
                                        leave=False)):
            kw = method_kwargs(kind, method, branch, ds, stats, cfg.seed)
            params[method] = _recorded(kw)
            try:
                out = explanation(model, x, target, method, **kw)
            except NotApplicable as err:
                skipped[method] = str(err)
                continue
            rel[0, e] = out.relevance.float().numpy()
            for name, values in out.extras.items():
                if method == "anchors":
                    anchor[name] = np.asarray(values if name == "rule" else torch.as_tensor(values).double())
                else:
                    extras.setdefault(name, np.full((1, len(branch.methods), n), np.nan, dtype=np.float32))
                    extras[name][0, e] = torch.as_tensor(values).float().numpy()
        scores = _score(model, x, target, rel, branch.methods, stats)
    data = _dataset(kind, ds, x, label, target, score, rel, branch, stats, extras, anchor, scores)
    data.attrs.update({"params": cfg.section_json(kind), "method_params": json.dumps(params, sort_keys=True),
                       "not_applicable": json.dumps({"trained": skipped} if skipped else {}, sort_keys=True),
                       "dataset": ds.name, "kind": kind})
    return write_dataset(data, folder / "features.zarr", schema=FEATURES_SCHEMA)


def _score(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, rel: np.ndarray,
           methods: tuple[str, ...], stats: ColumnStats | None) -> dict[str, np.ndarray]:
    m, n, f = len(methods), x.shape[0], x.shape[1]
    curve = np.full((1, m, 2, n, f + 1), np.nan, dtype=np.float32)
    faith = np.full((1, m, n), np.nan, dtype=np.float32)
    for e in range(m):
        if np.isnan(rel[0, e]).all():
            continue
        r = torch.from_numpy(rel[0, e])
        for o, order in enumerate(("morf", "lerf")):
            curve[0, e, o] = aopc(model, x, target, r, order=order, reference=stats).curve.numpy()
        faith[0, e] = faithfulness(model, x, target, r, reference=stats).numpy()
    drop = curve[..., :1] - curve
    return {"aopc_curve": curve, "aopc": drop.mean(-1).mean(-1), "faithfulness": faith}


def _dataset(kind: str, ds: Dataset, x: torch.Tensor, label: torch.Tensor, target: torch.Tensor,
             score: torch.Tensor, rel: np.ndarray, branch: TabularConfig | TextConfig, stats: ColumnStats | None,
             extras: dict[str, np.ndarray], anchor: dict[str, np.ndarray], scores: dict[str, np.ndarray]
             ) -> xr.Dataset:
    feat = "feature" if kind == "tabular" else "token"
    n = x.shape[0]
    coords: dict[str, Any] = {
        "model": ["trained"], "explainer": list(branch.methods), "sample": ds.idx_test[:n].numpy(),
        "order": ["morf", "lerf"], "step": np.arange(x.shape[1] + 1),
        "label": ("sample", label.numpy()), "target": ("sample", target.numpy()),
        "prediction": (("model", "sample"), target.numpy()[None]),
        "score": (("model", "sample"), score.float().numpy()[None]),
    }
    if kind == "tabular":
        bins = stats.discretize(x)  # type: ignore[union-attr]
        names = stats.bin_names()  # type: ignore[union-attr]
        coords[feat] = list(ds.feature_names)
        coords["x"] = (("sample", feat), x.numpy())
        coords["bin"] = (("sample", feat), bins)
        coords["value"] = (("sample", feat), np.array([[names[j][b] for j, b in enumerate(row)] for row in bins],
                                                      dtype=object))
    else:
        coords[feat] = np.arange(x.shape[1])
        vocab = np.array(ds.vocab, dtype=object)
        words = vocab[x.clamp(max=len(vocab) - 1).numpy()]
        words[x.numpy() == 0] = ""
        coords["word"] = (("sample", feat), words)
    data = {
        "relevance": (("model", "explainer", "sample", feat), rel),
        "aopc_curve": (("model", "explainer", "order", "sample", "step"), scores["aopc_curve"]),
        "aopc": (("model", "explainer", "order"), scores["aopc"]),
        "faithfulness": (("model", "explainer", "sample"), scores["faithfulness"]),
        **{k: (("model", "explainer", "sample"), v) for k, v in extras.items()},
    }
    if anchor:
        for name in ANCHOR_EXTRAS:
            values = anchor[name]
            data[f"anchor_{name}"] = (("model", "sample"), (values.astype(object) if name == "rule"
                                                            else values.astype(np.float64))[None])
    return xr.Dataset(data, coords=coords)


def open_features(path: str | Path) -> xr.Dataset:
    """A branch's ``features.zarr``, refused when foreign or incomplete."""
    return open_archive(path, schema=FEATURES_SCHEMA)
