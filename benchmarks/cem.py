"""CEM benchmark: one FISTA iteration of ``cem.pp``/``cem.pn`` against one forward and backward pass of the model
plus the autoencoder on the same batch, and the time per explained digit at the default search.

An iteration is a forward and backward of model and autoencoder at the momentum point (the gradient), and a
forward of both without gradient at the new iterate (its class condition and its objective, for the best-iterate
rule). The floor ``fwd+bwd`` is the gradient of model(v).sum() + ‖AE(v) − v‖² with respect to v on the same
batch. The zoo CNN trained for 2 epochs on the embedded digits and the autoencoder of 8 epochs; one torch thread
(``--threads``); medians of ``--repeats``; the load average is printed with the figures.

    .venv/bin/python benchmarks/cem.py [--batch 32] [--steps 100] [--repeats 3] [--threads 1]

alibi's CEM (TF1 graph code; numpy<2, TensorFlow<2.15) cannot be installed beside this environment and no
TensorFlow wheel is available offline here; the figures measured for it in a separate environment (DEVELOPERS'
issue: 2.9–6.4 ms per iteration, 5.9–12.8 s per digit for 2,000 iterations) are printed for comparison.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from xaicore.data import load_digits28  # noqa: E402
from xaicore.explain.optimisation import cem, fit_autoencoder  # noqa: E402
from xaicore.models import train_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()[0]:.2f}; torch {torch.__version__}, {args.threads} thread(s)")
    ds = load_digits28()
    model = train_model("cnn", ds.x_train, ds.y_train, n_classes=10, epochs=2, batch_size=32, lr=3e-3, seed=0,
                        progress=False).model.eval()
    state = fit_autoencoder(ds.x_train, epochs=8, seed=0)
    x, target = ds.x_test[:args.batch], ds.y_test[:args.batch]
    ae = state.module

    def floor() -> None:
        v = x.clone().requires_grad_(True)
        loss = model(v).sum() + (ae(v) - v).pow(2).sum()
        torch.autograd.grad(loss, v)

    def timed(fn, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n

    rows: dict[str, list[float]] = {"fwd+bwd": [], "cem.pn": [], "cem.pp": []}
    floor()
    for _ in range(args.repeats):
        rows["fwd+bwd"].append(timed(floor, args.steps))
        for mode in ("pn", "pp"):
            start = time.perf_counter()
            cem(model, x, target, mode=mode, c_init=10.0, c_steps=1, n_steps=args.steps, reference=state)
            rows[f"cem.{mode}"].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(rows["fwd+bwd"])
    print(f"batch {args.batch}, {args.steps} iterations, medians of {args.repeats}")
    print(f"{'':10s} {'ms/iteration':>13s} {'/ fwd+bwd':>10s} {'ms per digit-iteration':>23s}")
    for name, ts in rows.items():
        t = statistics.median(ts)
        print(f"{name:10s} {1e3 * t:13.2f} {t / base:10.2f} {1e3 * t / args.batch:23.3f}")
    per_digit = {}
    for mode in ("pn", "pp"):
        start = time.perf_counter()
        res = cem(model, x, target, mode=mode, reference=state)  # the default search: 5 values of c x 300 steps
        per_digit[mode] = (time.perf_counter() - start) / args.batch
        print(f"cem.{mode} default search (c_steps 5 x n_steps 300): {per_digit[mode]:.3f} s per digit, "
              f"found {int(res.found.sum())}/{args.batch}, median l0 {float(res.l0.float().median()):.0f}")
    print("alibi CEM (measured in a separate environment, see the docstring): 2.9-6.4 ms per iteration, "
          "5.9-12.8 s per digit for 2,000 iterations")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
