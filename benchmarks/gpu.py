"""GPU check and timings of the torch kernels: AOPC (backend torch on CUDA) and IG against bare passes.

Runs where only torch, numpy, scipy, scikit-learn and numba are installed (the device machine):

    PYTHONPATH=. python benchmarks/gpu.py

Prints: agreement of the CUDA torch kernels with the CPU numba kernels on the same inputs, then for the two
AOPC cases of benchmarks/aopc.py the time of ``aopc`` against the bare L+1 forward passes on the GPU, and
integrated gradients (n steps) against n forward+backward passes.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import xaicore  # noqa: E402
from xaicore.data import load_digits28  # noqa: E402
from xaicore.metrics import aopc  # noqa: E402
from xaicore.models import build_model  # noqa: E402

REGION = 4


def sync_time(fn: Callable[[], object], repeats: int = 7) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cases(device: str) -> list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    cnn = build_model("cnn", (1, 28, 28), 10).eval()
    d = load_digits28()
    cheap = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 10)).eval()
    xb = torch.rand(128, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = [("(a) cnn, 256 digits", cnn, d.x_test[:256], d.y_test[:256]),
           ("(b) conv+linear, 128x3x64x64", cheap, xb, torch.zeros(128, dtype=torch.long))]
    return [(n, m.to(device), x.to(device), t.to(device)) for n, m, x, t in out]


def main() -> None:
    assert torch.cuda.is_available(), "needs a CUDA device"
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    rows = []
    for name, model, x, t in cases("cuda"):
        rel = xaicore.explain(model, x, t, method="gradient")
        n = (x.shape[2] // REGION) * (x.shape[3] // REGION)
        gpu = aopc(model, x, t, rel, order="morf", region=REGION, backend="torch")
        cpu = aopc(model.cpu(), x.cpu(), t.cpu(), rel.cpu(), order="morf", region=REGION, backend="numba")
        model.cuda()
        err = float((gpu.curve.cpu() - cpu.curve).abs().max() / cpu.curve.abs().max())
        print(f"{name}: CUDA torch vs CPU numba curves, max rel. diff {err:.2e}")

        def bare(model=model, x=x, n=n) -> None:
            with torch.no_grad():
                for _ in range(n + 1):
                    model(x)

        def ours(model=model, x=x, t=t, rel=rel) -> None:
            aopc(model, x, t, rel, order="morf", region=REGION, backend="torch")

        def ours_big(model=model, x=x, t=t, rel=rel) -> None:
            aopc(model, x, t, rel, order="morf", region=REGION, backend="torch", forward_batch=8192)

        def fwd_bwd(model=model, x=x, t=t) -> None:
            xi = x.detach().requires_grad_(True)
            torch.autograd.grad(model(xi).gather(1, t[:, None]).sum(), xi)

        def ig(model=model, x=x, t=t) -> None:
            xaicore.explain(model, x, t, method="integrated_gradients", n_steps=32)

        tb, to, tob = sync_time(bare), sync_time(ours), sync_time(ours_big)
        tf, ti = sync_time(fwd_bwd), sync_time(ig)
        rows.append((name, tb, to, tob, tf, ti))
    print("\n| case | bare L+1 passes s | aopc s (x bare) | aopc forward_batch=8192 s (x bare) "
          "| IG n=32 / (32 fwd+bwd) |")
    print("|---|---:|---:|---:|---:|")
    for name, tb, to, tob, tf, ti in rows:
        print(f"| {name} | {tb:.4f} | {to:.4f} ({to / tb:.2f}x) | {tob:.4f} ({tob / tb:.2f}x) | {ti / (32 * tf):.2f} |")


if __name__ == "__main__":
    main()
