"""The library's defaults in a plain Python process (issue 29, point 11): occlusion, LIME and AOPC, each timed in a
fresh interpreter that imports xaicore and calls it with its defaults, nothing else set, as a notebook would.

Each measurement is its own child process (``--child CASE``): it builds the small zoo CNN (seeded, untrained) on
32 embedded test digits, runs the case once to warm up and prints the time of a second run. ``bare`` is the same
number of forward passes as the method makes, in passes of the default ``forward_batch`` inputs, built beforehand,
with glibc keeping freed memory (the floor, against which the ratios are taken); ``plain`` is the same passes in a
process without that setting (what a user's own loop of passes costs). ``before`` is the method with the engine's
allocator setting switched off (the behaviour before it moved into the engine). Children
alternate and the table shows medians; one torch thread; the load average is printed with the figures.

    .venv/bin/python benchmarks/plain_process.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("occlusion", "lime", "aopc")


def child(case: str) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    import xaicore
    from xaicore.data import load_digits28
    from xaicore.engine import FORWARD_BATCH
    from xaicore.features import Windows
    from xaicore.metrics import aopc
    from xaicore.models import build_model

    if case.endswith(" before"):
        import xaicore.engine.passes as passes

        passes.keep_freed_memory = lambda: False
        case = case.removesuffix(" before")
    data = load_digits28()
    torch.manual_seed(0)
    model = build_model("cnn", (1, 28, 28), 10).eval()
    x, t = data.x_test[:32].contiguous(), data.y_test[:32].contiguous()
    rel = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    copies = {"occlusion": Windows(x, 4, 2).n_features, "lime": 1000, "aopc": (28 // 4) ** 2 + 1}
    if case.startswith(("bare", "plain")):
        if case.startswith("bare"):
            from xaicore._malloc import keep_freed_memory

            keep_freed_memory()
        from perturbation import bare  # benchmarks/perturbation.py's bare passes (this script's folder)

        run = bare(model, x, copies[case.split()[1]], FORWARD_BATCH)
    elif case == "occlusion":
        def run() -> object:
            return xaicore.explain(model, x, t, "occlusion", window=4, stride=2)
    elif case == "lime":
        def run() -> object:
            return xaicore.explain(model, x, t, "lime")
    elif case == "aopc":
        def run() -> object:
            return aopc(model, x, t, rel)
    else:
        raise SystemExit(f"unknown case {case!r}")
    run()
    start = time.perf_counter()
    run()
    print(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}

    def measure(case: str) -> float:
        out = subprocess.run([sys.executable, __file__, "--child", case], env=env, check=True, capture_output=True,
                             text=True).stdout
        return float(out.strip().splitlines()[-1])

    print(f"# plain-process defaults: cnn 1x28x28, batch 32, 1 torch thread, median of {args.repeats} fresh "
          f"processes each; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"before {os.getloadavg()[0]:.2f}")
    print(f"{'method':<12}{'bare s':>9}{'now s':>9}{'/bare':>7}{'before s':>10}{'/bare':>7}{'plain s':>9}{'/bare':>7}")
    for case in CASES:
        rows = [(measure(f"bare {case}"), measure(case), measure(f"{case} before"), measure(f"plain {case}"))
                for _ in range(args.repeats)]
        b, n, o, p = (statistics.median(c) for c in zip(*rows, strict=True))
        print(f"{case:<12}{b:>9.3f}{n:>9.3f}{n / b:>7.2f}{o:>10.3f}{o / b:>7.2f}{p:>9.3f}{p / b:>7.2f}", flush=True)
    print(f"# load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
