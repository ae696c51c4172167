"""LRP benchmark: xaicore's rule engine against one plain forward+backward pass and against Zennit.

LRP as a modified gradient costs one forward and one backward pass plus what the rules add: ε adds a few
elementwise ops per layer, z⁺ one extra convolution/matmul per layer (its modified pre-activation), flat one cheap
convolution of a ones-input on the first layer. The floor is the plain input gradient (forward + backward).

Case: the project's small CNN (``build_model("cnn", (1, 28, 28), 10)``, seeded, untrained, float32) on 256
embedded digits, one torch thread. Timed per call, median of ``--repeats`` after a warm-up, contenders interleaved:
the plain forward+backward (``autograd.grad`` of the target logits w.r.t. x), ``xaicore.explain`` (the public call:
validation, rules attached and removed, finiteness check) and Zennit (the composite registered and removed per
call, forward, ``autograd.grad`` with a one-hot output gradient). The relevance maps are checked to agree.
The last column (ratio of the fastest runs) is the less load-sensitive figure on a shared machine.

    .venv/bin/python benchmarks/lrp.py [--repeats N] [--threads N] [--batch N]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's xaicore, whatever the environment has installed

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from zennit import composites as zc  # noqa: E402
from zennit import rules as zr  # noqa: E402
from zennit.types import Linear as AnyLinear  # noqa: E402

import xaicore  # noqa: E402
from xaicore.data import load_digits28  # noqa: E402
from xaicore.models import build_model  # noqa: E402

EPSILON = 1e-6
CASES: list[tuple[str, str, dict, Callable[[], zc.Composite]]] = [
    ("LRP-ε", "lrp.epsilon", {"epsilon": EPSILON},
     lambda: zc.LayerMapComposite(zc.layer_map_base() + [(AnyLinear, zr.Epsilon(epsilon=EPSILON))])),
    ("EpsilonPlusFlat", "lrp.epsilon_plus_flat", {"epsilon": EPSILON},
     lambda: zc.EpsilonPlusFlat(epsilon=EPSILON)),
    ("DTD z⁺", "dtd.zplus", {}, lambda: zc.LayerMapComposite(zc.layer_map_base() + [(AnyLinear, zr.ZPlus())])),
]


def plain(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    score = model(x).gather(1, target[:, None]).sum()
    return torch.autograd.grad(score, x)[0]


def zennit(model: nn.Module, x: torch.Tensor, target: torch.Tensor, composite: zc.Composite) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    with composite.context(model) as m:
        out = m(x)
        onehot = torch.zeros_like(out).scatter_(1, target[:, None], 1.0)
        (rel,) = torch.autograd.grad(out, x, grad_outputs=onehot)
    return rel * out.detach().gather(1, target[:, None]).view(-1, 1, 1, 1)


def timed(fn: Callable[[], torch.Tensor]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    digits = load_digits28()
    x = torch.cat([digits.x_train, digits.x_test])[: args.batch].float().contiguous()
    target = torch.cat([digits.y_train, digits.y_test])[: args.batch]
    torch.manual_seed(0)
    model = build_model("cnn", (1, 28, 28), 10).eval()

    contenders: dict[str, Callable[[], torch.Tensor]] = {"plain": lambda: plain(model, x, target)}
    for label, method, params, comp in CASES:
        composite = comp()
        ours = xaicore.explain(model, x, target, method=method, **params)
        ref = zennit(model, x, target, composite)
        err = float((ours - ref).abs().max() / ref.abs().max())
        if err > 1e-4:
            raise SystemExit(f"{label}: xaicore and Zennit disagree (relative max error {err:.2e})")
        contenders[f"xaicore {label}"] = lambda m=method, p=params: xaicore.explain(model, x, target, method=m, **p)
        contenders[f"zennit {label}"] = lambda c=composite: zennit(model, x, target, c)

    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(3):  # warm-up
        for fn in contenders.values():
            fn()
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            times[name].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}

    print(f"# LRP on the small CNN, batch {args.batch}, float32, {args.threads} thread(s), median of "
          f"{args.repeats}; torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(f"plain forward+backward (input gradient): {med['plain'] * 1e3:.1f} ms")
    print(f"| {'rule':<16} | {'xaicore ms':>10} | {'xaicore / fwd+bwd':>17} | {'zennit ms':>9} | "
          f"{'zennit / fwd+bwd':>16} | {'xaicore / zennit':>16} | {'xaicore / fwd+bwd, min':>22} |")
    print(f"|{'-' * 18}|{'-' * 12}|{'-' * 19}|{'-' * 11}|{'-' * 18}|{'-' * 18}|{'-' * 24}|")
    for label, *_ in CASES:
        ours, theirs = med[f"xaicore {label}"], med[f"zennit {label}"]
        floor = best[f"xaicore {label}"] / best["plain"]
        print(f"| {label:<16} | {ours * 1e3:>10.1f} | {ours / med['plain']:>16.2f}× | {theirs * 1e3:>9.1f} | "
              f"{theirs / med['plain']:>15.2f}× | {ours / theirs:>15.2f}× | {floor:>21.2f}× |")


if __name__ == "__main__":
    main()
