"""The read cost of the archives' per-chunk crc32c checksum (issue 29, point 7).

Writes the same relevance array twice, as the heatmap archive does (float32 (model, explainer, sample, 1, 28, 28),
chunks of (1, 1, 64, 1, 28, 28), zstd level 0), once with Zarr 3's ``crc32c`` codec after zstd and once without,
then times reading the whole array with plain ``xr.open_zarr(...).values``, alternating, one thread; prints the
medians and the ratio. With ``--archive PATH`` it reads that archive's ``relevance`` instead (a copy without the
checksum is written beside it in a temporary folder).

    .venv/bin/python benchmarks/checksum.py [--repeats 15] [--archive outputs/heatmaps.zarr]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from zarr.codecs import ZstdCodec  # noqa: E402

from xaicore.store.archive import checked_codecs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--archive")
    args = parser.parse_args()
    import dask

    dask.config.set(scheduler="synchronous")  # one thread: the decode cost, not the thread pool's
    if args.archive:
        loaded = xr.open_zarr(args.archive)["relevance"]
        rel = xr.DataArray(loaded.values, dims=loaded.dims)  # the values alone, no coordinates or encodings
    else:
        rng = np.random.default_rng(0)
        rel = xr.DataArray(rng.standard_normal((4, 30, 256, 1, 28, 28), dtype=np.float32),
                           dims=("model", "explainer", "sample", "channel", "y", "x"))
    chunks = (1, 1, 64, *rel.shape[3:])
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, codecs in {"zstd": {"compressors": (ZstdCodec(level=0),)}, "zstd+crc32c": checked_codecs()}.items():
            paths[name] = Path(tmp) / f"{name}.zarr"
            xr.Dataset({"relevance": rel.chunk(dict(zip(rel.dims, chunks, strict=True)))}).to_zarr(
                paths[name], mode="w", zarr_format=3, consolidated=False,
                encoding={"relevance": {**codecs, "chunks": chunks}})
        times: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(args.repeats):
            for name, p in paths.items():
                start = time.perf_counter()
                xr.open_zarr(p, consolidated=False)["relevance"].load()
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    mib = rel.nbytes / 2**20
    print(f"# read {mib:.0f} MiB of relevance ({'archive ' + args.archive if args.archive else 'random normal'}), "
          f"chunks {chunks}, median of {args.repeats}, load average {os.getloadavg()[0]:.2f}")
    for k, v in med.items():
        print(f"{k:<14}{v:8.3f} s")
    print(f"checksum read cost: {med['zstd+crc32c'] / med['zstd']:.3f}x")


if __name__ == "__main__":
    main()
