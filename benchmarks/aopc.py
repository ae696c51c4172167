"""AOPC benchmark: xaicore's ``aopc`` against the bare forward passes it needs and against Quantus.

AOPC (Samek et al. 2017; survey §4.5.1) needs L+1 forward passes of the batch: f(x) and one per disabled
region. Those passes are the floor; the rest (ranking, noise, in-place perturbation, packing) is overhead.

Two cases, on the same model, batch and gradient heatmaps for every contender:
  (a) the project's small CNN on 256 embedded digits, 4×4 regions: L = 49 (50 curve points);
  (b) a cheap model, Conv(3→8, 5, stride 4) → ReLU → Linear, on 128 random 3×64×64 images, 4×4 regions:
      L = 256 (the case of the AOPC regression issue: ≤ 1.3× the bare passes with one thread, ≥ 10× faster than
      Quantus with two).

Timed (median of a few repeats after a warm-up, contenders interleaved): xaicore ``aopc`` MoRF and LeRF,
the bare L+1 forward passes under ``torch.no_grad``, and ``quantus.RegionPerturbation`` (patch 4, MoRF,
uniform-noise replacement, no normalisation or abs). Quantus' curves are checked against ours.

    .venv/bin/python benchmarks/aopc.py [--quick] [--threads N] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's xaicore, whatever the environment has installed

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import xaicore  # noqa: E402
from xaicore.data import load_digits28  # noqa: E402
from xaicore.metrics import aopc, replacement_values  # noqa: E402
from xaicore.models import build_model, train_model  # noqa: E402

REGION = 4
SEED = 0


@dataclass
class Case:
    name: str
    model: nn.Module
    x: torch.Tensor
    target: torch.Tensor
    relevance: torch.Tensor

    @property
    def n_regions(self) -> int:
        h, w = self.x.shape[2:]
        return -(-h // REGION) * -(-w // REGION)


def case_cnn(quick: bool) -> Case:
    """(a) The project's small CNN on 256 embedded digits (trained two epochs; untrained with --quick)."""
    data = load_digits28()
    if quick:
        torch.manual_seed(SEED)
        model = build_model("cnn", (1, 28, 28), 10)
    else:
        model = train_model("cnn", data.x_train, data.y_train, n_classes=10, epochs=2, batch_size=64, lr=1e-3,
                            seed=SEED, progress=False).model
    model.eval()
    x, y = data.x_test[:256].contiguous(), data.y_test[:256].contiguous()
    return Case("(a) cnn, 256 digits 1x28x28", model, x, y, xaicore.explain(model, x, y, method="gradient"))


def case_cheap() -> Case:
    """(b) Conv(3→8, 5, stride 4) → ReLU → Linear on 128 random 3×64×64 images; the target is the predicted
    class."""
    torch.manual_seed(SEED)
    model = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 15 * 15, 10)).eval()
    x = torch.rand(128, 3, 64, 64, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        y = model(x).argmax(1)
    return Case("(b) conv+linear, 128 random 3x64x64", model, x, y, xaicore.explain(model, x, y, method="gradient"))


def bare_passes(case: Case) -> Callable[[], None]:
    """The floor: L+1 forward passes of the same batch, nothing else."""
    def run() -> None:
        with torch.no_grad():
            for _ in range(case.n_regions + 1):
                case.model(case.x)
    return run


def perturbed_inputs(case: Case) -> list[torch.Tensor]:
    """The L+1 inputs AOPC MoRF feeds the model (same noise and ranking as xaicore), built before timing."""
    from xaicore.kernels import get_backend, region_grid

    b, c, h, w = case.x.shape
    order = get_backend("torch").region_order(case.relevance, REGION)
    grid = region_grid(h, w, REGION)
    rep = replacement_values(case.x, "uniform", seed=SEED).reshape(b, c, -1)
    cur = case.x.clone().reshape(b, c, -1)
    out = [case.x.clone()]
    for k in range(order.shape[1]):
        pix = grid[order[:, k]]  # (B, P)
        idx = pix[:, None, :].expand(b, c, -1)
        cur.scatter_(2, idx, rep.gather(2, idx))
        out.append(cur.reshape(b, c, h, w).clone())
    return out


def bare_passes_perturbed(case: Case, inputs: list[torch.Tensor]) -> Callable[[], None]:
    """The floor AOPC actually needs: one forward pass of each perturbed batch, nothing else."""
    def run() -> None:
        with torch.no_grad():
            for xk in inputs:
                case.model(xk)
    return run


def quantus_metric(case: Case, perturb_func: Callable | None = None, perturb_func_kwargs: dict | None = None):
    """``quantus.RegionPerturbation`` with our settings (API of quantus 0.6, read from its source)."""
    import quantus

    return quantus.RegionPerturbation(
        patch_size=REGION, order="morf", regions_evaluation=case.n_regions, abs=False, normalise=False,
        perturb_baseline="uniform", perturb_func=perturb_func, perturb_func_kwargs=perturb_func_kwargs,
        disable_warnings=True, display_progressbar=False)


def run_quantus(case: Case, metric) -> np.ndarray:
    """Quantus' drops f(x) − f(x⁽ᵏ⁾), k = 1..L, as a (B, L) array; one Quantus batch holds the whole batch."""
    scores = metric(model=case.model, x_batch=case.x.numpy(), y_batch=case.target.numpy(),
                    a_batch=case.relevance.numpy(), channel_first=True, softmax=False, device="cpu",
                    batch_size=case.x.shape[0])
    return np.asarray(scores, dtype=np.float64)


def replace_from(arr: np.ndarray, indices: np.ndarray, replacement: np.ndarray, **_: object) -> np.ndarray:
    """A Quantus perturb_func that writes xaicore's per-pixel noise, to compare the two curve for curve."""
    out = arr.copy()
    rows = np.arange(arr.shape[0])[:, None]
    out[rows, indices] = replacement[rows, indices]
    return out


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each function: one warm-up call each, then the functions interleaved.

    CPU time is this process's; with one thread it is the work done, whatever else the machine runs."""
    for fn in fns.values():
        fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[k].append(time.perf_counter() - w0)
            cpu[k].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in fns}


