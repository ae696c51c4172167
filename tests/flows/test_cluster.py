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

            from xaicore.threads import compute_threads

            with compute_threads():
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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], cwd, env=None):
    import subprocess
    import sys

    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    return subprocess.Popen([dask, *args], cwd=cwd, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
@pytest.mark.hostdep
def test_an_external_cluster_scores_bitwise_like_the_in_process_run(tiny_survey, tiny_cfg, tmp_path):
    """A `dask scheduler` and two `dask worker` processes started apart from the run (ports on localhost), named
    by score.scheduler: the scores archive equals the one scored in process, byte for byte. A worker that cannot
    import xaicore is then refused with one error naming it."""
    import dataclasses
    import json
    import shutil

    from tests.flows.test_pipeline import tree_digest
    from xaicore.errors import XaiCoreError
    from xaicore.pipeline import Paths, score_heatmaps

    address = f"tcp://127.0.0.1:{_free_port()}"
    procs = [_start(["scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard"],
                    tmp_path)]
    try:
        procs += [_start(["worker", address, "--nthreads", "1", "--no-dashboard", "--name", f"w{i}"], tmp_path)
                  for i in range(2)]
        paths = Paths(tmp_path / "outputs")
        shutil.copytree(tiny_survey.root, paths.root, ignore=shutil.ignore_patterns("scores.zarr", "mlflow*"))
        cfg = dataclasses.replace(tiny_cfg, score=dataclasses.replace(tiny_cfg.score, scheduler=address))
        score_heatmaps(cfg, paths, progress=False)
        metadata = {"zarr.json", "xaicore_manifest/zarr.json"}  # the root's attrs record score.scheduler
        ours, theirs = tree_digest(paths.scores), tree_digest(tiny_survey.scores)
        assert {k: v for k, v in ours.items() if k not in metadata} == \
            {k: v for k, v in theirs.items() if k not in metadata}
        attrs = [json.loads((p / "zarr.json").read_text())["attributes"] for p in (paths.scores, tiny_survey.scores)]
        for a in attrs:
            a["params"] = json.loads(a["params"])
            a["params"]["score"].pop("scheduler")
        assert attrs[0] == attrs[1]

        blocker = tmp_path / "no_xaicore"
        blocker.mkdir()
        (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['xaicore'] = None  # not installed\n")
        procs.append(_start(["worker", address, "--nthreads", "1", "--no-dashboard", "--name", "bare"], tmp_path,
                            env={"PYTHONPATH": str(blocker)}))
        from distributed import Client

        with contextlib.closing(Client(address, set_as_default=False)) as client:
            client.wait_for_workers(3, timeout=60)
        with pytest.raises(XaiCoreError, match=rf"1 of the 3 Dask workers at {address} cannot run xaicore .*'s jobs "
                                               r"\(tcp://.*: (ModuleNotFoundError|ImportError): .*xaicore.*\); "
                                               r"install this project in the workers' environment"):
            score_heatmaps(cfg, paths, progress=False)
    finally:
        for p in procs:
            p.kill()
            p.wait()
