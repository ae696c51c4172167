"""Running a flow from the command line: ``python -m flows <stage> [--params params.yaml] [--out outputs]``.

The configuration and the data it names are checked before Prefect starts, so bad input ends with one line
naming the problem and exit status 2, as does a second run on an output folder that another run holds.
SIGTERM becomes a clean exit, so the ephemeral Prefect server is not orphaned.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import Any

from xaicore.config import load_config
from xaicore.errors import XaiCoreError
from xaicore.pipeline import preflight
from xaicore.pipeline.lock import outputs_lock


def _terminate(signum: int, frame: Any) -> None:
    sys.exit(128 + signum)


def main(flow: Any, description: str | None) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="the survey's configuration (default: params.yaml)")
    parser.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        preflight(load_config(args.params))
        with outputs_lock(args.out, f"{flow.name} flow"):  # refused here in one line, before Prefect starts
            _run(flow, args.params, args.out)
    except XaiCoreError as e:
        print(f"xaicore: error: {e}", file=sys.stderr)
        sys.exit(2)


def _run(flow: Callable[..., Any], params: str, out: str) -> None:
    flow(params=params, out=out)
