"""The one job runner (xaicore.pipeline.runner) and the thread settings it keeps: every job runs under the same
threads wherever it runs, journal hits are not run again, fed jobs get their feeder's result, and a parallel run
reports what a serial one does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaicore.pipeline.cluster import dask_client
from xaicore.pipeline.runner import Job, Needs, run_jobs
from xaicore.store.journal import Journal
from xaicore.threads import compute_threads

pytestmark = pytest.mark.hostdep


def settings(tag: int) -> dict[str, np.ndarray]:
    """A job that reports the thread settings it ran under."""
    import numba
    from threadpoolctl import threadpool_info

    blas = [i["num_threads"] for i in threadpool_info()]
    return {"tag": np.int64(tag), "torch": np.int64(torch.get_num_threads()),
            "numba": np.int64(numba.get_num_threads()), "blas_max": np.int64(max(blas, default=1))}


def square(v: int) -> int:
    return v * v


def plus(fed: int, v: int) -> dict[str, np.ndarray]:
    return {"value": np.int64(fed + v)}


def test_compute_threads_sets_and_restores_every_pool():
    import numba

    before = torch.get_num_threads(), numba.get_num_threads()
    with compute_threads(1):
        inside = settings(0)
    assert (int(inside["torch"]), int(inside["numba"]), int(inside["blas_max"])) == (1, 1, 1)
    assert (torch.get_num_threads(), numba.get_num_threads()) == before
    with pytest.raises(ValueError, match="at least one thread"):
        with compute_threads(0):
            pass


def test_jobs_run_under_one_thread_in_this_process_whatever_it_had():
    torch.set_num_threads(2)
    try:
        got = {}
        run_jobs([Job(i, settings, (i,)) for i in range(3)], on_result=lambda j, r: got.update({j.key: r}))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert sorted(got) == [0, 1, 2]
    assert all(int(r["torch"]) == 1 and int(r["numba"]) == 1 and int(r["blas_max"]) == 1 for r in got.values())


def test_journal_hits_are_reported_and_not_run_again(tmp_path):
    journal = Journal(tmp_path / "j", "key-1")
    journal.put("b", {"value": np.int64(-7)})  # an interrupted run finished job b
    calls, got = [], {}

    def counted(v: int) -> dict[str, np.ndarray]:
        calls.append(v)
        return {"value": np.int64(v)}

    resumed = run_jobs([Job(k, counted, (v,)) for k, v in (("a", 1), ("b", 2), ("c", 3))], journal=journal,
                       on_result=lambda j, r: got.update({j.key: int(r["value"])}))
    assert resumed == 1 and sorted(calls) == [1, 3]
    assert got == {"a": 1, "b": -7, "c": 3}
    assert sorted(journal.names()) == ["a", "b", "c"]  # the new results were recorded


def test_fed_jobs_get_their_feeders_result_once():
    feeds = [Job(f"sq-{v}", square, (v,), record=False, report=False) for v in (2, 3)]
    fed = [Job(f"{v}+{w}", plus, (Needs(f"sq-{v}"), w)) for v in (2, 3) for w in (10, 20)]
    got = {}
    run_jobs(feeds + fed, on_result=lambda j, r: got.update({j.key: int(r["value"])}))
    assert got == {"2+10": 14, "2+20": 24, "3+10": 19, "3+20": 29}
    with pytest.raises(ValueError, match="needs"):
        run_jobs([Job("x", plus, (Needs("nothing"), 1))], on_result=lambda j, r: None)
    with pytest.raises(ValueError, match="unique"):
        run_jobs([Job("x", square, (1,)), Job("x", square, (2,))], on_result=lambda j, r: None)


@pytest.mark.slow
def test_a_local_cluster_reports_what_this_process_does():
    """The same jobs, fed and plain, on two Dask workers: the same results, each job on one thread."""
    feeds = [Job(f"sq-{v}", square, (v,), record=False, report=False) for v in (2, 3)]
    jobs = feeds + [Job(f"{v}+{w}", plus, (Needs(f"sq-{v}"), w)) for v in (2, 3) for w in (10, 20)] + \
        [Job(f"t{i}", settings, (i,), cost=float(i)) for i in range(3)]
    here, there = {}, {}
    run_jobs(jobs, on_result=lambda j, r: here.update({j.key: {k: int(v) for k, v in r.items()}}))
    with dask_client(2, None) as client:
        run_jobs(jobs, on_result=lambda j, r: there.update({j.key: {k: int(v) for k, v in r.items()}}),
                 client=client)
    assert here == there
    assert all(r["torch"] == 1 and r["numba"] == 1 for k, r in there.items() if k.startswith("t"))
