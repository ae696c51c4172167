"""Explainer benchmark: xaicore's gradient and signal methods against one plain forward+backward pass and Captum.

The small CNN of the zoo (``build_model("cnn", (1, 28, 28), 10)``, seeded, untrained: the cost does not depend on
the weights) on 256 embedded digits. The floor of a gradient method is one forward+backward pass of the batch
(``pass``); IG with n steps and SmoothGrad with n samples need n such passes. Timed after a warm-up, on
``--threads`` torch threads: each repeat times a plain pass, xaicore and Captum back to back, and the table shows
the medians over repeats of the times and of the per-repeat ratios (robust to a shared machine's changing load).

Captum counterparts: Saliency(abs=False), InputXGradient, IntegratedGradients (riemann_trapezoid, all steps in
one pass, its default), NoiseTunnel(Saliency) "smoothgrad", GuidedBackprop, Deconvolution, LayerGradCam on the
last conv + LayerAttribution.interpolate (bilinear).

    .venv/bin/python benchmarks/explain.py [--threads 1] [--repeats 7] [--batch 256]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's xaicore, whatever the environment has installed

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from captum.attr import (  # noqa: E402
    Deconvolution,
    DeepLift,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)

import xaicore  # noqa: E402
from xaicore.data import load_digits28  # noqa: E402
from xaicore.explain import fit_patterns  # noqa: E402
from xaicore.models import build_model  # noqa: E402

IG_STEPS = 32
SG_SAMPLES = 16
SEED = 0


def plain_pass(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One forward+backward of the batch: the gradient of the target logits w.r.t. x."""
    x = x.detach().requires_grad_(True)
    score = model(x).gather(1, target[:, None]).sum()
    return torch.autograd.grad(score, x)[0]


def contenders(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
               patterns: object) -> dict[str, tuple[int, Callable, Callable | None]]:
    """method -> (passes it needs, xaicore call, Captum call or None where Captum has no such method)."""
    xr = x.clone().requires_grad_(True)

    def ours(method: str, **kw: object) -> Callable:
        return lambda: xaicore.explain(model, x, target, method=method, **kw)

    def gradcam() -> torch.Tensor:
        cam = LayerGradCam(model, model.conv2).attribute(xr, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear").expand_as(x)

    return {
        "gradient": (1, ours("gradient"), lambda: Saliency(model).attribute(xr, target=target, abs=False)),
        "gradient_x_input": (1, ours("gradient_x_input"), lambda: InputXGradient(model).attribute(xr, target=target)),
        "integrated_gradients": (IG_STEPS, ours("integrated_gradients", n_steps=IG_STEPS),
                                 lambda: IntegratedGradients(model).attribute(x, target=target, n_steps=IG_STEPS,
                                                                              method="riemann_trapezoid")),
        "smoothgrad": (SG_SAMPLES, ours("smoothgrad", n_samples=SG_SAMPLES, noise_level=0.15),
                       lambda: NoiseTunnel(Saliency(model)).attribute(xr, nt_type="smoothgrad",
                                                                       nt_samples=SG_SAMPLES, stdevs=0.15,
                                                                       target=target, abs=False)),
        "guided_backprop": (1, ours("guided_backprop"), lambda: GuidedBackprop(model).attribute(xr, target=target)),
        "deconvnet": (1, ours("deconvnet"), lambda: Deconvolution(model).attribute(xr, target=target)),
        "gradcam": (1, ours("gradcam"), gradcam),
        # DeepLIFT runs x and the reference as one doubled batch: two passes' worth of inputs (Captum does the same)
        "deeplift": (2, ours("deeplift"), lambda: DeepLift(model).attribute(xr, target=target)),
        "excitation_backprop": (1, ours("excitation_backprop"), None),
        "patternnet": (1, ours("patternnet", reference=patterns), None),
        "patternattribution": (1, ours("patternattribution", reference=patterns), None),
    }


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # Captum warns about its ReLU hooks at every call

    data = load_digits28()
    torch.manual_seed(SEED)
    model = build_model("cnn", (1, 28, 28), 10).eval()
    x, target = data.x_test[:args.batch].contiguous(), data.y_test[:args.batch].contiguous()
    start = time.perf_counter()
    patterns = fit_patterns(model, data.x_train)
    fit_s = time.perf_counter() - start
    cases = contenders(model, x, target, patterns)
    for _, ours, theirs in cases.values():  # warm-up (allocator, oneDNN primitives)
        ours()
        if theirs is not None:
            theirs()
    plain_pass(model, x, target)

    print(f"# explain benchmark: cnn 1x28x28, batch {x.shape[0]}, {args.threads} torch thread(s), "
          f"median of {args.repeats}; torch {torch.__version__}, {platform.processor() or platform.machine()}")
    pass_s = median_time(lambda: plain_pass(model, x, target), args.repeats)
    print(f"# one forward+backward pass: {pass_s * 1e3:.1f} ms (ratios use the pass timed beside each repeat)")
    fwd_s = median_time(lambda: _forward_all(model, data.x_train), 3)
    print(f"# fit_patterns on the {data.x_train.shape[0]} training digits: {fit_s:.2f} s (first call) = "
          f"{fit_s / fwd_s:.2f}x the plain forward passes over them ({fwd_s:.2f} s)")
    print(f"{'method':<22}{'passes n':>9}{'xaicore ms':>12}{'/ (n pass)':>12}{'captum ms':>11}"
          f"{'/ (n pass)':>12}{'xaicore/captum':>16}")
    for name, (n, ours, theirs) in cases.items():
        rows = []
        for _ in range(args.repeats):  # interleaved, so all three see the same machine load
            p = median_time(lambda: plain_pass(model, x, target), 3)
            to = median_time(ours, 1)
            tt = median_time(theirs, 1) if theirs is not None else float("nan")
            rows.append((to, tt, to / (n * p), tt / (n * p), to / tt))
        mo, mt, ro, rt, r = (statistics.median(col) for col in zip(*rows, strict=True))
        if theirs is None:
            print(f"{name:<22}{n:>9}{mo * 1e3:>12.1f}{ro:>12.2f}{'-':>11}{'-':>12}{'-':>16}")
        else:
            print(f"{name:<22}{n:>9}{mo * 1e3:>12.1f}{ro:>12.2f}{mt * 1e3:>11.1f}{rt:>12.2f}{r:>16.2f}")


def _forward_all(model: nn.Module, x: torch.Tensor, batch: int = 256) -> None:
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            model(x[i:i + batch])

if __name__ == "__main__":
    main()
