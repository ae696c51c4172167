"""Dask speed-up of the scoring stage: the same scoring job on 1 and on 2 local process workers.

Needs a finished survey (``make survey``) for its heatmap archive; copies nothing, writes scores to a temporary
folder. AOPC (uniform, MoRF and LeRF) of every explainer of the trained model, one Dask task per chunk.

    .venv/bin/python benchmarks/dask_scoring.py [--out outputs]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xaicore.config import load_config  # noqa: E402
from xaicore.pipeline import Paths, score_heatmaps  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs", help="a finished survey's output folder")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    cfg = load_config(args.params)
    src = Paths(Path(args.out))
    with tempfile.TemporaryDirectory() as tmp:
        dst = Paths(Path(tmp) / "outputs")
        dst.root.mkdir()
        for name in ("data", "models", "controls", "heatmaps.zarr"):
            (dst.root / name).symlink_to((src.root / name).resolve())
        times = {}
        for workers in (1, 2):
            score = dataclasses.replace(cfg.score, workers=workers, perturbations=("uniform",), faithfulness=False)
            run_cfg = dataclasses.replace(cfg, score=score,
                                          invariance=dataclasses.replace(cfg.invariance, enabled=False))
            t0 = time.perf_counter()
            score_heatmaps(run_cfg, dst, progress=False)
            times[workers] = time.perf_counter() - t0
            shutil.rmtree(dst.scores)
    print(f"scoring job (AOPC uniform, MoRF + LeRF, {cfg.data.n_explain} samples x every explainer, "
          f"trained model): 1 worker {times[1]:.1f} s, 2 workers {times[2]:.1f} s, "
          f"speed-up {times[1] / times[2]:.2f}x (cluster start included)")


if __name__ == "__main__":
    main()
