"""Depth × width sweeps: a grid -> the (cell, seed) pairs still missing from the results file ->
tasks run by an executor -> rows appended as each task finishes.

The results file (`store.ResultStore`) is the only state: a rerun reads it back, refuses it if it
was written with different fixed parameters, and runs exactly the (cell, seed) pairs missing or
`unfinished` (a rerun appends a new row; the last row of a seed counts). A run holds the file's
lock throughout; planning alone (`--dry-run`) reads only. SIGTERM stops a run as Ctrl-C does.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..base.config import EstimateConfig
from ..base.cost import scan_bound_tflop, search_bound_tflop
from ..base.results import aggregate, ok_values
from ..base.spec import identities as spec_identities
from ..base.spec import is_spec, sha256_column
from ..data.lookup import identities
from .executors import Runner, local_runner
from .grid import Grid
from .store import (
    LOCK_SUFFIX,
    ResultStore,
    StoreError,
    TrialsLog,
    counted_rows,
    done_keys,
    duplicates,
    key_text,
    protocol_of,
    row_key,
)
from .tasks import TaskConfig, sources


@dataclass(frozen=True)
class Task:
    """Some seeds of one cell: seeds seed, seed + 1, ..., seed + count - 1."""

    depth: int
    width: int
    seed: int
    count: int


def pending_tasks(grid: Grid, done: set[tuple]) -> list[Task]:
    """The missing (cell, seed) pairs, grouped into runs of consecutive seeds per cell; a scan
    grid's cells not in `done` (`done_cells`), each one task of all its seeds."""
    if grid.scan is not None:
        return [Task(d, w, c.seed, c.seeds) for d, w in grid.cells
                if (d, w, (c := grid.config(d, w)).seed, c.seeds) not in done]
    tasks = []
    for d, w in grid.cells:
        cfg = grid.config(d, w)
        missing = [s for s in range(cfg.seed, cfg.seed + cfg.seeds) if (d, w, s) not in done]
        while missing:
            run = 1
            while run < len(missing) and missing[run] == missing[0] + run:
                run += 1
            tasks.append(Task(d, w, missing[0], run))
            missing = missing[run:]
    return tasks


def task_config(grid: Grid, task: Task) -> EstimateConfig:
    cfg = grid.config(task.depth, task.width)
    return EstimateConfig(**{**cfg.row(), "seed": task.seed, "seeds": task.count})


def task_cost_tflop(grid: Grid, task: Task) -> float:
    """A rough upper bound on a task's work (the dry run's column): a scan's members (rates ×
    seeds) for the whole budget, a search's bound per seed."""
    cfg = task_config(grid, task)
    if grid.scan is None:
        return search_bound_tflop(cfg)
    from ..engine.scan import scan_grid  # numpy only

    return scan_bound_tflop(cfg, len(scan_grid(cfg.lr_min, cfg.lr_max,
                                               grid.scan.points_per_octave)))


def done_cells(rows: list[dict]) -> set[tuple[int, int, int, int]]:
    """The scans stored: (depth, width, first seed, seeds) of every row, superseded or not. A
    grid scans a cell again only where no row has its seed count (the new row then counts);
    one stored with that count is reused, as a search reuses every seed it has stored."""
    return {(*row_key(r), int(r["seeds"])) for r in rows}


def grid_protocol(grid: Grid) -> dict:
    """What a sweep's trials log records as its protocol: the fixed fields, and a scan grid's
    measure and settings (a search log's header has no measure: search, as older ones)."""
    protocol = protocol_of(grid.config(*grid.cells[0]).row())
    return protocol if grid.scan is None else {**protocol, "measure": "scan",
                                               **asdict(grid.scan)}


@dataclass
class SweepReport:
    cells: int  # cells in the grid
    done_before: int  # rows already in the store
    ran: int  # rows added now
    repaired: bool  # a half-written last line was removed
    rows: list[dict]  # the row that counts for every (cell, seed) of the store afterwards


