"""Dask speed-up of the explain stage: the perturbation methods of the default survey on 1 and 2 workers.

Needs a finished survey (``make survey``) for its data, models, controls and fitted states; writes heatmaps to a
temporary folder. The methods are those of ``explain.methods`` whose family is ``perturbation`` (occlusion, LIME,
PDA), with their ``explain.method_params``, for every survey model: one Dask task per (model, method, chunk), one
torch thread per worker. Prints the wall times, their ratio and whether both archives are bitwise equal.

    .venv/bin/python benchmarks/dask_explain.py [--out outputs]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from xaicore.config import load_config  # noqa: E402
from xaicore.explain import get_explainer  # noqa: E402
from xaicore.pipeline import Paths, generate_heatmaps  # noqa: E402
from xaicore.store import open_archive  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs", help="a finished survey's output folder")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    cfg = load_config(args.params)
    src = Paths(Path(args.out))
    methods = tuple(m for m in cfg.explain.methods if get_explainer(m).family == "perturbation")
    print(f"# explain stage on Dask: {', '.join(methods)}; {os.cpu_count()} cores, load average before "
          f"{os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        times, archives = {}, {}
        for workers in args.workers:
            dst = Paths(Path(tmp) / f"w{workers}")
            dst.root.mkdir()
            for name in ("data", "models", "controls", "fitted"):
                (dst.root / name).symlink_to((src.root / name).resolve())
            run_cfg = dataclasses.replace(cfg, explain=dataclasses.replace(cfg.explain, methods=methods,
                                                                           workers=workers))
            start = time.perf_counter()
            generate_heatmaps(run_cfg, dst, progress=False)
            times[workers] = time.perf_counter() - start
            archives[workers] = open_archive(dst.heatmaps)["relevance"].values
            print(f"{workers} worker(s): {times[workers]:.1f} s", flush=True)
        first = args.workers[0]
        for w in args.workers[1:]:
            print(f"{w} workers / {first}: {times[w] / times[first]:.2f}; heatmaps bitwise equal: "
                  f"{np.array_equal(archives[w], archives[first], equal_nan=True)}")
    print(f"# load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