class ForwardTimer(nn.Module):
    """Wraps a model and adds up the CPU time of its forward passes (to split AOPC into model and overhead)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seconds = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.process_time()
        out = self.model(x)
        self.seconds += time.process_time() - t0
        return out


def forward_share(case: Case, repeats: int) -> tuple[float, float]:
    """Median CPU seconds of xaicore MoRF and of the model forward passes inside it."""
    timer = ForwardTimer(case.model).eval()
    total, forward = [], []
    for _ in range(repeats):
        timer.seconds = 0.0
        c0 = time.process_time()
        aopc(timer, case.x, case.target, case.relevance, region=REGION, seed=SEED)
        total.append(time.process_time() - c0)
        forward.append(timer.seconds)
    return statistics.median(total), statistics.median(forward)


def compare(case: Case) -> list[str]:
    """Quantus' curves against ours: same length, shape and (with the same noise) the same values."""
    lines = []
    ours = aopc(case.model, case.x, case.target, case.relevance, region=REGION, seed=SEED)
    with torch.no_grad():
        fx = case.model(case.x).gather(1, case.target[:, None])[:, 0]
    lines.append(f"curve[:, 0] equals f(x): {torch.equal(ours.curve[:, 0], fx)}; "
                 f"curve has {ours.curve.shape[1]} points (L+1 = {case.n_regions + 1})")
    curve = ours.curve.double().numpy()

    def as_curve(drops: np.ndarray) -> np.ndarray:
        return np.concatenate([curve[:, :1], curve[:, :1] - drops], axis=1)

    # 1. Quantus' own "uniform": one U(0, 1) value per sample fills each patch (ours: per-pixel U(0, 1))
    np.random.seed(SEED)
    q = as_curve(run_quantus(case, quantus_metric(case)))
    mean_q, mean_x = q.mean(0), curve.mean(0)
    corr = np.corrcoef(mean_q, mean_x)[0, 1]
    aopc_q = (q[:, :1] - q).mean(1)
    lines.append(f"Quantus 'uniform' (one value per patch): {q.shape[1]} points (k = 0 prepended); mean curve "
                 f"f(x^0) {mean_x[0]:.3f} -> f(x^L) xaicore {mean_x[-1]:.3f}, Quantus {mean_q[-1]:.3f}; "
                 f"max |mean-curve difference| {np.abs(mean_q - mean_x).max():.3f}; shape correlation "
                 f"{corr:.4f}; mean AOPC xaicore {ours.aopc.mean().item():.4f}, Quantus {aopc_q.mean():.4f}")
    # 2. Quantus fed xaicore's noise: the same perturbed inputs, so the curves should agree to float rounding
    rep = replacement_values(case.x, "uniform", seed=SEED).reshape(case.x.shape[0], -1).numpy()
    q2 = as_curve(run_quantus(case, quantus_metric(case, replace_from, {"replacement": rep})))
    diff = np.abs(q2 - curve).max(1)
    lines.append(f"Quantus with xaicore's noise: max |curve difference| {diff.max():.2e}; samples within 1e-4: "
                 f"{(diff < 1e-4).sum()}/{len(diff)} (Quantus ranks float32 sums with an unstable argsort)")
    return lines


