"""The Dask cluster the chunk-parallel stages (explain, score, roar) run on, and the thread setup of its workers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from xaicore._version import __version__
from xaicore.errors import XaiCoreError

WORKER_WAIT_S = 60  # how long a named scheduler may take to have its first worker

# Dask's settings for a local cluster of one-thread workers running long numeric jobs, each measured on the explain
# stage's perturbation methods on 2 cores (benchmarks/dask_explain.py, docs/benchmarks.md):
# * the statistical profiler samples the running job's stack every 10 ms and takes the GIL to do it (nn.Module call
#   stacks are deep): off;
# * numba starts its thread pool (OpenMP here) at NUMBA_NUM_THREADS (= the cores) threads, and a pool thread kept
#   spinning beside the job (3 s per worker per minute) although the job asks numba for one thread: one pool thread
#   per worker. Set in the worker process only (``nanny.environ``): ``pre-spawn-environ`` would also set it in this
#   process, whose numba may have started its pool already, and numba refuses to compile after such a change;
# * work stealing balances per-worker queues every 100 ms, while the scheduler queues these independent jobs
#   itself: off; the system and memory monitors poll less often.
# A cluster named by ``score.scheduler`` keeps its own settings.
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.environ.NUMBA_NUM_THREADS": 1,
    "distributed.scheduler.work-stealing": False,
    "distributed.admin.system-monitor.interval": "1s",
    "distributed.admin.system-monitor.disk": False,
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.worker.memory.monitor-interval": "500ms",
}


@contextlib.contextmanager
def dask_client(workers: int, scheduler: str | None) -> Iterator[Any]:
    """A ``distributed.Client`` on ``scheduler``, or on a local cluster of ``workers`` one-thread process
    workers; ``None`` (run in this process) when ``workers`` is 0 and no scheduler is named."""
    if scheduler is None and workers == 0:
        yield None
        return
    import dask
    from distributed import Client, LocalCluster

    for name in ["distributed", *logging.root.manager.loggerDict]:  # Prefect may have set child levels
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(logging.ERROR)
    # not ``with Client(...)``: that sets a context variable, and dask_client_starting enters this in one thread
    # and leaves it in another
    if scheduler is not None:
        try:
            client = Client(scheduler, set_as_default=False, timeout="20s")
        except OSError as e:
            raise XaiCoreError(f"cannot reach the Dask scheduler at {scheduler} (score.scheduler): "
                               f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        with contextlib.closing(client):
            check_workers(client, scheduler)
            yield client
        return
    with dask.config.set(LOCAL_CLUSTER_CONFIG), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                         silence_logs=logging.ERROR) as cluster, \
            contextlib.closing(Client(cluster, set_as_default=False)) as client:
        yield client


def check_workers(client: Any, scheduler: str) -> None:
    """A cluster this run did not start must have workers that run this xaicore: each imports it and reports its
    version (``eval`` travels by reference, so the probe itself needs nothing installed), else one error names a
    failing worker and what to install."""
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        raise XaiCoreError(f"the Dask scheduler at {scheduler} has no workers (waited {WORKER_WAIT_S} s); start "
                           f"some: dask worker {scheduler} --nthreads 1") from None
    found = client.run(eval, "__import__('xaicore').__version__", on_error="return")
    bad = {w: v for w, v in sorted(found.items()) if v != __version__}
    if bad:
        worker, got = next(iter(bad.items()))
        what = f"{type(got).__name__}: {got}" if isinstance(got, BaseException) else f"it has xaicore {got}"
        raise XaiCoreError(f"{len(bad)} of the {len(found)} Dask workers at {scheduler} cannot run xaicore "
                           f"{__version__}'s jobs ({worker}: {what}); install this project in the workers' "
                           "environment (pip install -e . in a checkout of the same commit)")


@contextlib.contextmanager
def dask_client_starting(workers: int, scheduler: str | None) -> Iterator[Future]:
    """:func:`dask_client`, started in a background thread: yields a future of the client (``None`` for no
    cluster), so that this process prepares its jobs while the workers start (a local cluster of 2 takes 6-8 s
    on 2 cores). ``future.result()`` waits for it and raises what the start raised. Leaving the block waits for
    a start still under way, then closes the cluster."""
    stack = contextlib.ExitStack()
    pool = ThreadPoolExecutor(1, thread_name_prefix="xaicore-dask-start")
    future = pool.submit(stack.enter_context, dask_client(workers, scheduler))
    pool.shutdown(wait=False)
    try:
        yield future
    finally:
        if future.exception() is None:  # waits for a start still under way
            stack.close()
