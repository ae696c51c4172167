"""The one job runner of the chunk-parallel stages (train, explain, score, ROAR), where the reproducibility
contract (docs/reproducibility.md) is kept.

A stage describes its work as :class:`Job` s: a function and arguments fixed by the params and the data alone
(which samples, in which batches, which seed), never by the number of workers or by what an interrupted run has
already done. :func:`run_jobs` then

* runs each job under :func:`~xaicore.threads.compute_threads` (the same thread settings in this process and on
  any Dask worker), serially in this process or on a ``distributed.Client``, the costliest first (the order
  changes no number: jobs share nothing);
* takes the result of a job an interrupted run recorded in the stage's :class:`~xaicore.store.journal.Journal`
  instead of running it again, and records each new result there as it arrives;
* resolves :class:`Needs` arguments to the result of another job (ROAR's retrainings need their method's
  heatmaps), computed once and dropped when its last consumer has run;
* hands every result to the stage's ``on_result`` as it arrives, so memory does not grow with the jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xaicore.store.journal import Journal
from xaicore.threads import PIPELINE_THREADS, compute_threads


@dataclass(frozen=True)
class Needs:
    """An argument of a job that is the result of the job keyed ``key``."""

    key: Hashable


@dataclass(frozen=True)
class Job:
    """One unit of a stage's work: ``fn(*args)``.

    ``key`` names it to the stage (and, with ``record``, in the journal: ``str(key)`` must then be a valid file
    name); ``cost`` only orders the jobs (longest first); ``report`` is False for a job whose result only feeds
    others through :class:`Needs`."""

    key: Hashable
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    cost: float = 1.0
    record: bool = True
    report: bool = True
    needs: tuple[Hashable, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "needs", tuple(a.key for a in self.args if isinstance(a, Needs)))


@dataclass(frozen=True)
class Codec:
    """How a job's result goes into the journal (a dict of arrays) and back."""

    encode: Callable[[Any], dict[str, Any]]
    decode: Callable[[dict[str, Any]], Any]


IDENTITY = Codec(encode=lambda r: r, decode=lambda r: r)


def call_job(fn: Callable[..., Any], args: tuple[Any, ...], threads: int) -> Any:
    """``fn(*args)`` under the contract's thread settings: what runs on a worker and in this process alike."""
    with compute_threads(threads):
        return fn(*args)


def run_jobs(jobs: Sequence[Job], *, on_result: Callable[[Job, Any], None], client: Any = None,
             journal: Journal | None = None, codec: Codec = IDENTITY, threads: int = PIPELINE_THREADS,
             on_start: Callable[[int], None] | None = None) -> int:
    """Run ``jobs`` (see the module docstring); ``client`` is a ``distributed.Client`` or None for this process.
    ``on_result(job, result)`` is called once per reported job, journal hits first, in this process.
    ``on_start(n_resumed)`` is called after the journal was read. Returns the number of journal hits."""
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("run_jobs: job keys must be unique")
    by_key = {j.key: j for j in jobs}
    for j in jobs:
        missing = [k for k in j.needs if k not in by_key]
        if missing:
            raise ValueError(f"run_jobs: job {j.key!r} needs {missing}, which is no job")
    todo: list[Job] = []
    resumed = 0
    for j in jobs:
        found = journal.get(str(j.key)) if journal is not None and j.record else None
        if found is not None:
            resumed += 1
            if j.report:
                on_result(j, codec.decode(found))
        elif j.report:
            todo.append(j)
    if on_start is not None:
        on_start(resumed)
    # the jobs that feed a job still to run, and how many of those each feeds
    consumers: dict[Hashable, int] = {}
    for j in todo:
        for k in j.needs:
            consumers[k] = consumers.get(k, 0) + 1
    feeders = [by_key[k] for k in consumers]
    order = sorted(todo, key=lambda j: -j.cost)  # stable: equal costs keep the stage's order

    def finished(j: Job, result: Any) -> None:
        if journal is not None and j.record:
            journal.put(str(j.key), codec.encode(result))
        on_result(j, result)

    if client is None:
        _run_here(order, feeders, consumers, threads, finished)
    else:
        _run_on(client, order, feeders, threads, finished)
    return resumed


def _run_here(order: list[Job], feeders: list[Job], consumers: dict[Hashable, int], threads: int,
              finished: Callable[[Job, Any], None]) -> None:
    """Serially, each fed job right after the job that feeds it (whose result is then kept only while needed)."""
    results: dict[Hashable, Any] = {}
    feeder = {j.key: j for j in feeders}
    # a fed job runs where its feeder would (by the feeder's cost), so a feeder's result is not held long
    ranked = sorted(order, key=lambda j: min([-feeder[k].cost for k in j.needs], default=-j.cost))
    for j in ranked:
        for k in j.needs:
            if k not in results:
                f = feeder[k]
                results[k] = call_job(f.fn, f.args, threads)
        args = tuple(results[a.key] if isinstance(a, Needs) else a for a in j.args)
        result = call_job(j.fn, args, threads)
        for k in j.needs:
            consumers[k] -= 1
            if consumers[k] == 0:
                del results[k]
        finished(j, result)


def _run_on(client: Any, order: list[Job], feeders: list[Job], threads: int,
            finished: Callable[[Job, Any], None]) -> None:
    from distributed import as_completed

    fed = {j.key: client.submit(call_job, j.fn, j.args, threads, pure=False) for j in feeders}
    futures = {client.submit(call_job, j.fn, tuple(fed[a.key] if isinstance(a, Needs) else a for a in j.args),
                             threads, pure=False): j for j in order}
    fed.clear()  # the workers keep a feeder's result while a submitted job refers to it
    for fut in as_completed(futures, loop=client.loop):  # popped: a worker keeps a result while referenced
        finished(futures.pop(fut), fut.result())