@dataclass
class Plan:
    """What a sweep will do: the store, its rows, the missing tasks; `locked`: ready to run."""

    store: ResultStore
    rows: list[dict]
    tasks: list[Task]
    trials: TrialsLog | None = None
    notes: list[str] = field(default_factory=list)  # repairs and duplicates, one line each
    locked: bool = False
    code: dict | None = None  # the identities rows and tasks must reproduce (`_code`)

    def release(self) -> None:
        """Give up the locks taken by `plan_sweep(lock=True)`."""
        for log in (self.store, self.trials):
            if log is not None:
                log.lock.release()
        self.locked = False


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be: a sweep stops the same way (rows kept)."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` for the duration (main thread only)."""
    def stop(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Defer SIGINT and SIGTERM while a task's rows and trials are written, so that both are.

    The handlers meanwhile only note a signal; it is raised again after the block, under the
    handlers of before. (A signal mask would not do: it holds the signal for one thread, and
    another one - torch's, the executor's, Ray's - receives it; Python then runs the handler in
    the main thread, inside the block.) Off the main thread no handler can be installed: the
    block then runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def note(signum, frame):
        caught.append(signum)

    held = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, note) for s in held}
    try:
        yield
    finally:
        for s in held:  # None: a handler not set from Python, which cannot be put back
            signal.signal(s, signal.SIG_DFL if old[s] is None else old[s])
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)


def check_paths(out: str | os.PathLike, trials_path: str | os.PathLike | None) -> None:
    """Refuse a trials log that is the results file (or its lock) under another spelling."""
    if trials_path is None:
        return
    t = Path(trials_path)
    for p in (Path(out), Path(f"{out}{LOCK_SUFFIX}")):
        same = t.resolve() == p.resolve() or (t.exists() and p.exists() and t.samefile(p))
        if same:
            raise StoreError(f"--trials {trials_path} is the same file as {p}; "
                             "give the trials log its own path")


def check_not_locks(out: str | os.PathLike, trials_path: str | os.PathLike | None) -> None:
    """Refuse a lock file's name for the results or the trials: a sweep of `q.csv.lock` would
    hold that file's flock for its whole run, and so block every sweep of `q.csv`."""
    for option, path in (("--out", out), ("--trials", trials_path)):
        if path is not None and (f"{path}".endswith(LOCK_SUFFIX)
                                 or os.path.realpath(path).endswith(LOCK_SUFFIX)):
            raise StoreError(f"{option} {path}: a name ending in {LOCK_SUFFIX} is a lock file's "
                             f"(milr locks r.csv with r.csv{LOCK_SUFFIX}); give another name")


def _lock_and_repair(store: ResultStore, trials: TrialsLog | None) -> list[str]:
    """Take the locks, then cut torn last lines; returns what was repaired."""
    notes = []
    for log in (store, trials):
        if log is None:
            continue
        log.lock.acquire()
        if log.repair():
            notes.append(f"repaired {log.path}: removed a half-written last line")
    return notes


def _duplicate_note(store: ResultStore, rows: list[dict]) -> list[str]:
    dup = duplicates(rows)
    if not dup:
        return []
    keys = ", ".join(map(key_text, dup[:5]))
    more = f" and {len(dup) - 5} more" if len(dup) > 5 else ""
    return [f"warning: {store.path} has several rows for {keys}{more}; the last of each counts, "
            "remove the others by hand"]


def _code(cfg: EstimateConfig, data: bool) -> dict:
    """What rows and tasks must reproduce (`lookup.identities`, which calls a data function);
    without `data`, the code's alone: a data function's hash is of the arrays it returns."""
    if data:
        return identities(cfg)
    code = spec_identities(cfg)
    if is_spec(cfg.dataset):
        del code[sha256_column("dataset")]
    return code


def plan_sweep(grid: Grid, out: str | os.PathLike, trials_path: str | os.PathLike | None = None,
               lock: bool = False, data: bool = True) -> Plan:
    """Read `out`, refuse it if it is not ours or its fixed parameters differ from the grid's,
    list what's missing. `lock`: also take the locks and repair torn lines (to run the plan).
    Without `data` (a dry run) a data function is not called, and its hash not compared."""
    check_paths(out, trials_path)
    check_not_locks(out, trials_path)
    store = ResultStore(out, grid.measure)
    trials = TrialsLog(trials_path, grid_protocol(grid)) if trials_path is not None else None
    store.rows()  # read only: refuse what is not ours before anything is written
    if trials is not None:
        trials.check()
    plan = Plan(store, [], [], trials, locked=lock)
    try:
        if lock:  # a file we may not append to must fail now, not after the first cell
            for path in (out, trials_path):
                if path is not None and Path(path).exists():
                    open(path, "ab").close()
        plan.notes = _lock_and_repair(store, trials) if lock else []
        plan.rows = store.rows()
        first = grid.config(*grid.cells[0])
        plan.code = _code(first, data) if plan.rows else None  # once, for rows and tasks
        store.check_compatible(plan.rows, first, grid.lambda1_samples, grid.scan,
                               plan.code or {})
        if plan.rows and not data and is_spec(first.dataset):
            plan.notes.append(f"{store.path}: its rows' dataset_sha256 (the data function's "
                              "arrays) is compared when the sweep runs; a dry run does not call "
                              "the function")
        if trials is not None:  # its trials against the rows they explain
            plan.notes += trials.coverage(plan.rows, store.path)
    except BaseException:
        plan.release()
        raise
    plan.notes += _duplicate_note(store, plan.rows)
    plan.tasks = pending_tasks(grid, done_keys(plan.rows) if grid.scan is None
                               else done_cells(plan.rows))
    if plan.code is None and plan.tasks:
        plan.code = _code(first, data)
    return plan


