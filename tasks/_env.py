"""Environment for running offline and serverless; imported before prefect/mlflow/dvc are."""

from __future__ import annotations

import os
from pathlib import Path


def configure(root: Path | None = None) -> None:
    """Prefect in ephemeral mode with its home in the project, no analytics/telemetry, numba cache local."""
    root = root or Path.cwd()
    defaults = {
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "NUMBA_CACHE_DIR": str(root / ".numba_cache"),
        "TQDM_MININTERVAL": "2",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


configure()

from xaicore._malloc import keep_freed_memory  # noqa: E402  (after configure: importing xaicore imports numba)

keep_freed_memory()
