"""Network Dissection benchmark: ``dissect`` on the 32 feature maps (7×7) of a small two-layer conv model for
10,000 random 1×28×28 images against 20 generated concept masks (28×28), compared with (a) the forward passes
that compute the activations and (b) a plain numpy dissection of the same data (``np.quantile`` per unit on the
whole array, the bilinear upsampling written in numpy, boolean intersection sums per unit, areas).

Masks: each concept is present in 30 % of the images as a square of side 3-10 at a random place. The model is
conv(1→16, 3×3) ReLU max-pool 2, conv(16→32, 3×3) ReLU max-pool 2, seeded, batches of 256. One torch thread
(``--threads``); medians of ``--repeats``; the load average is printed with the figures, and the largest
difference between the two IoU tables.

    .venv/bin/python benchmarks/dissect.py [--n 10000] [--units 32] [--concepts 20] [--threads 1] [--repeats 3]
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from xaicore.analysis.dissect import dissect  # noqa: E402

SIZE, BATCH, Q = 28, 256, 0.995


def model(units: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, units, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)).eval()


def concept_masks(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    side = rng.integers(3, 11, size=(n, k, 1))
    y0, x0 = (rng.integers(0, SIZE - side + 1) for _ in range(2))
    present = rng.random((n, k, 1)) < 0.3
    grid = np.arange(SIZE)
    rows = (grid >= y0) & (grid < y0 + side) & present
    cols = (grid >= x0) & (grid < x0 + side)
    return rows[..., :, None] & cols[..., None, :]


def forward(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([net(x[i:i + BATCH]) for i in range(0, len(x), BATCH)]).numpy()


def plain_numpy(acts: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Dissection written directly in numpy: whole-array quantiles, then per batch of samples the upsampled maps,
    the unit masks, each unit's intersections with all concepts and the areas (union = |M| + |L| − |M ∩ L|)."""
    N, U, h, w = acts.shape
    thresholds = np.quantile(acts.transpose(1, 0, 2, 3).reshape(U, -1).astype(np.float64), Q, axis=1)

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, ...]:
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), 1 - (src - i0), src - i0

    y0, y1, wy0, wy1 = axis(h, SIZE)
    x0, x1, wx0, wx1 = axis(w, SIZE)
    inter = np.zeros((U, masks.shape[1]))
    on_area, lab_area = np.zeros(U), np.zeros(masks.shape[1])
    for s in range(0, N, BATCH):
        a = acts[s:s + BATCH].astype(np.float64)
        rows = a[..., y0, :] * wy0[:, None] + a[..., y1, :] * wy1[:, None]
        on = (rows[..., x0] * wx0 + rows[..., x1] * wx1) > thresholds[None, :, None, None]
        lab = masks[s:s + BATCH]
        for u in range(U):
            inter[u] += (on[:, u, None] & lab).sum((0, 2, 3))
        on_area += on.sum((0, 2, 3))
        lab_area += lab.sum((0, 2, 3))
    union = on_area[:, None] + lab_area[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--units", type=int, default=32)
    ap.add_argument("--concepts", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()[0]:.2f}; torch {torch.__version__}, numpy {np.__version__}, "
          f"{args.threads} thread(s)")
    rng = np.random.default_rng(0)
    net = model(args.units)
    x = torch.from_numpy(rng.random((args.n, 1, SIZE, SIZE), dtype=np.float32))
    masks = concept_masks(args.n, args.concepts, rng)
    acts = forward(net, x)
    print(f"activations {acts.shape} float32, concept masks {masks.shape} bool, quantile {Q}")

    times: dict[str, list[float]] = {"forward": [], "dissect": [], "plain numpy": []}
    for _ in range(args.repeats):
        for name, fn in (("forward", lambda: forward(net, x)), ("dissect", lambda: dissect(acts, masks)),
                         ("plain numpy", lambda: plain_numpy(acts, masks))):
            start = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - start)
            if name == "dissect":
                res = out
            elif name == "plain numpy":
                plain = out
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"medians of {args.repeats} (s): " + ", ".join(f"{name} {t:.2f}" for name, t in med.items()))
    print(f"dissect / forward: {med['dissect'] / med['forward']:.2f}; "
          f"dissect / (forward + plain numpy): {med['dissect'] / (med['forward'] + med['plain numpy']):.2f} "
          f"(goal <= 2); dissect / plain numpy: {med['dissect'] / med['plain numpy']:.2f}")
    print(f"max |IoU dissect - IoU plain numpy|: {np.abs(res.iou - plain).max():.2e}; detectors "
          f"{int(res.interpretable.sum())}/{args.units}, max IoU {res.iou.max():.4f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
