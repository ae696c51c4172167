"""The Dask cluster the chunk-parallel stages (explain, score) run on, and the thread setup of its workers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

from xaicore._malloc import keep_freed_memory


def one_thread() -> None:
    """One thread for torch *and* numba in a Dask worker: the workers already fill the cores, and numba's parallel
    kernels would otherwise start a thread per core in every worker (measured: 5 s of system time per 6 chunks)."""
    import numba

    keep_freed_memory()
    torch.set_num_threads(1)
    numba.set_num_threads(1)


@contextlib.contextmanager
def dask_client(workers: int, scheduler: str | None) -> Iterator[Any]:
    """A ``distributed.Client`` on ``scheduler``, or on a local cluster of ``workers`` one-thread process
    workers; ``None`` (run in this process) when ``workers`` is 0 and no scheduler is named."""
    if scheduler is None and workers == 0:
        yield None
        return
    from distributed import Client, LocalCluster

    for name in ["distributed", *logging.root.manager.loggerDict]:  # Prefect may have set child levels
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client
