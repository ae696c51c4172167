"""Perturbation-method benchmark: occlusion, LIME and PDA against the bare forward passes of their perturbed
inputs, and against Captum's ``Occlusion``/``Lime`` and the ``lime`` package.

The floor of a perturbation method is the forward passes of its perturbed copies (no backward). ``bare`` times
exactly as many inputs through the model in passes of the same size (``forward_batch``), built once beforehand;
each method is timed at several ``forward_batch`` values and the best is reported, as the peers are at their own
best settings. The small zoo CNN (``cnn``, seeded, untrained) on embedded digits, ``--threads`` torch threads
(default 1: see ../shared/PEERS.md on two threads under load); the load average is printed with the figures.
Each repeat times bare passes, xaicore and the peer back to back; the table shows medians over repeats.

    .venv/bin/python benchmarks/perturbation.py [--batch 32] [--repeats 3] [--threads 1] [--device cuda]

On ``--device cuda`` the model and data live on the GPU, timings synchronize, and the ``lime`` package (CPU
only) is left out.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's xaicore, whatever the environment has installed
os.environ.setdefault("TQDM_DISABLE", "1")  # the lime package's bar (tqdm reads it when imported)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import xaicore  # noqa: E402
from xaicore.data import load_digits28  # noqa: E402
from xaicore.features import Superpixels, Windows  # noqa: E402
from xaicore.models import build_model  # noqa: E402

SEED = 0
BATCHES = (32, 128, 256, 1024)


def timed(fn: Callable[[], object]) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def bare(model: nn.Module, x: torch.Tensor, n_copies: int, forward_batch: int) -> Callable[[], None]:
    """The forward passes alone: ``n_copies`` copies of the batch in passes of ``forward_batch`` inputs (at least
    one copy of the batch per pass), inputs built before the clock starts."""
    per = max(1, forward_batch // x.shape[0])
    packed = x.repeat(per, 1, 1, 1).contiguous()
    n_passes, last = divmod(n_copies, per)

    def run() -> None:
        with torch.no_grad():
            for _ in range(n_passes):
                model(packed)
            if last:
                model(packed[:last * x.shape[0]])
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lime-samples", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--forward-batches", type=int, nargs="+", default=list(BATCHES))
    args = parser.parse_args()
    batches = tuple(args.forward_batches)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    data = load_digits28()
    torch.manual_seed(SEED)
    model = build_model("cnn", (1, 28, 28), 10).eval()
    state = xaicore.fit(model, data.x_train, method="pda", window=4, padding=2)
    model = model.to(args.device)
    x = data.x_test[:args.batch].contiguous().to(args.device)
    t = data.y_test[:args.batch].contiguous().to(args.device)
    n_lime = args.lime_samples
    occ = dict(window=4, stride=2)
    pda = dict(window=4, padding=2, stride=2, n_samples=4)
    n_occ = Windows(x, 4, 2).n_features
    n_pda = Windows(x, 4, 2, partial=False).n_features * 4
    segments = Superpixels(x, "slic", n_segments=40)

    from captum.attr import Lime, Occlusion

    if args.device == "cpu":
        from lime import lime_image

    def captum_occlusion(ppe: int) -> Callable[[], object]:
        return lambda: Occlusion(model).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2),
                                                  baselines=0.0, target=t, perturbations_per_eval=ppe)

    labels = segments.labels.view(-1, 1, 28, 28)

    def captum_lime() -> object:
        return Lime(model).attribute(x, target=t, feature_mask=labels, n_samples=n_lime,
                                     perturbations_per_eval=min(n_lime, 256 // 1))

    seg_np = segments.labels.view(-1, 28, 28).cpu().numpy()

    def lime_package() -> object:
        def classify(images: np.ndarray) -> np.ndarray:  # lime hands grey images over as RGB
            with torch.no_grad():
                batch = torch.from_numpy(images[..., :1]).permute(0, 3, 1, 2).float().to(args.device)
                return model(batch).softmax(1).cpu().numpy()
        for i in range(x.shape[0]):
            explainer = lime_image.LimeImageExplainer(random_state=SEED)
            explainer.explain_instance(x[i, 0].double().cpu().numpy(), classify, labels=(int(t[i]),), top_labels=None,
                                       hide_color=None, num_samples=n_lime, random_seed=SEED,
                                       segmentation_fn=lambda img, s=seg_np[i]: s)  # its default batch of 10

    cases = {
        "occlusion 4/2": (n_occ, lambda fb: (lambda: xaicore.explain(model, x, t, "occlusion", forward_batch=fb,
                                                                      **occ)),
                          {"captum Occlusion ppe=1": captum_occlusion(1),
                           "captum Occlusion ppe=16": captum_occlusion(16)}),
        f"lime slic {n_lime}": (n_lime, lambda fb: (lambda: xaicore.explain(model, x, t, "lime", n_samples=n_lime,
                                                                             n_segments=40, forward_batch=fb)),
                                {"captum Lime": captum_lime} if args.device != "cpu" else
                                {"lime package": lime_package, "captum Lime": captum_lime}),
        "pda 4/2 cond. n=4": (n_pda, lambda fb: (lambda: xaicore.explain(model, x, t, "pda", reference=state,
                                                                          forward_batch=fb, **pda)), {}),
    }
    print(f"# perturbation benchmark: cnn 1x28x28, batch {x.shape[0]}, {args.threads} torch thread(s), median of "
          f"{args.repeats}; torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load average before {os.getloadavg()[0]:.2f}")
    print(f"{'method':<22}{'copies':>7}{'batch':>7}{'xaicore s':>11}{'bare s':>9}{'/bare':>7}")
    best = {}
    for name, (n, ours, peers) in cases.items():
        for fn in [ours(fb) for fb in batches] + list(peers.values()):  # warm-up
            fn()
        for fb in batches:
            rows = []
            for _ in range(args.repeats):
                b = timed(bare(model, x, n, fb))
                o = timed(ours(fb))
                rows.append((o, b, o / b))
            o, b, r = (statistics.median(c) for c in zip(*rows, strict=True))
            print(f"{name:<22}{n:>7}{fb:>7}{o:>11.3f}{b:>9.3f}{r:>7.2f}", flush=True)
            if name not in best or b < best[name][2]:
                best[name] = (fb, o, b, r)
    print("# at the best batch (the one whose bare passes are fastest); peers against those bare passes")
    for name, (n, _, peers) in cases.items():
        fb, o, b, r = best[name]
        cells = []
        for pname, pfn in peers.items():
            rows = [(timed(pfn), timed(bare(model, x, n, fb))) for _ in range(args.repeats)]
            p_s = statistics.median(r_[0] for r_ in rows)
            p_r = statistics.median(r_[0] / r_[1] for r_ in rows)
            cells.append(f"{pname} {p_s:.2f} s = {p_r:.2f}x")
        print(f"{name}: batch {fb}, xaicore {o:.3f} s = {r:.2f}x the bare passes ({b:.3f} s); " + "; ".join(cells),
              flush=True)
    print(f"# load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
