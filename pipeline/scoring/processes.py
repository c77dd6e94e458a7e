"""Run a scorer's per-song CPU work in worker processes (numpy work that holds the GIL)."""

from __future__ import annotations

from typing import Callable

MIN_JOBS_PER_WORKER = 8  # fewer songs than this a worker are measured faster than processes start (about 1 s)


def use_processes(jobs: int, workers: int) -> bool:
    """Whether `jobs` songs are worth `workers` worker processes."""
    return workers > 1 and jobs >= MIN_JOBS_PER_WORKER * workers


def map_in_processes(function: Callable, jobs: list, workers: int) -> list:
    """function(job) for every job, in order, in `workers` spawned processes: spawned, since forking
    a parent that holds torch threads is unsafe; in small chunks, so the pool stays balanced to the end.
    `function` and the jobs must pickle (a module-level function and plain data)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(function, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
