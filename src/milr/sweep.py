"""Depth × width sweeps: a YAML grid -> cells -> one durable CSV row per (cell, seed).

The results file is the only state. Each finished cell's rows are appended in one write and
fsynced; a rerun reads the file back, repairs a half-written last line, refuses a file written
with different fixed parameters, and runs exactly the (cell, seed) pairs that are missing.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import EstimateConfig
from .grid import FIXED_FIELDS, Grid, GridError, load_grid, parse_grid
from .search import estimate

__all__ = ["Grid", "GridError", "ResultStore", "load_grid", "parse_grid", "run_sweep"]

LAMBDA1_FIELDS = ("lambda1", "lambda1_eff", "lambda1_residual", "lambda1_converged",
                  "lambda1_samples")  # empty unless the grid sets lambda1_samples
RESULT_FIELDS = ("lr_star", "lo", "hi", "status", "trials", "nonmonotone", "probes_used", "rounds",
                 "cell_wall_time", *LAMBDA1_FIELDS, "device_name", "milr_version",
                 "torch_version", "finished_at")
COLUMNS = (*EstimateConfig.field_names(), *RESULT_FIELDS)


# --- results store ----------------------------------------------------------------------------


def row_key(row: dict) -> tuple[int, int, int]:
    return int(row["depth"]), int(row["width"]), int(row["seed"])


def _text(v) -> str:
    return "" if v is None else str(v)


class ResultStore:
    """A CSV of one row per (cell, seed), appended durably, readable by pandas as it is."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.repaired = False

    def rows(self) -> list[dict]:
        """The complete rows; a half-written last line (a kill mid-write) is cut off the file."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return []
        raw = self.path.read_bytes()
        if not raw.endswith(b"\n"):
            keep = raw.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
            raw, self.repaired = raw[:keep], True
        reader = csv.reader(io.StringIO(raw.decode()))
        header = next(reader, None)
        if header is None:
            return []
        if tuple(header) != COLUMNS:
            missing = ", ".join(c for c in COLUMNS if c not in header) or "none missing"
            raise ValueError(f"{self.path} is not a milr sweep results file of this version "
                             f"(columns differ; {missing}); use another --out")
        out = []
        for n, rec in enumerate(reader, start=2):
            if len(rec) != len(COLUMNS):
                raise ValueError(f"{self.path} line {n}: {len(rec)} fields, expected "
                                 f"{len(COLUMNS)}; the file was edited or is corrupt")
            out.append(dict(zip(COLUMNS, rec, strict=True)))
        return out

    def check_compatible(self, rows: list[dict], grid: Grid) -> None:
        """Refuse to mix rows measured under different fixed parameters."""
        if not rows:
            return
        d, w = grid.cells[0]
        want = grid.config(d, w).row()
        have = rows[0]
        for name in FIXED_FIELDS:
            if have[name] != _text(want[name]):
                raise ValueError(
                    f"{self.path} was written with {name}={have[name] or 'None'} but the grid "
                    f"has {name}={want[name]}; use another --out or restore the setting")

    def append(self, rows: list[dict]) -> None:
        """Append rows in one write, then flush and fsync: a kill leaves whole rows or a tail."""
        new = not self.path.exists() or self.path.stat().st_size == 0
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if new:
            writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([_text(row[c]) for c in COLUMNS])
        with open(self.path, "a", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())


# --- tasks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """Some seeds of one cell: seeds seed, seed + 1, ..., seed + count - 1."""

    depth: int
    width: int
    seed: int
    count: int


def pending_tasks(grid: Grid, done: set[tuple[int, int, int]]) -> list[Task]:
    """The missing (cell, seed) pairs, grouped into runs of consecutive seeds per cell."""
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


def run_task(cfg: EstimateConfig, lambda1_samples: int = 0) -> tuple[list[dict], list[dict]]:
    """Estimate one task; returns its result rows and its trials (top level: picklable)."""
    est = estimate(cfg)
    sharp = {}
    if lambda1_samples:
        from .sharpness import sharpness_seeds

        plain = sharpness_seeds(cfg, lambda1_samples)  # the task's seeds, as in est.seeds
        eff = sharpness_seeds(cfg, lambda1_samples, preconditioned=True)
        for p, e in zip(plain, eff, strict=True):
            sharp[p.seed] = {"lambda1": p.lambda1, "lambda1_eff": e.lambda1,
                             "lambda1_residual": max(p.residual, e.residual),
                             "lambda1_converged": p.converged and e.converged,
                             "lambda1_samples": lambda1_samples}
    rows, trials = [], []
    finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for s in est.seeds:
        row = {**cfg.row(), "seed": s.seed,
               "lr_star": s.lr_star, "lo": s.lo, "hi": s.hi, "status": s.status,
               "trials": s.trials, "nonmonotone": s.nonmonotone, "probes_used": est.probes,
               "rounds": est.rounds, "cell_wall_time": round(est.wall_time, 3),
               "device_name": est.device, "milr_version": est.versions["milr"],
               "torch_version": est.versions["torch"], "finished_at": finished,
               **sharp.get(s.seed, dict.fromkeys(LAMBDA1_FIELDS))}
        rows.append(row)
    for t in est.trials:
        trials.append({"depth": cfg.depth, "width": cfg.width, **t.__dict__})
    return rows, trials


# --- executors --------------------------------------------------------------------------------

Runner = Callable[[list[EstimateConfig], int], Iterator[tuple[list[dict], list[dict]]]]


def local_runner(configs: list[EstimateConfig], lambda1_samples: int = 0
                 ) -> Iterator[tuple[list[dict], list[dict]]]:
    for cfg in configs:
        yield run_task(cfg, lambda1_samples)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def process_runner(workers: int) -> Runner:
    """`workers` processes, each with an equal share of the CPU threads; results as they finish."""
    import concurrent.futures as cf
    import multiprocessing as mp

    def run(configs: list[EstimateConfig], lambda1_samples: int = 0
            ) -> Iterator[tuple[list[dict], list[dict]]]:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                    initializer=_init_worker, initargs=(threads,)) as pool:
            futures = [pool.submit(run_task, c, lambda1_samples) for c in configs]
            try:
                for fut in cf.as_completed(futures):
                    yield fut.result()
            finally:
                for fut in futures:
                    fut.cancel()

    return run


def ray_runner(address: str | None, gpus_per_task: float | None = None) -> Runner:
    """Tasks as Ray remote calls; the driver alone writes the store (see run_sweep)."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: pip install 'milr[ray]'") from None

    def run(configs: list[EstimateConfig], lambda1_samples: int = 0
            ) -> Iterator[tuple[list[dict], list[dict]]]:
        if not ray.is_initialized():
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        remote = ray.remote(run_task)
        refs = []
        for cfg in configs:
            wants_gpu = cfg.device == "cuda" or (cfg.device == "auto" and has_gpu)
            gpus = (gpus_per_task or 1.0) if wants_gpu else 0
            refs.append(remote.options(num_cpus=1, num_gpus=gpus).remote(cfg, lambda1_samples))
        try:
            while refs:
                ready, refs = ray.wait(refs, num_returns=1)
                yield ray.get(ready[0])
        finally:
            for ref in refs:
                ray.cancel(ref)

    return run


