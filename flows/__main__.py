"""``python -m flows <stage> [--params params.yaml] [--out outputs]``: one DVC stage's flow, or ``survey`` for all.

dvc.yaml runs the stages this way. A program started as a package's ``__main__`` is not imported again by the
Dask workers of the explain, score and roar stages: multiprocessing's spawn re-imports any other main module
(``python -m flows.explain`` would be) in every child, and each worker would import Prefect and the flows for
nothing (5-6 s per worker on 2 cores, before its first job).
"""

from __future__ import annotations

import importlib
import sys

STAGES = ("data", "train", "controls", "autoencoder", "fit", "explain", "score", "roar", "maximize", "planted",
          "analysis", "tabular", "text", "aggregate", "report", "survey")


def run(argv: list[str]) -> None:
    if not argv or argv[0] not in STAGES:
        got = f"got {argv[0]!r}" if argv else "no stage given"
        print(f"usage: python -m flows {{{','.join(STAGES)}}} [--params PARAMS] [--out OUT] ({got})",
              file=sys.stderr)
        sys.exit(2)
    stage = argv[0]
    module = importlib.import_module(f"flows.{stage}")
    from flows._cli import main

    sys.argv = [f"python -m flows {stage}", *argv[1:]]
    main(getattr(module, f"{stage}_flow"), module.__doc__)


if __name__ == "__main__":
    run(sys.argv[1:])
