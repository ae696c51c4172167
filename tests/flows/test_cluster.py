"""The local Dask cluster of the explain, score and roar stages: started in the background while the stage
prepares its jobs, its settings reach the workers, and a failed start is raised, not swallowed."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest

import xaicore.pipeline.cluster as cluster
from xaicore.pipeline.cluster import LOCAL_CLUSTER_CONFIG, dask_client_starting


def test_background_start_gives_a_working_client_with_the_cluster_settings():
    """Dask's profiler is off in the workers, and numba starts one pool thread there, set in the worker's
    environment only: this process's numba (here two threads) must not see its environment change, or it refuses
    to compile ("Cannot set NUMBA_NUM_THREADS to a different value once the threads have been launched")."""
    import numba
    import numpy as np

    @numba.njit(parallel=True)
    def total(a):
        s = 0.0
        for i in numba.prange(a.shape[0]):
            s += a[i]
        return s

    assert total(np.ones(100)) == 100.0  # this process's numba pool is running
    before = os.environ.get("NUMBA_NUM_THREADS")
    main = threading.get_ident()
    with dask_client_starting(1, None) as starting:
        client = starting.result(timeout=120)

        def probe() -> tuple:
            import dask
            import numba

            from xaicore.pipeline.cluster import one_thread

            one_thread()
            return (dask.config.get("distributed.worker.profile.enabled"), os.environ.get("NUMBA_NUM_THREADS"),
                    numba.config.NUMBA_NUM_THREADS, numba.get_num_threads())

        assert client.submit(probe, pure=False).result() == (False, "1", 1, 1)
        assert threading.get_ident() == main
    assert client.status == "closed"
    assert os.environ.get("NUMBA_NUM_THREADS") == before

    @numba.njit
    def plus_one(v):
        return v + 1

    assert plus_one(1) == 2  # compiling reads the environment again, and raises had it changed
    assert LOCAL_CLUSTER_CONFIG["distributed.worker.profile.enabled"] is False


def test_no_cluster_when_no_workers_and_no_scheduler():
    with dask_client_starting(0, None) as starting:
        assert starting.result() is None


def test_a_failed_start_is_raised_by_result_and_the_block_still_exits(monkeypatch):
    @contextlib.contextmanager
    def broken(workers, scheduler):
        raise RuntimeError("Nanny failed to start")
        yield  # pragma: no cover

    monkeypatch.setattr(cluster, "dask_client", broken)
    with dask_client_starting(2, None) as starting, pytest.raises(RuntimeError, match="Nanny failed to start"):
        starting.result(timeout=30)


def test_an_error_while_the_cluster_starts_closes_it_once_started(monkeypatch):
    events = []

    @contextlib.contextmanager
    def slow(workers, scheduler):
        events.append("started")
        yield "client"
        events.append("closed")

    monkeypatch.setattr(cluster, "dask_client", slow)
    with pytest.raises(ValueError, match="bad job list"), dask_client_starting(2, None):
        raise ValueError("bad job list")
    assert events == ["started", "closed"]
