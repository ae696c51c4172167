"""Threads per process: a training run and a ROAR retraining with 1 and 2 torch threads, on a quiet machine and
beside a busy process, each measured in a fresh process, the settings alternating round by round.

The jobs are the pipeline's own: ``xaicore.models.train_model`` of the zoo CNN on the embedded digits (the train
stage's job) and one ``xaicore.metrics.roar_cell`` at fraction 0.5 (the ROAR stage's job). The busy process is a
one-thread torch loop of 256x256 matmuls, as a Dask worker or another stage would be. The figures choose the
pipeline's setting: one torch thread per worker process (``xaicore.threads.compute_threads``).

    .venv/bin/python benchmarks/threads.py [--rounds 3] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

JOB = """
import json, sys, time
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads({threads})
from xaicore.data import load_digits28
from xaicore.metrics import Trainer, roar_cell
from xaicore.models import train_model
ds = load_digits28()
start = time.perf_counter()
if {job!r} == "train":
    train_model("cnn", ds.x_train, ds.y_train, n_classes=10, epochs={epochs}, batch_size=32, lr=0.002, seed=0,
                progress=False)
else:
    trainer = Trainer(arch="cnn", n_classes=10, epochs={epochs}, batch_size=32, lr=0.002)
    rel = torch.rand(ds.x_train.shape, generator=torch.Generator().manual_seed(0))
    rte = torch.rand(ds.x_test.shape, generator=torch.Generator().manual_seed(1))
    roar_cell(ds.x_train, ds.y_train, ds.x_test, ds.y_test, rel, rte, fraction=0.5, mode="roar", seed=0,
              train_fn=trainer)
print(json.dumps(time.perf_counter() - start))
"""

BUSY = """
import torch
torch.set_num_threads(1)
a = torch.rand(256, 256)
while True:
    a = (a @ a).tanh_()
"""


def run(job: str, threads: int, epochs: int) -> float:
    out = subprocess.run([sys.executable, "-c", JOB.format(root=str(ROOT), threads=threads, job=job, epochs=epochs)],
                         capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    times: dict[tuple[str, str, int], list[float]] = {}
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for r in range(args.rounds):
        for load in ("quiet", "busy"):
            busy = subprocess.Popen([sys.executable, "-c", BUSY]) if load == "busy" else None
            time.sleep(1.0 if busy else 0.0)
            try:
                for job in ("train", "roar"):
                    for threads in ((1, 2) if r % 2 == 0 else (2, 1)):
                        times.setdefault((job, load, threads), []).append(run(job, threads, args.epochs))
            finally:
                if busy:
                    busy.kill()
                    busy.wait()
        print(f"round {r + 1} done, load average {os.getloadavg()[0]:.2f}")
    print(f"\n| job ({args.epochs} epochs) | machine | 1 thread (s) | 2 threads (s) | 2 threads / 1 thread |")
    print("| --- | --- | ---: | ---: | ---: |")
    for job in ("train", "roar"):
        for load in ("quiet", "busy"):
            one, two = (statistics.median(times[(job, load, t)]) for t in (1, 2))
            print(f"| {job} | {load} | {one:.2f} | {two:.2f} | {two / one:.2f} |")


if __name__ == "__main__":
    main()
