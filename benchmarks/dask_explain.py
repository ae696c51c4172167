"""Dask speed-up of the explain stage: the perturbation methods of the default survey on 1 and 2 workers.

Needs a finished survey (``make survey``) for its data, models, controls and fitted states; writes heatmaps to a
temporary folder. The methods are those of ``explain.methods`` whose family is ``perturbation`` (occlusion, LIME,
PDA), with their ``explain.method_params``, for every survey model: one Dask task per (model, method, chunk), one
torch thread per worker. Prints the wall times, their ratio and whether both archives are bitwise equal.

    .venv/bin/python benchmarks/dask_explain.py [--out outputs] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_one(args: argparse.Namespace) -> None:
    """One timed explain step in this (fresh) process, as the survey's stage runs it; prints its wall time."""
    # imported here, not at the top: the Dask workers re-import this script (multiprocessing's spawn does that to a
    # main module), and in the survey they import nothing but what their jobs need (python -m flows explain)
    from xaicore.config import load_config
    from xaicore.explain import get_explainer
    from xaicore.pipeline import Paths, generate_heatmaps

    cfg = load_config(args.params)
    methods = tuple(m for m in cfg.explain.methods if get_explainer(m).family == "perturbation")
    run_cfg = dataclasses.replace(cfg, explain=dataclasses.replace(cfg.explain, methods=methods,
                                                                   workers=args.run_one))
    start = time.perf_counter()
    generate_heatmaps(run_cfg, Paths(Path(args.dst)), progress=False)
    print(f"wall {time.perf_counter() - start:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs", help="a finished survey's output folder")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1, help="rounds, the order of the workers reversed each round")
    parser.add_argument("--run-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dst", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one is not None:
        run_one(args)
        return
    import numpy as np

    from xaicore.pipeline import Paths
    from xaicore.store import open_archive

    src = Paths(Path(args.out))
    print(f"# explain stage on Dask (perturbation methods of {args.params}); {os.cpu_count()} cores, load average "
          f"before {os.getloadavg()[0]:.2f}; each run a fresh process", flush=True)
    times: dict[int, list[float]] = {w: [] for w in args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        archives = {}
        for r in range(args.repeat):
            for workers in (args.workers if r % 2 == 0 else args.workers[::-1]):
                dst = Paths(Path(tmp) / f"w{workers}r{r}")
                dst.root.mkdir()
                for name in ("data", "models", "controls", "fitted"):
                    (dst.root / name).symlink_to((src.root / name).resolve())
                res = subprocess.run([sys.executable, __file__, "--params", args.params, "--run-one", str(workers),
                                      "--dst", str(dst.root)], capture_output=True, text=True, check=False)
                walls = [line for line in res.stdout.splitlines() if line.startswith("wall ")]
                if res.returncode != 0 or not walls:
                    sys.exit(f"the {workers}-worker run failed:\n{res.stderr[-3000:]}")
                times[workers].append(float(walls[-1].split()[1]))
                archives.setdefault(workers, open_archive(dst.heatmaps)["relevance"].values)
                print(f"round {r + 1}: {workers} worker(s) {times[workers][-1]:.1f} s", flush=True)
        first = args.workers[0]
        for w in args.workers[1:]:
            ratios = [b / a for a, b in zip(times[first], times[w], strict=True)]
            print(f"{w} workers / {first}: median {np.median(times[w]):.1f} s / {np.median(times[first]):.1f} s = "
                  f"{np.median(times[w]) / np.median(times[first]):.2f}; per round "
                  f"{', '.join(f'{x:.2f}' for x in ratios)}; heatmaps bitwise equal: "
                  f"{np.array_equal(archives[w], archives[first], equal_nan=True)}")
    print(f"# load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
