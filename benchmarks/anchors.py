"""Anchors benchmark: xaicore's ``anchors`` against Ribeiro's ``anchor-exp`` (0.0.2.0) at τ = 0.95, δ = 0.1,
ε = 0.15 (anchor-exp's ``tau``), greedy search.

* Titanic: the ``mlp`` of ``xaicore.models.embedding`` trained on the generated Titanic set (10 epochs, seed 0),
  ``AnchorTabularExplainer`` with the four nominal columns as categorical, ``batch_size=100`` (its default).
* Sentiment: the ``bag`` model trained on the generated sentiment corpus, ``AnchorText`` with spaCy's blank
  English tokenizer (offline) and the UNK distribution, ``batch_size=10`` (its default), the same for ours.

Per anchor: wall time and model calls (rows handed to the model; anchor-exp: to its ``predict_fn``), and the share
of instances whose rule is the same set of predicates. anchor-exp runs one instance at a time, seeded with
``np.random.seed(i)``; ours runs the batch (its usual call) and, for the time, also one instance per call. Times
are medians over ``--repeats`` rounds that run the three back to back. ``--threads`` torch threads (default 1);
the load average is printed with the figures.

    .venv/bin/python benchmarks/anchors.py [--n 60] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's xaicore, whatever the environment has installed

import numpy as np  # noqa: E402
import torch  # noqa: E402

import xaicore  # noqa: E402
from xaicore.data.tabular import titanic  # noqa: E402
from xaicore.data.text import encode, sentences, sentiment, tokenize  # noqa: E402
from xaicore.features import ColumnStats  # noqa: E402
from xaicore.models.embedding import train_embedding_model  # noqa: E402

TAU, DELTA, EPS = 0.95, 0.1, 0.15


def rule_set(rule: str) -> frozenset[str]:
    return frozenset(filter(None, rule.split(" AND ")))


def counted(fn: Callable[[Any], np.ndarray]) -> tuple[Callable[[Any], np.ndarray], list[int]]:
    """``fn`` counting the rows it is handed."""
    calls = [0]

    def wrapped(z: Any) -> np.ndarray:
        calls[0] += len(z)
        return fn(z)
    return wrapped, calls


@dataclasses.dataclass
class Timing:
    ours_batch_s: float  # per anchor: the batch explained in one call
    ours_single_s: float  # per anchor: one instance per call
    ref_s: float  # per anchor: anchor-exp, one instance at a time
    ours_calls: int
    ref_calls: int
    same: float  # share of instances with the same set of predicates
    found: float


def compare(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, params: dict[str, Any],
            reference: Callable[[int, Callable[[Any], np.ndarray]], frozenset[str]],
            classify: Callable[[Any], np.ndarray], repeats: int) -> Timing:
    """Medians over ``repeats`` rounds, each timing our batch call, our one-instance calls and anchor-exp's loop
    back to back (the machine is shared: its load moves)."""
    n = x.shape[0]
    xaicore.explanation(model, x[:2], target[:2], method="anchors", **params)  # numba's cache, first imports
    batch, single, ref = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        e = xaicore.explanation(model, x, target, method="anchors", **params)
        batch.append((time.perf_counter() - start) / n)
        start = time.perf_counter()
        for i in range(n):
            xaicore.explanation(model, x[i:i + 1], target[i:i + 1], method="anchors", **params)
        single.append((time.perf_counter() - start) / n)
        predict, calls = counted(classify)
        start = time.perf_counter()
        rules = [reference(i, predict) for i in range(n)]
        ref.append((time.perf_counter() - start) / n)
    same = float(np.mean([rule_set(r) == q for r, q in zip(e.extras["rule"], rules, strict=True)]))
    return Timing(statistics.median(batch), statistics.median(single), statistics.median(ref),
                  int(e.extras["model_calls"].sum()), calls[0], same, float(e.extras["found"].float().mean()))


def report(name: str, t: Timing, n: int) -> None:
    print(f"\n{name}: {n} instances, same rule {t.same:.0%}, ours found {t.found:.0%}")
    print("| | s / anchor | model calls / anchor | anchor-exp / ours (time) | anchor-exp / ours (calls) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| anchor-exp | {t.ref_s:.4f} | {t.ref_calls / n:.0f} | 1 | 1 |")
    for label, s in (("ours, the batch in one call", t.ours_batch_s), ("ours, one instance per call", t.ours_single_s)):
        print(f"| {label} | {s:.4f} | {t.ours_calls / n:.1f} | **{t.ref_s / s:.1f}×** | "
              f"**{t.ref_calls / t.ours_calls:.1f}×** |")


def bench_titanic(n: int, repeats: int) -> None:
    from anchor.anchor_tabular import AnchorTabularExplainer

    ds = titanic()
    model, acc_train, acc_test = train_embedding_model("mlp", ds, epochs=10, seed=0)
    print(f"titanic mlp: train accuracy {acc_train:.3f}, test {acc_test:.3f}")
    stats = ColumnStats.fit(ds.x_train, nominal=range(4), names=ds.feature_names, categories=ds.categories)
    x = ds.x_test[:n]
    with torch.no_grad():
        target = model(x).argmax(1)
    explainer = AnchorTabularExplainer(list(ds.class_names), list(ds.feature_names), ds.x_train.double().numpy(),
                                       {j: list(c) for j, c in enumerate(ds.categories)})

    def classify(z: Any) -> np.ndarray:
        with torch.no_grad():
            return model(torch.as_tensor(np.asarray(z), dtype=torch.float32)).argmax(1).numpy()

    def reference(i: int, predict: Callable[[Any], np.ndarray]) -> frozenset[str]:
        np.random.seed(i)
        return frozenset(explainer.explain_instance(x[i].double().numpy(), predict, threshold=TAU, delta=DELTA,
                                                    tau=EPS, batch_size=100).names())

    params = dict(reference=stats, threshold=TAU, delta=DELTA, epsilon=EPS, batch_size=100)
    report("Titanic (mlp)", compare(model, x, target, params, reference, classify, repeats), n)


def bench_text(n: int, repeats: int) -> None:
    try:
        import spacy
        from anchor.anchor_text import AnchorText
        nlp = spacy.blank("en")
    except Exception as e:  # noqa: BLE001 - report why the text case is skipped
        print(f"\nsentiment: skipped, anchor-exp's AnchorText cannot run here ({type(e).__name__}: {e})")
        return
    ds = sentiment(2000, seed=0)
    model, acc_train, acc_test = train_embedding_model("bag", ds, epochs=10, seed=0)
    print(f"\nsentiment bag: train accuracy {acc_train:.3f}, test {acc_test:.3f}")
    x = ds.x_test[:n]
    with torch.no_grad():
        target = model(x).argmax(1)
    explainer = AnchorText(nlp, list(ds.class_names), use_unk_distribution=True)
    texts = sentences(ds, x)

    def classify(texts: Any) -> np.ndarray:
        ids = torch.from_numpy(encode([tokenize(s) for s in texts], ds.vocab, x.shape[1]))
        with torch.no_grad():
            return model(ids).argmax(1).numpy()

    def reference(i: int, predict: Callable[[Any], np.ndarray]) -> frozenset[str]:
        np.random.seed(i)
        return frozenset(explainer.explain_instance(texts[i], predict, threshold=TAU, delta=DELTA, tau=EPS,
                                                    batch_size=10).names())

    params = dict(vocab=ds.vocab, threshold=TAU, delta=DELTA, epsilon=EPS, batch_size=10)
    report("Sentiment (bag)", compare(model, x, target, params, reference, classify, repeats), n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(f"load average before: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; torch threads {args.threads}")
    bench_titanic(args.n, args.repeats)
    bench_text(args.n, args.repeats)
    print(f"\nload average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
