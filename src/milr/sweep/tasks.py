"""One task of a sweep: some seeds of one (depth, width) measured, η* and optionally λ1, as the
rows and trials that the results file and the trials log store."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from ..base.config import SPEC_FIELDS, EstimateConfig
from ..base.spec import carry, receive
from .store import LAMBDA1_FIELDS


@dataclass(frozen=True)
class TaskConfig:
    """What a task measures: its cell's config narrowed to the task's seeds (seed, seeds), the
    cell's seed count (which its rows record), λ1's sample count (0: no λ1), and whether every
    evaluation sees the whole validation set (`train.BatchedTrainer`'s full_eval: only the
    trials' recorded accuracies differ), and the files of its PATH.py:NAME fields (`sources`),
    which travel with it to wherever it runs."""

    config: EstimateConfig
    cell_seeds: int
    lambda1_samples: int = 0
    full_eval: bool | None = None  # None: full on CUDA, early exit elsewhere
    sources: tuple[tuple[str, str, bytes], ...] = ()  # base.spec.carry's (path, SHA-256, bytes)


def sources(cfg) -> tuple[tuple[str, str, bytes], ...]:
    """The files cfg's SPEC_FIELDS name, read once per sweep: every task runs the code the
    sweep began with, on this machine or another one (Ray)."""
    return tuple(c for f in SPEC_FIELDS if (c := carry(getattr(cfg, f, None))) is not None)


def run_task(task: TaskConfig) -> tuple[list[dict], list[dict]]:
    """Estimate one task; returns its result rows and its trials (top level: picklable)."""
    # torch loads here: a sweep refuses bad input before it
    from ..base.device import resolve_device
    from ..engine.estimation import estimate
    from ..engine.search import depends_on

    cfg = task.config
    receive(task.sources)
    est = estimate(cfg, lambda1_samples=task.lambda1_samples, full_eval=task.full_eval)
    sharp = {p.seed: {"lambda1": p.lambda1, "lambda1_eff": e.lambda1,
                      "lambda1_residual": max(p.residual, e.residual),
                      "lambda1_converged": p.converged and e.converged,
                      "lambda1_samples": p.samples} for p, e in est.sharpness}
    finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = [{**cfg.row(), "seeds": task.cell_seeds, "seed": s.seed,
             "lr_star": s.lr_star, "lo": s.lo, "hi": s.hi, "status": s.status,
             "trials": s.trials, "nonmonotone": s.nonmonotone, "edge_trained": s.edge_trained,
             "edge_failed_below": s.edge_failed_below,
             "probes_used": est.probes, "midpoint_used": est.midpoint_used,
             "depends_on": depends_on(cfg, resolve_device(cfg.device).type),
             "rounds": est.rounds, "also_lr_star": s.also_lr_star, "also_lo": s.also_lo,
             "also_hi": s.also_hi, "also_status": s.also_status,
             "cell_wall_time": round(est.wall_time, 3), "device_name": est.device,
             "milr_version": est.versions["milr"], "torch_version": est.versions["torch"],
             "finished_at": finished, **est.code,
             **sharp.get(s.seed, dict.fromkeys(LAMBDA1_FIELDS))}
            for s in est.seeds]
    trials = [{"depth": cfg.depth, "width": cfg.width, **asdict(t)} for t in est.trials]
    return rows, trials
