"""``python -m flows.schedule (--cron CRON | --every SECONDS) [--params FILE] [--out DIR]``: serve the survey as a
Prefect deployment whose scheduled runs each run ``dvc repro`` in the project (unchanged stages are skipped), or,
with a params file other than params.yaml, the survey flow on it.

``xaicore schedule`` starts it under ``flows/server.py --scheduler``: the project's local Prefect server with its
scheduler service (``PREFECT_API_URL`` points at it), which creates the deployment's runs; this process polls for
them and runs them until it is stopped (Ctrl-C). Each run's output is in its Prefect logs and in
``<out>/.scheduled/<run start>.log``.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

from prefect import flow

import tasks


@flow(name="survey-scheduled", log_prints=True)
def scheduled_survey(project: str, params: str = "params.yaml", out: str = "outputs") -> None:
    tasks.repro_survey(project, params, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="a cron schedule of 5 fields, e.g. '0 3 * * 1'")
    when.add_argument("--every", type=float, metavar="SECONDS", help="an interval schedule in seconds")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="outputs")
    args = parser.parse_args(argv)
    if not os.environ.get("PREFECT_API_URL"):
        print("flows.schedule: no Prefect server (PREFECT_API_URL is unset): run it through `xaicore schedule`, "
              "which starts the project's server with its scheduler", file=sys.stderr)
        sys.exit(2)
    project = str(Path.cwd())
    schedule = {"cron": args.cron} if args.cron else {"interval": timedelta(seconds=args.every)}
    print(f"flows.schedule: serving the survey of {project} ({args.cron or f'every {args.every:g} s'}); each run: "
          f"{'dvc repro' if Path(args.params).resolve() == Path('params.yaml').resolve() else 'the survey flow'}, "
          f"its output in {Path(args.out) / '.scheduled'}/; stop with Ctrl-C", file=sys.stderr, flush=True)
    scheduled_survey.serve(name="survey", parameters={"project": project, "params": args.params, "out": args.out},
                           print_starting_message=False, **schedule)


if __name__ == "__main__":
    main()
