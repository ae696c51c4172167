"""LIME on tabular rows and on text: xaicore against the ``lime`` package's ``LimeTabularExplainer`` and
``LimeTextExplainer`` on the same trained models, per explanation, with the same number of samples.

Both score the same number of perturbed inputs per explanation (``--samples``); ``model calls`` counts them. The
``lime`` package explains one instance at a time (its ``predict_fn`` gets one instance's neighbourhood); xaicore
explains the whole batch at once, its draws packed into forward passes (``forward_batch``). ``bare`` times the
forward passes of as many inputs, in passes of the same size, built before the clock starts. One torch thread;
the load average is printed with the figures.

    .venv/bin/python benchmarks/lime_kinds.py [--n 20] [--samples 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import xaicore  # noqa: E402
from xaicore.data.tabular import titanic  # noqa: E402
from xaicore.data.text import sentiment  # noqa: E402
from xaicore.features import ColumnStats  # noqa: E402
from xaicore.models.embedding import train_embedding_model  # noqa: E402


class Counted:
    """A numpy predict_fn for the lime package that counts the rows it scores."""

    def __init__(self, model: torch.nn.Module, encode) -> None:
        self.model, self.encode, self.rows = model, encode, 0

    def __call__(self, a) -> np.ndarray:
        x = self.encode(a)
        self.rows += x.shape[0]
        with torch.no_grad():
            return torch.softmax(self.model(x), 1).double().numpy()


def bare(model: torch.nn.Module, x: torch.Tensor, n_inputs: int, batch: int) -> float:
    reps = x.repeat(-(-batch // x.shape[0]), 1)[:batch]
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(-(-n_inputs // batch)):
            model(reps)
    return time.perf_counter() - start


def tabular(n: int, samples: int) -> dict[str, float]:
    from lime.lime_tabular import LimeTabularExplainer

    ds = titanic()
    model, _, acc = train_embedding_model("mlp", ds, epochs=10, seed=0)
    stats = ColumnStats.fit(ds.x_train, nominal=ds.nominal, categories=ds.categories)
    x = ds.x_test[:n]
    with torch.no_grad():
        target = model(x).argmax(1)
    t0 = time.perf_counter()
    xaicore.explain(model, x, target, method="lime", reference=stats, n_samples=samples)
    ours = time.perf_counter() - t0
    explainer = LimeTabularExplainer(ds.x_train.double().numpy(), categorical_features=list(ds.nominal),
                                     discretize_continuous=True, random_state=0)
    fn = Counted(model, lambda a: torch.from_numpy(np.asarray(a)).float())
    t0 = time.perf_counter()
    for i in range(n):
        explainer.explain_instance(x[i].double().numpy(), fn, labels=(int(target[i]),), num_features=4,
                                   num_samples=samples)
    theirs = time.perf_counter() - t0
    return {"ours": ours / n, "lime": theirs / n, "bare": bare(model, x, n * samples, 1024) / n,
            "calls_ours": samples, "calls_lime": fn.rows / n, "accuracy": acc}


def text(n: int, samples: int) -> dict[str, float]:
    from lime.lime_text import LimeTextExplainer

    ds = sentiment()
    model, _, acc = train_embedding_model("bag", ds, epochs=8, seed=0)
    x = ds.x_test[:n]
    with torch.no_grad():
        target = model(x).argmax(1)
    index = {w: i for i, w in enumerate(ds.vocab)}
    t0 = time.perf_counter()
    xaicore.explain(model, x, target, method="lime", n_samples=samples)
    ours = time.perf_counter() - t0

    def encode(texts) -> torch.Tensor:
        ids = [[index.get(w, 1) for w in t.split()] for t in texts]
        out = torch.zeros(len(ids), x.shape[1], dtype=torch.long)
        for k, row in enumerate(ids):
            out[k, :len(row)] = torch.tensor(row[:x.shape[1]])
        return out

    explainer = LimeTextExplainer(bow=False, split_expression=r"\s+", mask_string="<unk>", random_state=0)
    fn = Counted(model, encode)
    t0 = time.perf_counter()
    for i in range(n):
        sentence = " ".join(ds.vocab[int(t)] for t in x[i] if int(t) != 0)
        explainer.explain_instance(sentence, fn, labels=(int(target[i]),), num_features=12, num_samples=samples)
    theirs = time.perf_counter() - t0
    return {"ours": ours / n, "lime": theirs / n, "bare": bare(model, x, n * samples, 1024) / n,
            "calls_ours": samples, "calls_lime": fn.rows / n, "accuracy": acc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="instances explained")
    ap.add_argument("--samples", type=int, default=1000, help="perturbed inputs per explanation")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    print(f"load average before: {os.getloadavg()[0]:.2f}; torch {torch.__version__}, 1 thread")
    for name, fn in (("tabular (titanic mlp)", tabular), ("text (sentiment bag)", text)):
        runs = [fn(args.n, args.samples) for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"{name}: test accuracy {med['accuracy']:.3f}; per explanation: xaicore {med['ours'] * 1e3:.2f} ms, "
              f"lime {med['lime'] * 1e3:.2f} ms ({med['lime'] / med['ours']:.1f}x slower), bare passes "
              f"{med['bare'] * 1e3:.2f} ms (xaicore / bare {med['ours'] / med['bare']:.1f}x); model calls per "
              f"explanation: xaicore {med['calls_ours']:.0f}, lime {med['calls_lime']:.0f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