@dataclass
class SweepReport:
    cells: int  # cells in the grid
    done_before: int  # (cell, seed) rows already in the store
    ran: int  # rows added now
    repaired: bool  # a half-written last line was removed
    rows: list[dict]  # every row of the store afterwards


@dataclass
class Plan:
    """What a sweep will do: the store (read and repaired), its rows, the missing tasks."""

    store: ResultStore
    rows: list[dict]
    tasks: list[Task]


def plan_sweep(grid: Grid, out: str | os.PathLike) -> Plan:
    """Read `out`, refuse it if its fixed parameters differ from the grid's, list what's missing."""
    store = ResultStore(out)
    rows = store.rows()
    store.check_compatible(rows, grid)
    return Plan(store, rows, pending_tasks(grid, {row_key(r) for r in rows}))


def run_sweep(grid: Grid, out: str | os.PathLike, runner: Runner = local_runner,
              trials_path: str | os.PathLike | None = None,
              on_task: Callable[[int, int, list[dict]], None] | None = None,
              plan: Plan | None = None) -> SweepReport:
    """Run every missing (cell, seed) of `grid`, appending rows to `out` as each task finishes.

    `plan` is `plan_sweep(grid, out)` when the caller has already made it (to show it first).
    """
    plan = plan or plan_sweep(grid, out)
    store = plan.store
    configs = [task_config(grid, t) for t in plan.tasks]
    ran = 0
    for n, (new_rows, trials) in enumerate(runner(configs, grid.lambda1_samples), start=1):
        for r in new_rows:  # a task may hold only some seeds; the row records the cell's count
            r["seeds"] = grid.config(r["depth"], r["width"]).seeds
        store.append(new_rows)
        if trials_path is not None:
            _append_jsonl(trials_path, trials)
        ran += len(new_rows)
        if on_task is not None:
            on_task(n, len(configs), new_rows)
    return SweepReport(len(grid.cells), len(plan.rows), ran, store.repaired, store.rows())


def _append_jsonl(path, records: list[dict]) -> None:
    import json

    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def summarise(rows: list[dict]) -> list[dict]:
    """Per cell: median η* over its seeds with status ok, min, max, and how many seeds were ok."""
    import statistics

    cells: dict[tuple[int, int], list[dict]] = {}
    for r in rows:
        cells.setdefault((int(r["depth"]), int(r["width"])), []).append(r)
    out = []
    for (d, w), rs in sorted(cells.items()):
        vals = [float(r["lr_star"]) for r in rs if r["status"] == "ok" and r["lr_star"] != ""]
        out.append({"depth": d, "width": w, "seeds": len(rs), "ok": len(vals),
                    "median": statistics.median(vals) if vals else None,
                    "min": min(vals) if vals else None, "max": max(vals) if vals else None})
    return out


SHAPES = {"gaussians": (64, 2), "fashion-mnist": (784, 10), "mnist": (784, 10),
          "cifar10": (3072, 10)}  # (inputs, classes), for cost estimates without loading data


def estimated_cost(grid: Grid, task: Task) -> float:
    """Rough upper bound in TFLOP: each seed runs ~12 full-budget trainings (scan + refine)."""
    cfg = task_config(grid, task)
    n_in, classes = SHAPES.get(cfg.dataset, (784, 10))
    return task.count * 12 * cfg.steps * cfg.flops_per_member_step(n_in, classes) / 1e12