def set_threads(n: int) -> None:
    """torch and numba on ``n`` threads (numba at most its configured pool), warnings off for the timed runs."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(n)
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="untrained CNN, 2 repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch and numba threads (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per contender (default 5)")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    set_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU only; "
          f"threads (torch and numba): {torch.get_num_threads()}; torch {torch.__version__}; "
          f"repeats: {repeats} (median)")

    rows, notes = [], []
    for case in (case_cnn(args.quick), case_cheap()):
        x_before = case.x.clone()
        quantus = quantus_metric(case)
        # the same metric fed xaicore's per-pixel noise: Quantus on exactly xaicore's perturbed inputs
        rep = replacement_values(case.x, "uniform", seed=SEED).reshape(case.x.shape[0], -1).numpy()
        quantus_same = quantus_metric(case, replace_from, {"replacement": rep})

        def ours(order: str, case: Case = case) -> Callable[[], object]:
            return lambda: aopc(case.model, case.x, case.target, case.relevance, order=order, region=REGION,
                                seed=SEED)

        def quantus_run(case: Case = case, metric=quantus) -> None:
            np.random.seed(SEED)
            run_quantus(case, metric)

        inputs = perturbed_inputs(case)
        with torch.no_grad():
            check = torch.stack([case.model(xk).gather(1, case.target[:, None])[:, 0] for xk in inputs], 1)
        ref = aopc(case.model, case.x, case.target, case.relevance, region=REGION, seed=SEED).curve
        assert torch.allclose(check, ref, atol=1e-5), "the precomputed perturbed inputs are not AOPC's"
        t = timed({"bare": bare_passes(case), "bare_perturbed": bare_passes_perturbed(case, inputs),
                   "morf": ours("morf"), "lerf": ours("lerf"),
                   "quantus": quantus_run, "quantus_same": lambda case=case, m=quantus_same: run_quantus(case, m)},
                  repeats)
        assert torch.equal(case.x, x_before), "aopc wrote into its input"
        for key, label in (("bare", f"bare {case.n_regions + 1} forward passes"),
                           ("bare_perturbed", f"bare {case.n_regions + 1} passes of the perturbed inputs"),
                           ("morf", "xaicore aopc MoRF"),
                           ("lerf", "xaicore aopc LeRF"), ("quantus", "Quantus RegionPerturbation MoRF"),
                           ("quantus_same", "Quantus MoRF, fed xaicore's noise")):
            (wall, cpu), (bare_wall, bare_cpu), (q_wall, q_cpu) = t[key], t["bare"], t["quantus"]
            speedup = f"{q_wall / wall:.1f}x / {q_cpu / cpu:.1f}x" if key in ("morf", "lerf") else ""
            rows.append(f"| {case.name} | {label} | {wall:.3f} | {wall / bare_wall:.2f} | {cpu:.3f} | "
                        f"{cpu / bare_cpu:.2f} | {speedup} |")
        total, forward = forward_share(case, repeats)
        lines = [f"xaicore MoRF, CPU: {total:.3f} s, of which model forward {forward:.3f} s; xaicore's own work "
                 f"{total - forward:.3f} s = {(total - forward) / t['bare'][1]:.2f}x the bare passes; the forward "
                 f"passes on the perturbed inputs take {forward / t['bare'][1]:.2f}x those on the clean batch"]
        lines.append(f"Quantus fed xaicore's noise (the same perturbed inputs): {t['quantus_same'][1]:.3f} s CPU = "
                     f"{t['quantus_same'][1] / t['bare'][1]:.2f}x bare, {t['quantus_same'][1] / t['morf'][1]:.1f}x "
                     f"xaicore MoRF")
        notes.append((case, t, lines + compare(case)))

    print()
    print("| case | contender | wall s | x bare (wall) | CPU s | x bare (CPU) | Quantus / xaicore (wall / CPU) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print()
    targets = {"(a)": (1.1, None), "(b)": (1.3, 10.0)}
    for case, t, lines in notes:
        max_ratio, min_speedup = targets[case.name[:3]]
        verdicts = []
        for basis, i in (("wall", 0), ("CPU", 1)):
            ratio = t["morf"][i] / t["bare"][i]
            v = f"{basis}: {ratio:.2f}x bare ({'met' if ratio <= max_ratio else 'NOT met'})"
            if min_speedup is not None:
                sp = t["quantus"][i] / t["morf"][i]
                v += f", {sp:.1f}x faster than Quantus ({'met' if sp >= min_speedup else 'NOT met'})"
            ratio_p = t["morf"][i] / t["bare_perturbed"][i]
            v += f"; {ratio_p:.2f}x the passes of the perturbed inputs"
            verdicts.append(v)
        goal = f"xaicore <= {max_ratio}x bare" + (f", >= {min_speedup:.0f}x faster than Quantus" if min_speedup else "")
        print(f"{case.name}: target {goal}; {'; '.join(verdicts)}")
        for line in lines:
            print(f"  {line}")


if __name__ == "__main__":
    main()
