"""Independent cached runs in parallel worker processes (the notebooks' many small runs).

A notebook trains dozens of small, independent runs (seeds x variants x splits), each
cached in its own run folder under ``runs/``. On a machine with few cores one small CPU
training does not use two intra-op threads well: on this project's 2-core machine two
single-threaded stage-1 runs side by side do 1.47x the work of one two-threaded run
(forward + backward of the CPU backbone alone: 1.40x). :func:`run_jobs` therefore runs
the *training* part of an experiment first, as :class:`Job` s in ``workers`` spawned
processes with ``threads`` intra-op threads each; the experiment then loads every run
from its folder and evaluates it in the calling process, exactly as after a sequential
run. Results are discarded in the workers: the run folders are the hand-over.

Threads and numbers: a CPU training's floating-point sums depend on the number of
intra-op threads, so the metrics of a seed are a function of ``threads`` (1 under
``make reproduce``'s two workers on 2 cores). ``workers=0`` trains in the calling
process with torch's thread setting, as before this module existed.

Workers are *spawned* (a fork of a process that already ran torch's OpenMP threads is not
safe): a script that calls an experiment with ``workers > 0`` needs the usual
``if __name__ == "__main__":`` guard; notebooks need nothing.
"""

from __future__ import annotations

import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

__all__ = ["WORKER_ENV", "Job", "run_jobs", "run_jobs_timed", "threads_per_worker"]


@dataclass(frozen=True)
class Job:
    """One cached computation for :func:`run_jobs`.

    Attributes:
        key: unique name (the run folder, for messages and dependencies); jobs with
            the same key are run once.
        fn: a module-level function (picklable); called as ``fn(*args, **kwargs)``, its
            return value is discarded, so it must write its result to a cache that the
            caller reads afterwards (a run folder).
        args / kwargs: its arguments (tensors travel through shared memory).
        after: keys of jobs that must have finished first (a stage-2 run after the
            stage-1 run it starts from); keys not in the job list are ignored.
        cost: relative cost; ready jobs start largest first, so that the last job
            running alone is a short one.
    """

    key: str
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    after: tuple[str, ...] = ()
    cost: float = 1.0


def threads_per_worker(workers: int) -> int:
    """Intra-op threads of each of ``workers`` processes: the cores divided among them
    (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


#: Environment of the worker processes (``{n}``: threads per worker), set while they are
#: spawned. Jaccard's numba kernels run OpenMP teams of their own: with numba's default
#: (every core) in each of two 1-thread workers, the libgomp threads of those teams spin
#: beside torch's and a stage-1 run trained 3-5x slower (measured); idle OpenMP threads
#: sleep at once (PASSIVE) since no worker has spare cores to spin on.
WORKER_ENV: dict[str, str] = {
    "OMP_NUM_THREADS": "{n}",
    "MKL_NUM_THREADS": "{n}",
    "OPENBLAS_NUM_THREADS": "{n}",
    "NUMBA_NUM_THREADS": "{n}",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:  # numba read NUMBA_NUM_THREADS at import; this covers a worker that imported it before
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover - numba is a dependency
        pass


@contextmanager
def _environment(values: dict[str, str]):
    """``os.environ`` updated with ``values`` inside the block (spawned children inherit it)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _call(fn: Callable[..., Any], args: tuple, kwargs: dict) -> float:
    t0 = time.time()
    try:
        fn(*args, **kwargs)
    except BaseException as e:  # the worker's traceback, for the caller's message
        raise RuntimeError(f"{type(e).__name__}: {e}\n{traceback.format_exc()}") from None
    return time.time() - t0


def run_jobs(
    jobs: Sequence[Job],
    workers: int,
    threads: int | None = None,
    progress: bool = True,
    desc: str = "runs",
) -> dict[str, float]:
    """Run ``jobs`` in ``workers`` spawned processes, each job after the jobs named in
    its ``after``; returns ``{key: seconds}``.

    ``workers <= 0`` runs nothing (the caller trains in-process as it always did) and
    returns ``{}``. ``threads``: intra-op threads per worker (default
    :func:`threads_per_worker`).

    Raises:
        ValueError: a dependency cycle.
        RuntimeError: a job failed; the message names its key and carries the worker's
            traceback (the other running jobs finish first, nothing new starts).
    """
    if workers <= 0 or not jobs:
        return {}
    import torch.multiprocessing as mp

    todo: dict[str, Job] = {}
    for j in jobs:
        todo.setdefault(j.key, j)
    deps = {k: {d for d in j.after if d in todo and d != k} for k, j in todo.items()}
    threads = threads_per_worker(workers) if threads is None else int(threads)
    done: dict[str, float] = {}
    running: dict[Future, str] = {}
    bar = tqdm(total=len(todo), desc=f"{desc} ({workers} workers x {threads} threads)", disable=not progress)
    ctx = mp.get_context("spawn")
    env = {k: v.format(n=threads) for k, v in WORKER_ENV.items()}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,))
    with _environment(env), pool:
        while todo or running:
            ready = sorted((k for k in todo if not (deps[k] - done.keys())), key=lambda k: -todo[k].cost)
            for k in ready[: max(0, workers - len(running))]:
                j = todo.pop(k)
                running[pool.submit(_call, j.fn, j.args, j.kwargs)] = k
            if not running:
                raise ValueError(f"run_jobs: dependency cycle among {sorted(todo)}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                k = running.pop(f)
                try:
                    done[k] = f.result()
                except Exception as e:
                    wait(running)  # the other running jobs finish (their run folders stay consistent)
                    raise RuntimeError(f"run_jobs: job {k!r} failed: {e}") from None
                bar.update(1)
    bar.close()
    return done


def run_jobs_timed(jobs: Sequence[Job], workers: int, progress: bool = True, desc: str = "runs") -> float | None:
    """:func:`run_jobs`, timed: its wall seconds, or None when nothing ran in workers
    (``workers <= 0`` or no jobs), for an experiment's ``seconds``."""
    t0 = time.time()
    return time.time() - t0 if run_jobs(jobs, workers, progress=progress, desc=desc) else None
