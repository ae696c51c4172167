"""TCAV benchmark: :func:`xaicore.analysis.tcav.tcav` against Captum's ``captum.concept.TCAV`` on the same task.

The task: the zoo CNN trained on the planted digits (12 epochs, seed 0, trained once per run), class-0 test
digits as the inputs (target 0), the concepts ``watermark`` and ``stripes`` of
:func:`xaicore.data.planted.concept_sets` (50 examples each) against 10 random sets of 50, at ``--layers``
(``conv2`` by default). Timed, medians of ``--repeats``:

* ``Captum``: its whole workflow as a user runs it for the numbers we compute, a fresh ``TCAV(model, layers,
  save_path=tmpdir)`` (its default classifier, SGD with alpha 0.01) and ``interpret(x, sets, target=0)`` over
  the 20 sets [concept, random_i] plus the 9 random-vs-random sets [random_0, random_i], i = 1..9, of its
  tutorial's significance test; global ``random``/``np.random``/``torch`` seeded before each run, the
  on-disk activation and CAV cache fresh for each;
* ``ours``: ``tcav(model, x, 0, {watermark, stripes}, randoms, layer=layers)`` with the same classifier;
* ``floor``: what any TCAV must do with the model, one forward pass of all concept and random examples to the
  layers (no gradient) and one forward and backward of the class inputs to the layers.

The model's forward calls are counted with a forward hook on the model, the CAV classifiers fitted by counting
Captum's ``classifier.train_and_eval`` and our CAV fits (``_LayerActivations.cav``, in the span of the examples
after one Gram matrix per layer), timed separately, to show where the time goes. The mean concept and
random-vs-random scores of both are printed as a check that the two compute the same thing (their CAVs differ by
the classifiers' random splits). ``--threads`` torch and BLAS
threads (threadpoolctl); the load average is printed with the figures.

    .venv/bin/python benchmarks/tcav.py [--layers conv2] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import importlib  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from xaicore.data.planted import concept_sets, planted_digits  # noqa: E402
from xaicore.models import train_model  # noqa: E402

CONCEPTS = ("watermark", "stripes")
# the module itself: ``xaicore.analysis.tcav`` as an attribute is the function the package re-exports
tcav_module = importlib.import_module("xaicore.analysis.tcav")


class Counter:
    """Counts the model's forward calls (a forward hook on the model itself)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.calls += 1


def run_captum(model, layers, x, concepts, randoms):
    """Captum's workflow; returns (seconds, forward calls, CAVs fitted, seconds in the CAV fits, scores)."""
    from captum.concept import TCAV, Concept

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    counter = Counter(model)
    fits = {"n": 0, "t": 0.0}
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            c_objs = [Concept(i, name, [v]) for i, (name, v) in enumerate(concepts.items())]
            r_objs = [Concept(len(concepts) + r, f"random{r}", [v]) for r, v in enumerate(randoms)]
            captum = TCAV(model, list(layers), save_path=tmp)
            train = captum.classifier.train_and_eval

            def timed_train(*a, **kw):
                t0 = time.perf_counter()
                out = train(*a, **kw)
                fits["t"] += time.perf_counter() - t0
                fits["n"] += 1
                return out

            captum.classifier.train_and_eval = timed_train
            sets = [[c, r] for c in c_objs for r in r_objs] + [[r_objs[0], r] for r in r_objs[1:]]
            out = captum.interpret(x, sets, target=0)
            seconds = time.perf_counter() - start
    finally:
        counter.handle.remove()
    scores = np.array([[[float(out[f"{c.id}-{r.id}"][layer]["sign_count"][0]) for r in r_objs] for layer in layers]
                       for c in c_objs])
    random_scores = np.array([[float(out[f"{r_objs[0].id}-{r.id}"][layer]["sign_count"][0]) for r in r_objs[1:]]
                              for layer in layers])
    return seconds, counter.calls, fits["n"], fits["t"], (scores, random_scores)


def run_ours(model, layers, x, concepts, randoms):
    """Our call; returns (seconds, forward calls, CAVs fitted, seconds in the CAV fits, result)."""
    fits = {"n": 0, "t": 0.0}
    fit = tcav_module._LayerActivations.cav

    def timed_fit(*a, **kw):
        t0 = time.perf_counter()
        out = fit(*a, **kw)
        fits["t"] += time.perf_counter() - t0
        fits["n"] += 1
        return out

    counter = Counter(model)
    tcav_module._LayerActivations.cav = timed_fit
    try:
        start = time.perf_counter()
        res = tcav_module.tcav(model, x, 0, concepts, randoms, layer=list(layers), classifier="sgd")
        seconds = time.perf_counter() - start
    finally:
        tcav_module._LayerActivations.cav = fit
        counter.handle.remove()
    return seconds, counter.calls, fits["n"], fits["t"], res


