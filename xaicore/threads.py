"""The thread settings every computing process of the pipeline runs under, set and restored in one place.

The number of intra-op threads can change the last bits of a result on some CPUs (linear layers on AVX-512/AMX
Xeons, measured), so the reproducibility contract (docs/reproducibility.md) fixes it: each pipeline stage and
each of its jobs runs inside :func:`compute_threads`, in this process or on a Dask worker alike.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

import torch

from xaicore._malloc import keep_freed_memory

P = ParamSpec("P")
R = TypeVar("R")

#: the intra-op threads of every pipeline computation: one, whatever runs it (the workers fill the cores)
PIPELINE_THREADS = 1


@contextlib.contextmanager
def compute_threads(n: int = PIPELINE_THREADS) -> Iterator[None]:
    """Run the block with ``n`` threads for torch (intra-op, its OpenMP/MKL), numba's parallel kernels and the
    BLAS of numpy/scipy (threadpoolctl); what was set before is restored on leaving, also on an error."""
    import numba
    from threadpoolctl import threadpool_limits

    if n < 1:
        raise ValueError(f"compute_threads needs at least one thread, got {n}")
    # a Dask worker's NUMBA_NUM_THREADS (cluster.LOCAL_CLUSTER_CONFIG) is set after spawning, and numba may have
    # been imported before it: read it before numba's pool starts (a no-op where it already has)
    numba.config.reload_config()
    keep_freed_memory()
    saved_torch, saved_numba = torch.get_num_threads(), numba.get_num_threads()
    with threadpool_limits(limits=n):
        torch.set_num_threads(n)
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        try:
            yield
        finally:
            torch.set_num_threads(saved_torch)
            numba.set_num_threads(saved_numba)


def with_compute_threads(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a pipeline stage so that all of it runs inside :func:`compute_threads`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with compute_threads():
            return fn(*args, **kwargs)

    return wrapper
