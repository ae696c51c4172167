"""Prefect flows: wiring only. One flow per DVC stage, and ``survey_flow`` chaining them all."""

from tasks import _env  # noqa: F401  (offline, serverless Prefect before prefect is imported)