def run_floor(model, layers, x, examples):
    """One forward of all concept and random examples to the layers, one forward and backward of the class
    inputs to the layers; returns (seconds, forward calls)."""
    modules = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    handles = [modules[name].register_forward_hook(lambda m, i, o, name=name: out.__setitem__(name, o))
               for name in layers]
    counter = Counter(model)
    try:
        start = time.perf_counter()
        with torch.no_grad():
            model(examples)
            _ = [out[name].flatten(1) for name in layers]
        xb = x.clone().requires_grad_(True)
        logits = model(xb)
        torch.autograd.grad(logits[:, 0].sum(), [out[name] for name in layers])
        seconds = time.perf_counter() - start
    finally:
        for h in handles:
            h.remove()
        counter.handle.remove()
    return seconds, counter.calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", nargs="+", default=["conv2"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    import captum

    print(f"load average before: {os.getloadavg()[0]:.2f}; torch {torch.__version__}, captum {captum.__version__}, "
          f"{args.threads} thread(s)")
    planted = planted_digits()
    ds = planted.dataset
    start = time.perf_counter()
    model = train_model("cnn", ds.x_train, ds.y_train, n_classes=10, epochs=12, batch_size=32, lr=0.002, seed=0,
                        progress=False).model.eval()
    print(f"CNN trained in {time.perf_counter() - start:.1f} s")
    sets, randoms = concept_sets(planted, n_examples=50, n_random=10)
    concepts = {name: sets[name] for name in CONCEPTS}
    x = ds.x_test[ds.y_test == 0]
    examples = torch.cat([*concepts.values(), *randoms])
    layers = tuple(args.layers)
    print(f"{len(x)} class-0 inputs, {len(concepts)} concepts and {len(randoms)} random sets of "
          f"{len(randoms[0])} examples, layers {', '.join(layers)}")

    run_floor(model, layers, x, examples)  # warm-up
    rows: dict[str, list[tuple]] = {"Captum": [], "ours": [], "floor": []}
    captum_scores = ours_res = None
    for _ in range(args.repeats):
        *row, captum_scores = run_captum(model, layers, x, concepts, randoms)
        rows["Captum"].append(tuple(row))
        *row, ours_res = run_ours(model, layers, x, concepts, randoms)
        rows["ours"].append(tuple(row))
        rows["floor"].append(run_floor(model, layers, x, examples) + (0, 0.0))

    def med(name: str, k: int) -> float:
        return statistics.median(r[k] for r in rows[name])

    ours_t = med("ours", 0)
    print(f"\nmedians of {args.repeats}")
    print(f"{'':8s} {'seconds':>9s} {'/ ours':>8s} {'forward calls':>14s} {'CAVs fitted':>12s} {'s in CAV fits':>14s} "
          f"{'s outside fits':>15s}")
    for name in rows:
        t, calls, n_cavs, fit_t = med(name, 0), med(name, 1), med(name, 2), med(name, 3)
        cav_cols = (f"{n_cavs:12.0f} {fit_t:14.3f} {t - fit_t:15.3f}" if name != "floor"
                    else f"{'-':>12s} {'-':>14s} {'-':>15s}")
        print(f"{name:8s} {t:9.3f} {t / ours_t:8.2f} {calls:14.0f} {cav_cols}")
    print(f"Captum / ours: {med('Captum', 0) / ours_t:.2f}x (goal >= 3x); ours / floor: "
          f"{ours_t / med('floor', 0):.2f}x; our res.forward_passes = {ours_res.forward_passes}")

    c_scores, c_random = captum_scores
    print("\nmean TCAV score (random-vs-random mean) and p (our t-test on Captum's scores), Captum | ours:")
    for j, layer in enumerate(layers):
        for i, name in enumerate(concepts):
            p_c = tcav_module.significance(c_scores[i, j], c_random[j])
            print(f"  {layer:6s} {name:10s} {c_scores[i, j].mean():.3f} ({c_random[j].mean():.3f}) p={p_c:.2g} | "
                  f"{ours_res.score[i, j]:.3f} ({ours_res.random_scores[j].mean():.3f}) "
                  f"p={ours_res.pvalue[i, j]:.2g}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
