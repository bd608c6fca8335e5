"""Warm-started sweeps: a predicted start changes the work, never the bracket."""

import math

import pytest
from conftest import TINY_GRID

from milr import EstimateConfig
from milr.engine.search import SyncTrainer, search
from milr.engine.train import Outcome
from milr.sweep.grid import parse_grid
from milr.sweep.run import predict_lr_star, run_sweep

EDGES = {0: 0.37, 1: 0.052, 2: 2.9}


def fake(log):
    """Success iff lr <= the seed's edge, after 300 steps; failures diverge within 10."""
    def run(lrs, seeds):
        log.extend(lrs)
        return [Outcome(lr, s, lr <= EDGES[s], lr > EDGES[s], 300 if lr <= EDGES[s] else 10,
                        0.9, 0.9, 0.1) for lr, s in zip(lrs, seeds, strict=True)]
    return SyncTrainer(run)


@pytest.mark.parametrize("criterion", ["accuracy", "stable"])
@pytest.mark.parametrize("midpoint", ["weighted", "geometric"])
@pytest.mark.parametrize("start", [None, 1e-4, 0.04, 0.3, 0.4, 2.0, 500.0, 1e6])
def test_warm_and_cold_starts_give_the_same_brackets(criterion, midpoint, start):
    cold_log, warm_log = [], []
    base = dict(depth=1, width=1, seeds=3, midpoint=midpoint, criterion=criterion,
                threshold=None if criterion == "stable" else 0.8)
    cold, _, cold_rounds = search(EstimateConfig(**base), fake(cold_log), 1)
    warm, _, warm_rounds = search(EstimateConfig(**base, lr_start=start), fake(warm_log), 1)
    def verdicts(results):  # all but the number of trials (speculative ones are extra work)
        return [(r.status, r.lo, r.hi, r.lr_star, r.nonmonotone, r.edge_trained)
                for r in results]

    assert verdicts(warm) == verdicts(cold)  # a warm start is a speed-up, never an answer
    assert all(r.status == "ok" and r.lo <= EDGES[r.seed] < r.hi for r in warm)
    if start == 0.3:  # near the edges: the scan runs in one round
        assert warm_rounds < cold_rounds


def test_prediction_from_the_cells_done():
    rows = [{"depth": d, "width": w, "status": "ok", "lr_star": 3.0 * d**-0.7 * w**-0.2}
            for d in (1, 2, 4) for w in (16, 64)]
    assert predict_lr_star(rows, 8, 256) == pytest.approx(3.0 * 8**-0.7 * 256**-0.2)
    few = rows[:1] + [{"depth": 9, "width": 9, "status": "below_range", "lr_star": ""}]
    assert predict_lr_star(few, 2, 32) == pytest.approx(rows[0]["lr_star"])  # nearest cell
    assert predict_lr_star([], 2, 32) is None


GRID = TINY_GRID + "warm_start: true\n"


def test_a_warm_sweep_records_where_each_cell_started(tmp_path):
    rows = run_sweep(parse_grid(GRID), tmp_path / "r.csv").rows
    starts = {(int(r["depth"]), int(r["width"])): r["lr_start"] for r in rows}
    assert starts[(1, 8)] == ""  # nothing done yet: a cold start
    assert all(math.isfinite(float(v)) for k, v in starts.items() if k != (1, 8))
    assert all(r["status"] == "ok" for r in rows)


def window(log):
    """Too slow below 0.08 (no divergence), diverges above 0.4 x the seed's edge."""
    def run(lrs, seeds):
        log.extend(lrs)
        return [Outcome(lr, s, 0.08 <= lr <= EDGES[s] * 0.4, lr > EDGES[s] * 0.4,
                        1000 if lr < 0.08 else 300, 0.5, 0.5, 0.1)
                for lr, s in zip(lrs, seeds, strict=True)]
    return SyncTrainer(run)


@pytest.mark.parametrize("start", [1e-5, 0.01, 0.05, 0.12, 3.0])
def test_a_warm_start_below_the_window_scans_up_to_the_same_bracket(start):
    base = dict(depth=1, width=1, seeds=3)
    cold, _, _ = search(EstimateConfig(**base), window([]), 1)
    warm, _, _ = search(EstimateConfig(**base, lr_start=start), window([]), 1)
    assert [r.status for r in cold] == ["ok", "below_range", "ok"]  # seed 1's window is empty
    assert [r.status for r in warm] == [r.status for r in cold]
    ends = [v for r in warm if r.status == "ok" for v in (r.lo, r.hi)]
    assert ends == pytest.approx([v for r in cold if r.status == "ok" for v in (r.lo, r.hi)],
                                 rel=1e-12)  # up to the last bit
