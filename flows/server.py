"""Run a command (``dvc repro``) with one local Prefect server shared by all the flows it starts.

    python flows/server.py dvc repro      (as a script: ``python -m flows.server`` works too, but importing
                                           the ``flows`` package first imports torch and Prefect, ~14 s)

Without ``PREFECT_API_URL`` every stage process would start Prefect's ephemeral server itself: about 17 s a stage
(its imports, its database and its start-up wait), measured on the 2-core machine; against a running server a
flow starts in about 2 s. This starts ``prefect server start`` on a free localhost port (the project's
``PREFECT_HOME`` database, no UI, no analytics), points ``PREFECT_API_URL`` at it for the command, and stops it
when the command ends, fails or is interrupted. With ``PREFECT_API_URL`` already set the command runs against
that server unchanged; when the server does not come up, the command runs in ephemeral mode (slower, same
results). Exit status: the command's.

    python flows/server.py --scheduler python -m flows.schedule ...   (what ``xaicore schedule`` runs)

``--scheduler`` starts the server with Prefect's scheduler service, which turns a deployment's schedule into flow
runs (an ephemeral server cannot: "Cannot schedule flows on an ephemeral server"); it never falls back to
ephemeral mode.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 60.0
#: the offline settings of ``tasks/_env.py`` that the server process reads (it imports nothing of the project)
SERVER_ENV = {"PREFECT_HOME": ".prefect", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
              "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_UI_ENABLED": "false", "DO_NOT_TRACK": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:  # noqa: S310 (a localhost URL built here)
            return r.status == 200
    except OSError:
        return False


def start_server(log: Path, *, scheduler: bool = False) -> tuple[subprocess.Popen, str] | None:
    """A ``prefect server start`` process and its API URL once it answers, or None (it failed or timed out);
    with ``scheduler`` its scheduler service runs too (scheduled deployments), else the API alone."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
               "--no-ui", "--analytics-off"]
        # the API only for dvc repro (flows run in the stage processes); the scheduler for scheduled runs
        cmd += ["--scheduler", "--no-late-runs"] if scheduler else ["--no-services"]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if healthy(url):
            return proc, url
        time.sleep(0.25)
    stop_server(proc)
    return None


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (uvicorn and its children), SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    scheduler = argv[0] == "--scheduler"
    if scheduler:
        argv = argv[1:]
    for key, value in SERVER_ENV.items():
        os.environ.setdefault(key, value)
    os.environ["PREFECT_HOME"] = str(Path(os.environ["PREFECT_HOME"]).resolve())
    if os.environ.get("PREFECT_API_URL"):
        return subprocess.call(argv)
    log = Path(os.environ["PREFECT_HOME"]) / "server.log"
    started = start_server(log, scheduler=scheduler)
    if started is None and scheduler:
        print(f"flows.server: the Prefect server did not start (see {log}); scheduled runs need it",
              file=sys.stderr)
        return 1
    if started is None:
        print(f"flows.server: the Prefect server did not start (see {log}); the flows start their own "
              "ephemeral server instead", file=sys.stderr)
        return subprocess.call(argv)
    proc, url = started
    if scheduler:
        print(f"flows.server: Prefect server with its scheduler at {url} (log: {log}); runs: "
              f"PREFECT_API_URL={url} prefect flow-run ls", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return subprocess.call(argv, env={**os.environ, "PREFECT_API_URL": url})
    finally:
        stop_server(proc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
