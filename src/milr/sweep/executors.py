"""Where a sweep's tasks run: in this process, in local worker processes, or as Ray tasks.

Every executor yields each task's (rows, trials) as it finishes; only the caller writes them.
Worker processes die with the sweep: a parent-death signal (Linux) and a watchdog thread that
exits when the parent changes; an interrupted run kills its workers before it returns.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from .tasks import TaskConfig, run_task

Runner = Callable[[Iterable[TaskConfig]], Iterator[tuple[list[dict], list[dict]]]]


def local_runner(tasks: Iterable[TaskConfig]) -> Iterator[tuple[list[dict], list[dict]]]:
    for task in tasks:
        yield run_task(task)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _watch_parent(parent: int) -> None:
    """Exit as soon as the parent is gone (re-parented): the portable fallback."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def die_with_parent(parent: int) -> None:
    """Make this process die with `parent`, even when the parent is SIGKILLed."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass  # no prctl: the watchdog alone
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="milr-parent-watchdog").start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _init_worker(threads: int, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    die_with_parent(parent)
    import torch

    torch.set_num_threads(threads)


def _kill_workers(pool) -> None:
    """Stop running tasks now: shutdown() alone would wait for them to finish."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.kill()


def _in_flight(tasks, limit: int, submit, wait, running: set):
    """Submit at most `limit` tasks at a time, taking the next config only when one finishes
    (after the caller has handled its result): a warm-started sweep's prediction for a task
    then sees every cell finished before it starts. `wait(running)` returns some finished
    handles; they are yielded as they finish. `running` (the caller's) holds what is in flight,
    so that the caller can cancel it."""
    pending = iter(tasks)
    while True:
        for task in pending:
            running.add(submit(task))
            if len(running) >= limit:
                break
        if not running:
            return
        done = wait(running)
        running.difference_update(done)
        yield from done


def process_runner(workers: int) -> Runner:
    """`workers` processes, each with an equal share of the CPU threads; results as they finish.
    A task that fails ends the run with its error, after the tasks then running have finished
    and been yielded (none of their work is lost); no further task starts."""
    import concurrent.futures as cf
    import multiprocessing as mp

    def run(tasks: Iterable[TaskConfig]) -> Iterator[tuple[list[dict], list[dict]]]:
        threads = max(1, (os.cpu_count() or 1) // workers)
        pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                      initializer=_init_worker, initargs=(threads, os.getpid()))
        finished = False
        failed: list[BaseException] = []

        def until_failure():  # after a failure no task starts; those running finish
            for task in tasks:
                if failed:
                    return
                yield task

        def first_done(running):
            return cf.wait(running, return_when=cf.FIRST_COMPLETED)[0]

        try:
            for fut in _in_flight(until_failure(), workers,
                                  lambda task: pool.submit(run_task, task), first_done, set()):
                if fut.exception() is None:
                    yield fut.result()
                else:
                    failed.append(fut.exception())
            finished = True
            if failed:  # the first failure, once every other task in flight is written
                raise failed[0]
        finally:
            if not finished:
                _kill_workers(pool)
            pool.shutdown(wait=finished, cancel_futures=True)

    return run


def ray_runner(address: str | None, gpus_per_task: float | None = None) -> Runner:
    """Tasks as Ray remote calls; the driver alone writes the store (see run_sweep)."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: pip install 'milr[ray]'") from None

    def run(tasks: Iterable[TaskConfig]) -> Iterator[tuple[list[dict], list[dict]]]:
        if not ray.is_initialized():
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        remote = ray.remote(run_task)
        # as many in flight as the cluster runs at once (see _in_flight: warm starts)
        limit = max(1, int(ray.cluster_resources().get("CPU", 1)))

        def submit(task: TaskConfig):
            device = task.config.device
            wants_gpu = device == "cuda" or (device == "auto" and has_gpu)
            gpus = (gpus_per_task or 1.0) if wants_gpu else 0
            return remote.options(num_cpus=1, num_gpus=gpus).remote(task)

        running: set = set()
        try:
            for ref in _in_flight(tasks, limit, submit,
                                  lambda refs: ray.wait(list(refs), num_returns=1)[0], running):
                yield ray.get(ref)
        finally:
            for ref in running:
                ray.cancel(ref)

    return run


def check_runner(workers: int = 1, ray: str | None = None,
                 gpus_per_cell: float | None = None) -> None:
    """Refuse, in one line, executor options that do not fit together (`milr sweep`'s)."""
    from importlib.util import find_spec

    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers}")
    if gpus_per_cell is not None and not 0 < gpus_per_cell <= 1:
        raise ValueError(f"gpus-per-cell must lie in (0, 1], got {gpus_per_cell}")
    if gpus_per_cell is not None and ray is None:
        raise ValueError(f"--gpus-per-cell {gpus_per_cell} needs --ray (local workers and "
                         "this process use the device the config names)")
    if ray is not None and workers != 1:
        raise ValueError(f"--workers {workers} does not apply with --ray (Ray places the "
                         "cells on its cluster's CPUs); drop one of them")
    if ray is not None and find_spec("ray") is None:
        raise ValueError("--ray needs Ray: pip install 'milr[ray]'")


def make_runner(workers: int = 1, ray: str | None = None,
                gpus_per_cell: float | None = None) -> Runner:
    """The executor `milr sweep` runs with: this process (workers 1), `workers` local processes,
    or Ray (`ray`: "local" starts a local cluster, else a cluster address; `gpus_per_cell`: the
    GPU share of a cell there)."""
    check_runner(workers, ray, gpus_per_cell)
    if ray is not None:
        return ray_runner(None if ray == "local" else ray, gpus_per_cell)
    return process_runner(workers) if workers > 1 else local_runner
