"""A seed's η* is a function of its configuration and its seed alone: not of the other seeds of
its run, nor of a resumed sweep, nor (on a monotone boundary) of where a warm start began.

The fakes give each seed its own costs (a failure of seed 1 is slow, of seed 0 cheap), so any
sharing of the weighted split's cost measurement between seeds changes the probes.
"""

import pytest

from milr import EstimateConfig
from milr.engine.search import SyncTrainer, search
from milr.engine.train import Outcome
from milr.sweep.grid import parse_grid
from milr.sweep.run import run_sweep

EDGES = {0: 0.37, 1: 0.052, 2: 2.9, 3: 0.81}
FAIL_STEPS = {0: 10, 1: 900, 2: 40, 3: 10}  # seed 1 fails slowly (too slow, not diverging)


def fake():
    """Success iff lr <= the seed's edge (300 steps); a failure costs the seed's own steps,
    more the closer it lies to the edge (divergence takes longer near it)."""
    def run(lrs, seeds):
        out = []
        for lr, s in zip(lrs, seeds, strict=True):
            ok = lr <= EDGES[s]
            steps = 300 if ok else min(1000, int(FAIL_STEPS[s] * 2 * EDGES[s] / (lr - EDGES[s])))
            out.append(Outcome(lr, s, ok, not ok, max(steps, 1), 0.9, 0.9, 0.1))
        return out
    return SyncTrainer(run)


DEFAULT = EstimateConfig(1, 1)


def on_grid(lr):
    import math

    i = math.log10(DEFAULT.lr_max / lr) * DEFAULT.grid_per_decade
    return abs(i - round(i)) < 1e-9


def seed_trials(trials, seed):
    return [(t.lr, t.success, t.steps) for t in trials if t.seed == seed]


@pytest.mark.parametrize("criterion", ["accuracy", "stable"])
def test_a_seed_probes_the_same_rates_alone_and_among_other_seeds(criterion):
    base = dict(depth=1, width=1, criterion=criterion, rtol=0.01,
                threshold=None if criterion == "stable" else 0.8)
    together, trials, _ = search(EstimateConfig(**base, seeds=4), fake(), 1)
    for seed in range(4):
        alone, alone_trials, _ = search(EstimateConfig(**base, seed=seed, seeds=1), fake(), 1)
        assert seed_trials(alone_trials, seed) == seed_trials(trials, seed)
        assert alone[0] == together[seed]


@pytest.mark.parametrize("start", [1e-3, 0.03, 0.2, 0.5, 30.0])
def test_a_warm_start_changes_the_scan_never_the_refinement(start):
    base = dict(depth=1, width=1, seeds=4, rtol=0.01)
    cold, cold_trials, _ = search(EstimateConfig(**base), fake(), 1)
    warm, warm_trials, _ = search(EstimateConfig(**base, lr_start=start), fake(), 1)
    assert [(r.status, r.lo, r.hi, r.lr_star) for r in warm] == \
        [(r.status, r.lo, r.hi, r.lr_star) for r in cold]
    for r in cold:  # the refinement: every probe off the scan's grid, in order
        refined = [t for t in seed_trials(cold_trials, r.seed) if not on_grid(t[0])]
        assert refined, "nothing was refined"
        assert [t for t in seed_trials(warm_trials, r.seed) if not on_grid(t[0])] == refined


def test_the_engine_gives_a_seed_the_same_trials_alone_and_among_others(tiny):
    base = dict(depth=2, width=16, steps=120, eval_every=20, rtol=0.02, device="cpu",
                threshold=0.75)
    from milr import estimate

    together = estimate(EstimateConfig(**base, seeds=3), data=tiny)
    alone = estimate(EstimateConfig(**base, seed=1, seeds=1), data=tiny)
    assert alone.seeds[0] == together.seeds[1]
    assert alone.seeds[0].status == "ok"

    # every field of every trial, the round included (each seed counts its own rounds)
    assert [t for t in alone.trials if t.seed == 1] == [t for t in together.trials if t.seed == 1]


@pytest.mark.parametrize("criterion", ["accuracy", "stable"])
def test_the_engine_gives_a_seed_the_same_result_at_every_probe_count(tiny, criterion):
    """More probes per round only run more of the one-probe search's tree at once: every seed's
    status, bracket, η* and edge band are the same, on the engine's real (ragged) verdicts."""
    from milr import estimate

    base = dict(depth=2, width=16, steps=120, eval_every=20, rtol=0.02, device="cpu", seeds=3,
                criterion=criterion, threshold=0.75 if criterion == "accuracy" else None)

    def result(est):
        return [(s.status, s.lo, s.hi, s.lr_star, s.nonmonotone, s.edge_trained)
                for s in est.seeds]

    one = estimate(EstimateConfig(**base, probes=1), data=tiny)
    assert all(s.status == "ok" for s in one.seeds)
    for probes in (3, 7):
        many = estimate(EstimateConfig(**base, probes=probes), data=tiny)
        assert result(many) == result(one) and many.rounds < one.rounds
    warm = estimate(EstimateConfig(**base, probes=1, lr_start=0.5), data=tiny)
    assert result(warm) == result(one)


GRID = """\
depths: [1, 2]
widths: [8]
seeds: {seeds}
dataset: gaussians
steps: 120
eval_every: 20
rtol: 0.05
device: cpu
"""

KEEP = ("lr_star", "lo", "hi", "status", "trials", "nonmonotone", "depends_on")


def test_a_resumed_sweep_gives_the_rows_of_a_fresh_one(tmp_path):
    fresh = run_sweep(parse_grid(GRID.format(seeds=3)), tmp_path / "fresh.csv").rows
    run_sweep(parse_grid(GRID.format(seeds=1)), tmp_path / "grown.csv")
    grown = run_sweep(parse_grid(GRID.format(seeds=3)), tmp_path / "grown.csv").rows

    def table(rows):
        return {(r["depth"], r["width"], r["seed"]): tuple(r[k] for k in KEEP)
                for r in rows}

    assert table(grown) == table(fresh)
    assert {r["depends_on"] for r in fresh} == {"config,seed"}


WARM = GRID.format(seeds=1).replace("widths: [8]", "widths: [8, 16]") + "warm_start: true\n"


@pytest.mark.slow
def test_warm_starts_work_with_worker_processes(tmp_path):
    from milr.sweep.executors import process_runner

    rows = run_sweep(parse_grid(WARM), tmp_path / "w.csv", runner=process_runner(2)).rows
    starts = [r["lr_start"] for r in rows]
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    # two cells start before any has finished; the next ones are predicted from those done
    assert sum(s != "" for s in starts) >= 2
    # a warm start is a speed-up only: η* depends on the configuration and seed alone
    assert {r["depends_on"] for r in rows} == {"config,seed"}