def _write(plan: Plan, rows: list[dict], trials: list[dict]) -> None:
    """Rows first, then their trials: a trial is never logged without its row."""
    with signals_deferred():
        plan.store.append(rows)
        if plan.trials is not None:
            plan.trials.append(trials)


def run_sweep(grid: Grid, out: str | os.PathLike, runner: Runner = local_runner,
              trials_path: str | os.PathLike | None = None,
              on_task: Callable[[int, int, list[dict]], None] | None = None,
              plan: Plan | None = None, full_eval: bool | None = None) -> SweepReport:
    """Run every missing (cell, seed) of `grid`, appending rows to `out` as each task finishes.

    `full_eval`: every evaluation sees the whole validation set (`TaskConfig`). `plan` is
    `plan_sweep(grid, out, trials_path, lock=True)` when the caller has already made it (to
    show it first); an unlocked plan is made again under the lock. The locks are released
    at the end.
    """
    if plan is None or not plan.locked:
        plan = plan_sweep(grid, out, trials_path, lock=True)
    try:
        return _run(grid, plan, runner, on_task, full_eval)
    finally:
        plan.release()


def predict_lr_star(rows: list[dict], depth: int, width: int) -> float | None:
    """Where η* of (depth, width) should lie, from the cells done: log η* fitted on log depth and
    log width over their seed medians (with 4 or more cells that vary in both), else the nearest
    cell's median; None before any cell has an η*."""
    import numpy as np

    cells = {(c.depth, c.width): c.value for c in aggregate(ok_values(rows), rows)}
    if not cells:
        return None
    keys = list(cells)
    x = np.array([[1.0, np.log(d), np.log(w)] for d, w in keys])
    y = np.log([cells[k] for k in keys])
    if len(keys) >= 4 and np.linalg.matrix_rank(x) == 3:
        beta, *_ = np.linalg.lstsq(x, y, rcond=None)
        return float(np.exp(beta @ [1.0, np.log(depth), np.log(width)]))
    near = min(keys, key=lambda k: np.hypot(np.log(k[0] / depth), np.log(k[1] / width)))
    return cells[near]


def _configs(grid: Grid, plan: Plan, done: list[dict], full_eval: bool | None = None
             ) -> Iterator[TaskConfig]:
    """Each task's config, made when the executor asks for it (every executor asks for the next
    one only when it can start it): a warm-started one then sees every row stored so far."""
    first = grid.config(*grid.cells[0])
    carried = sources(first) if plan.tasks else ()
    code = plan.code if plan.tasks else None  # what every task must reproduce
    for task in plan.tasks:
        cfg = task_config(grid, task)
        if grid.warm_start:
            guess = predict_lr_star(done, task.depth, task.width)
            if guess is not None:
                # one scan point above the guess: failures above η* cost a few steps, successes
                # below it hundreds, so an overestimate is the cheap side to err on
                up = 10 ** (1 / cfg.grid_per_decade)
                cfg = EstimateConfig(**{**cfg.row(), "lr_start": guess * up})
        yield TaskConfig(cfg, grid.config(task.depth, task.width).seeds, grid.lambda1_samples,
                         full_eval, carried, grid.scan, code)


def _run(grid: Grid, plan: Plan, runner: Runner,
         on_task: Callable[[int, int, list[dict]], None] | None,
         full_eval: bool | None = None) -> SweepReport:
    done = counted_rows(plan.rows)
    # executors take them one at a time (warm starts)
    configs = _configs(grid, plan, done, full_eval)
    ran = 0
    results = runner(configs)
    try:
        for n, (new_rows, trials) in enumerate(results, start=1):
            _write(plan, new_rows, trials)
            done.extend(new_rows)
            ran += len(new_rows)
            if on_task is not None:
                on_task(n, len(plan.tasks), new_rows)
    finally:
        getattr(results, "close", lambda: None)()  # stops the workers at once on an interrupt
    rows = counted_rows(plan.store.rows())
    return SweepReport(len(grid.cells), len(plan.rows), ran, plan.store.repaired, rows)
