"""One task of a sweep: some seeds of one (depth, width) measured, η* and optionally λ1, or
(measure: scan) one scan of all its seeds, as the rows and trials (or the scan's whole record)
that the results file and the trials log store."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from ..base.config import SPEC_FIELDS, EstimateConfig, ScanConfig
from ..base.spec import carry, receive, sha256_column
from .store import LAMBDA1_FIELDS


@dataclass(frozen=True)
class TaskConfig:
    """What a task measures: its cell's config narrowed to the task's seeds (seed, seeds), the
    cell's seed count (which its rows record), λ1's sample count (0: no λ1), and whether every
    evaluation sees the whole validation set (`train.BatchedTrainer`'s full_eval: only the
    trials' recorded accuracies differ), the files of its PATH.py:NAME fields (`sources`),
    which travel with it to wherever it runs, and the identities of the code and data the
    sweep began with (`code`, `lookup.identities`), which wherever it runs must reproduce."""

    config: EstimateConfig
    cell_seeds: int
    lambda1_samples: int = 0
    full_eval: bool | None = None  # None: full on CUDA, early exit elsewhere
    sources: tuple[tuple[str, str, bytes], ...] = ()  # base.spec.carry's (path, SHA-256, bytes)
    scan: ScanConfig | None = None  # measure: scan (the cell's seeds, one scan); None: search
    code: dict | None = None  # model_sha256, dataset_sha256 as the sweep began (None: unchecked)


def sources(cfg) -> tuple[tuple[str, str, bytes], ...]:
    """The files cfg's SPEC_FIELDS name, read once per sweep: every task runs the code the
    sweep began with, on this machine or another one (Ray)."""
    return tuple(c for f in SPEC_FIELDS if (c := carry(getattr(cfg, f, None))) is not None)


# What differs where a task's code or data are not the sweep's, and what to do about it.
OTHER_CODE = {
    "model": "is other code here than when the sweep began ({}): a package.module must be the "
             "same version wherever a task runs",
    "dataset": "returned other data here than when the sweep began ({}): its function must "
               "return the same arrays at every call (seed its randomness; a file it reads must "
               "not change during the sweep)",
}


def check_code(task: TaskConfig) -> None:
    """Refuse, before training, a task whose user code or data differ from those the sweep
    began with (a data function drawing unseeded numbers, another version of a package on a
    Ray worker): one results file never mixes two under one name."""
    if task.code is None:
        return
    from ..data.lookup import identities

    have = identities(task.config)
    for field in SPEC_FIELDS:
        column = sha256_column(field)
        if have[column] != task.code[column]:
            seen = f"{column} {have[column]}, not {task.code[column]}"
            raise ValueError(f"{field} {getattr(task.config, field)!r} "
                             + OTHER_CODE[field].format(seen))


def run_task(task: TaskConfig) -> tuple[list[dict], list[dict]]:
    """Estimate one task; returns its result rows and its trials (top level: picklable)."""
    # torch loads here: a sweep refuses bad input before it
    from ..base.device import resolve_device
    from ..engine.estimation import estimate
    from ..engine.search import depends_on

    cfg = task.config
    receive(task.sources)
    check_code(task)
    if task.scan is not None:
        return run_scan(task)
    est = estimate(cfg, lambda1_samples=task.lambda1_samples, full_eval=task.full_eval)
    sharp = {p.seed: {"lambda1": p.lambda1, "lambda1_eff": e.lambda1,
                      "lambda1_residual": max(p.residual, e.residual),
                      "lambda1_converged": p.converged and e.converged,
                      "lambda1_samples": p.samples} for p, e in est.sharpness}
    ran = provenance(est)
    rows = [{**cfg.row(), "seeds": task.cell_seeds, "seed": s.seed,
             "lr_star": s.lr_star, "lo": s.lo, "hi": s.hi, "status": s.status,
             "trials": s.trials, "nonmonotone": s.nonmonotone, "edge_trained": s.edge_trained,
             "edge_failed_below": s.edge_failed_below,
             "probes_used": est.probes, "midpoint_used": est.midpoint_used,
             "depends_on": depends_on(cfg, resolve_device(cfg.device).type),
             "rounds": est.rounds, "also_lr_star": s.also_lr_star, "also_lo": s.also_lo,
             "also_hi": s.also_hi, "also_status": s.also_status,
             **ran, **est.code, **sharp.get(s.seed, dict.fromkeys(LAMBDA1_FIELDS))}
            for s in est.seeds]
    trials = [{"depth": cfg.depth, "width": cfg.width, **asdict(t)} for t in est.trials]
    return rows, trials


def run_scan(task: TaskConfig) -> tuple[list[dict], list[dict]]:
    """Scan one cell: its row (the config, the scan's settings and summary, how it ran) and
    its one log record, the whole `ScanResult.to_dict()` keyed by depth, width and seed."""
    from ..engine.scanning import scan

    cfg = task.config
    result = scan(cfg, task.scan)
    row = {**cfg.row(), **asdict(task.scan), **result.row(), "rates": len(result.grid),
           "member_steps": result.member_steps, **result.code, **provenance(result)}
    record = {"depth": cfg.depth, "width": cfg.width, "seed": cfg.seed, "measure": "scan",
              **result.to_dict()}
    return [row], [record]


def provenance(result) -> dict:
    """How a task's measurement ran, as its rows record it (`store.PROVENANCE`): of an
    `Estimate` or a `ScanResult`, finished now."""
    return {"cell_wall_time": round(result.wall_time, 3), "device_name": result.device,
            "milr_version": result.versions["milr"], "torch_version": result.versions["torch"],
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
