"""Metric benchmark: AOPC with each perturbation and faithfulness, against Quantus and the bare forward passes.

The two cases of ``benchmarks/aopc.py``, gradient heatmaps, 4×4 regions, 1 thread: (a) the project's small CNN
on 256 embedded digits (L = 49); (b) Conv2d(3, 8, 4, stride=4) → ReLU → Flatten → Linear(2048, 10) on 128
random 3×64×64 images (L = 256; ``mean`` is the batch's own mean there: random images have no training set).

* xaicore ``aopc`` MoRF with ``uniform``, ``dirichlet``, ``mean`` (case (a): the training set's mean) and ``blur``
  (exact recursive), against ``quantus.RegionPerturbation`` (MoRF, patch 4) with the matching perturbation:
  its own ``uniform`` (one value per patch) and ``mean`` (one value per image) baselines, and — where Quantus
  has none (Dirichlet, per-variable mean, blur of the current image) — a ``perturb_func`` giving it the same
  replacement (xaicore's values, drawn inside the timed call as a Quantus user would draw them, or scipy's
  Gaussian σ = 3 of the current batch for blur);
* xaicore ``faithfulness`` against ``quantus.FaithfulnessCorrelation`` (nr_runs = L, subset_size = 16, fed
  xaicore's uniform noise), both needing L + 1 forward passes of the batch;
* the floor: L + 1 bare forward passes under ``torch.no_grad``.

Targets (the issue's, case (b)): xaicore ≤ 1.5× the bare passes and ≥ 10× faster than Quantus, for every
perturbation and for faithfulness; the script prints a verdict per metric (CPU time).

    .venv/bin/python benchmarks/metrics.py [--case a|b|all] [--quick] [--threads N] [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/aopc.py, reused by import

import aopc as aopc_bench  # noqa: E402
import numpy as np  # noqa: E402
import scipy.ndimage as nd  # noqa: E402
import torch  # noqa: E402

from xaicore.data import load_digits28  # noqa: E402
from xaicore.metrics import PERTURBATIONS, aopc, faithfulness, replacement_values  # noqa: E402

REGION, SEED = aopc_bench.REGION, aopc_bench.SEED


def blur_current(arr: np.ndarray, indices: np.ndarray, shape: tuple[int, ...] = (), **_: object) -> np.ndarray:
    """A Quantus perturb_func for the exact recursive blur: Gaussian σ = 3 of the *current* images, copied
    into the patch (what a Quantus user writes: it has no batched blur of the perturbed input)."""
    blurred = nd.gaussian_filter(arr.reshape(shape), (0, 0, 3, 3), mode="reflect").reshape(arr.shape)
    out = arr.copy()
    rows = np.arange(arr.shape[0])[:, None]
    out[rows, indices] = blurred[rows, indices]
    return out


def region_perturbation(case: aopc_bench.Case, baseline: str = "uniform", perturb_func=None, kwargs=None):
    import quantus

    return quantus.RegionPerturbation(
        patch_size=REGION, order="morf", regions_evaluation=case.n_regions, abs=False, normalise=False,
        perturb_baseline=baseline, perturb_func=perturb_func, perturb_func_kwargs=kwargs,
        disable_warnings=True, display_progressbar=False)


def faithfulness_correlation(case: aopc_bench.Case, rep: np.ndarray):
    import quantus

    return quantus.FaithfulnessCorrelation(
        nr_runs=case.n_regions, subset_size=REGION * REGION, abs=False, normalise=False, return_aggregate=False,
        perturb_func=aopc_bench.replace_from, perturb_func_kwargs={"replacement": rep}, disable_warnings=True)


def run_quantus(case: aopc_bench.Case, metric) -> None:
    np.random.seed(SEED)
    metric(model=case.model, x_batch=case.x.numpy(), y_batch=case.target.numpy(), a_batch=case.relevance.numpy(),
           channel_first=True, softmax=False, device="cpu", batch_size=case.x.shape[0])


def measure(case: aopc_bench.Case, reference: torch.Tensor | None, repeats: int) -> None:
    """Time every contender on ``case``, print its table and, for case (b), the targets' verdicts."""
    shape = tuple(case.x.shape)
    print(f"\n{case.name}; L = {case.n_regions}; mean: "
          f"{'the training set' if reference is not None else 'the batch'}")

    def ours_aopc(p: str):
        return lambda: aopc(case.model, case.x, case.target, case.relevance, perturbation=p, region=REGION,
                            seed=SEED, reference=reference)

    def flat_rep(p: str) -> np.ndarray:
        return replacement_values(case.x, p, seed=SEED, region=REGION, reference=reference).reshape(
            shape[0], -1).numpy()

    def given_ours(p: str):
        """Quantus fed xaicore's replacement, its drawing included in the time (a Quantus user draws it too)."""
        return lambda: run_quantus(case, region_perturbation(
            case, perturb_func=aopc_bench.replace_from, kwargs={"replacement": flat_rep(p)}))

    same = {p: given_ours(p) for p in ("uniform", "dirichlet", "mean")}
    quantus = {"uniform": region_perturbation(case, "uniform"), "mean": region_perturbation(case, "mean"),
               "blur": region_perturbation(case, perturb_func=blur_current, kwargs={"shape": shape})}
    own = "perturb_func: xaicore's replacement (drawn in the call)"
    # (row label, contender, timed function, the xaicore row it is compared with)
    rows = [("floor", f"{case.n_regions + 1} bare forward passes", aopc_bench.bare_passes(case), None)]
    for p in PERTURBATIONS:
        rows.append((f"aopc {p}", "xaicore", ours_aopc(p), None))
        if p in quantus:
            label = {"uniform": "own 'uniform' (one value per patch)", "mean": "own 'mean' (one value per image)",
                     "blur": "perturb_func: recursive scipy blur"}[p]
            rows.append((f"aopc {p}", f"Quantus RegionPerturbation, {label}",
                         lambda m=quantus[p]: run_quantus(case, m), f"aopc {p}"))
        if p in same:
            rows.append((f"aopc {p}", f"Quantus RegionPerturbation, {own}", same[p], f"aopc {p}"))
    rows.append(("faithfulness uniform", "xaicore", lambda: faithfulness(
        case.model, case.x, case.target, case.relevance, region=REGION, seed=SEED), None))
    rows.append(("faithfulness uniform", f"Quantus FaithfulnessCorrelation, {case.n_regions} runs of 16 pixels, "
                 f"{own}", lambda: run_quantus(case, faithfulness_correlation(case, flat_rep("uniform"))),
                 "faithfulness uniform"))
    t = aopc_bench.timed({f"{metric} | {who}": fn for metric, who, fn, _ in rows}, repeats)
    bare_wall, bare_cpu = t[f"{rows[0][0]} | {rows[0][1]}"]
    print("\n| metric | contender | wall s | x bare (wall) | CPU s | x bare (CPU) | contender / xaicore (CPU) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for metric, who, _, ref in rows:
        wall, cpu = t[f"{metric} | {who}"]
        ratio = f"{cpu / t[f'{ref} | xaicore'][1]:.2f}x" if ref else ""
        print(f"| {metric} | {who} | {wall:.3f} | {wall / bare_wall:.2f} | {cpu:.3f} | {cpu / bare_cpu:.2f} | "
              f"{ratio} |")
    if not case.name.startswith("(b)"):
        return
    print("\ntargets (case (b), CPU): xaicore <= 1.5x the bare passes, >= 10x faster than Quantus")
    for metric in dict.fromkeys(m for m, *_ in rows[1:]):
        cpu = t[f"{metric} | xaicore"][1]
        speedups = [t[f"{metric} | {who}"][1] / cpu for m, who, _, ref in rows if m == metric and ref]
        x_bare, slowest = cpu / bare_cpu, min(speedups)
        print(f"  {metric}: {x_bare:.2f}x bare ({'met' if x_bare <= 1.5 else 'NOT met'}); Quantus "
              f"{' / '.join(f'{s:.1f}x' for s in speedups)} slower ({'met' if slowest >= 10 else 'NOT met'})")


def layer_times(case: aopc_bench.Case, repeats: int, passes: int = 20) -> None:
    """Per layer, ``passes`` forward calls on the clean batch and on U(0, 1) noise of its shape (CPU s, best of
    ``repeats``): which layer makes the passes over noise-filled inputs slower than over the clean batch."""
    noise = torch.rand(case.x.shape, generator=torch.Generator().manual_seed(SEED))
    leaves = [m for m in case.model.modules() if not list(m.children())]
    times = {}
    for label, h in (("clean", case.x), ("noise", noise)):
        with torch.no_grad():
            for i, m in enumerate(leaves):
                best = float("inf")
                for _ in range(repeats):
                    t0 = time.process_time()
                    for _ in range(passes):
                        y = m(h)
                    best = min(best, time.process_time() - t0)
                times[(i, label)] = best
                h = y
    print(f"\nper layer, {passes} passes, CPU s: clean batch vs U(0, 1) noise of its shape")
    print("| layer | clean | noise | noise / clean |\n|---|---:|---:|---:|")
    for i, m in enumerate(leaves):
        c, n = times[(i, "clean")], times[(i, "noise")]
        print(f"| {i}: {type(m).__name__} | {c:.3f} | {n:.3f} | {n / max(c, 1e-9):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=("a", "b", "all"), default="all",
                        help="(a) small CNN on digits, (b) cheap conv+linear on random 3x64x64 (default: both)")
    parser.add_argument("--quick", action="store_true", help="untrained CNN in case (a), 2 repeats")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3)")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 3)
    aopc_bench.set_threads(args.threads)
    print(f"threads: {torch.get_num_threads()}; torch {torch.__version__}; repeats: {repeats} (median)")
    if args.case in ("a", "all"):
        case = aopc_bench.case_cnn(args.quick)
        measure(case, load_digits28().x_train, repeats)
        layer_times(case, repeats)
    if args.case in ("b", "all"):
        measure(aopc_bench.case_cheap(), None, repeats)


if __name__ == "__main__":
    main()
