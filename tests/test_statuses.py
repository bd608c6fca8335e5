"""Statuses that follow the trials, and η* that does not follow how the search runs.

Fakes with known success sets: `below_range` only once the widened bottom was tried and failed,
`above_range` only once the widened top was tried and trained (the shorter budget's too), a
too-slow top widened upwards; and for chaotic and ragged success sets the same bracket at 1, 3,
7 and auto probes, alone and among other seeds, cold and warm.
"""

import hashlib
import math

import pytest

from milr import EstimateConfig
from milr.engine.search import SyncTrainer, search
from milr.engine.train import Outcome


def fake(trains, slow_below=None, log=None):
    """Success iff trains(lr, seed); a failure below `slow_below` is too slow (the whole budget,
    not diverged), any other diverges within 10 steps."""

    def run(lrs, seeds):
        out = []
        for lr, s in zip(lrs, seeds, strict=True):
            ok = trains(lr, s)
            slow = not ok and slow_below is not None and lr < slow_below
            out.append(Outcome(lr, s, ok, not ok and not slow, 300 if ok else 1000 if slow else 10,
                               0.9, 0.9, 0.1))
            if log is not None:
                log.append((lr, s, ok))
        return out

    return SyncTrainer(run)


def cfg(**kw):
    return EstimateConfig(**{"depth": 1, "width": 1, "seeds": 1, "edge_probes": 0, **kw})


def test_a_range_is_below_only_once_its_bottom_was_tried():
    # the grid from 22 down (10.2, ...) skips 15, the bottom: it must still be tried first
    log = []
    (r,), _, _ = search(cfg(lr_min=15, lr_max=22, widen=1), fake(lambda lr, s: False, log=log))
    assert r.status == "below_range" and r.lr_star is None
    assert [lr for lr, _, _ in log] == [22, 15]


def test_a_range_is_above_only_once_its_top_was_tried():
    # lr_max 1 widened by 3: the grid above 1 is 2.15, 4.64, so the top 3 is tried itself
    log = []
    (r,), _, _ = search(cfg(lr_max=1, widen=3), fake(lambda lr, s: True, log=log))
    assert r.status == "above_range" and r.lo == 3 and r.lr_star is None
    assert max(lr for lr, _, _ in log) == 3


def test_successes_only_between_grid_points_end_below_range_with_the_bottom_tried():
    # the grid 100, 46.4, 21.5, 10, 4.6, ... never lands in [12, 13]
    log = []
    (r,), _, _ = search(cfg(lr_min=1, lr_max=100, widen=1),
                        fake(lambda lr, s: 12 <= lr <= 13, log=log))
    assert r.status == "below_range"
    assert min(lr for lr, _, _ in log) == pytest.approx(1) and not any(ok for _, _, ok in log)


def test_a_too_slow_top_over_nothing_says_to_raise_lr_max(run_milr):
    # trains only in [30, 60], too slow below 30: lr_max 10 is too slow and so is all below it
    (r,), trials, _ = search(cfg(threshold=0.8), fake(lambda lr, s: 30 <= lr <= 60,
                                                      slow_below=30))
    assert r.status == "below_range" and max(t.lr for t in trials) == 10
    from milr.base.results import Estimate
    from milr.cli.render import below_range_advice

    est = Estimate(cfg(threshold=0.8), [r], trials, 1, 1, "weighted", 1.0, 1, "cpu")
    assert "raise --lr-max" in below_range_advice(est)
    diverging = [t for t in trials]  # the same search where the top diverged instead
    diverging[0] = type(trials[0])(**{**vars(trials[0]), "diverged": True})
    est = Estimate(cfg(threshold=0.8), [r], diverging, 1, 1, "weighted", 1.0, 1, "cpu")
    assert "raise --lr-max" not in below_range_advice(est)


def test_a_too_slow_top_over_a_window_below_still_finds_it():
    # too slow above the window as under Adam: trains in [0.2, 0.4], slow everywhere above
    (r,), _, _ = search(cfg(threshold=0.8), fake(lambda lr, s: 0.2 <= lr <= 0.4,
                                                 slow_below=math.inf))
    assert r.status == "ok" and r.lo <= 0.4 < r.hi


def test_the_shorter_budgets_statuses_follow_its_trials_too():
    def always(lrs, seeds):  # trains at any rate, but only after 500 steps
        return [Outcome(lr, s, True, False, 500, 0.9, 0.9, 0.1) for lr, s in
                zip(lrs, seeds, strict=True)]

    (r,), trials, _ = search(cfg(lr_min=15, lr_max=22, widen=1, steps=1000, also_steps=100,
                                 threshold=0.8), SyncTrainer(always))
    assert r.status == "above_range" and r.also_status == "below_range"
    assert min(t.lr for t in trials) == 15  # the bottom tried at the shorter budget


def chaotic(edge: float, band: float = 0.3):
    """Trains below edge, fails above edge·(1 + band), and in between trains or not as a hash of
    (lr, seed) says: a success set with no boundary at any resolution."""

    def trains(lr, s):
        if lr <= edge:
            return True
        if lr > edge * (1 + band):
            return False
        return hashlib.sha256(f"{lr!r}/{s}".encode()).digest()[0] < 128

    return trains


def ragged(lr, s):
    """Trains below 0.3·(s+1) and on islands above it, a different set per seed."""
    e = 0.3 * (s + 1)
    return lr <= e or any(e * k <= lr <= e * k * 1.02 for k in (1.1, 1.3, 1.7))


@pytest.mark.parametrize("trains", [chaotic(0.37), chaotic(1.3, band=1.0), ragged])
@pytest.mark.parametrize("criterion", ["accuracy", "stable"])
@pytest.mark.parametrize("midpoint", ["weighted", "geometric", "arithmetic"])
def test_every_probe_count_alone_or_among_seeds_warm_or_cold_gives_the_one_probe_result(
        trains, criterion, midpoint):
    base = dict(depth=1, width=1, criterion=criterion, midpoint=midpoint, rtol=0.02,
                threshold=None if criterion == "stable" else 0.8)

    def results(probes, **kw):
        res, _, _ = search(EstimateConfig(**{**base, **kw}), fake(trains), probes)
        return {r.seed: (r.status, r.lo, r.hi, r.lr_star, r.nonmonotone, r.edge_trained)
                for r in res}

    reference = results(1, seeds=4)
    assert all(v[0] == "ok" for v in reference.values())
    for probes in (3, 7, 8):  # 8: what auto gives a GPU's small cells
        assert results(probes, seeds=4) == reference
    for seed in range(4):
        assert results(3, seed=seed, seeds=1)[seed] == reference[seed]
    for start in (0.05, 0.4, 3.0):
        assert results(3, seeds=4, lr_start=start) == reference


def test_the_edge_probes_count_successes_above_hi_and_with_edge_below_failures_below_lo():
    # trains below 0.37 but not on [0.33, 0.35), and again on (0.40, 0.43]
    def trains(lr, s):
        return (lr <= 0.37 and not 0.33 <= lr < 0.35) or 0.40 < lr <= 0.43

    base = dict(depth=1, width=1, seeds=1, rtol=0.02, edge_probes=4, edge_factor=1.25)
    (r,), trials, _ = search(EstimateConfig(**base, edge_below=True), fake(trains))
    assert r.status == "ok"
    above = [r.hi * 1.25 ** (j / 4) for j in (1, 2, 3, 4)]
    below = [r.lo / 1.25 ** (j / 4) for j in (1, 2, 3, 4)]
    assert sorted(t.lr for t in trials if t.role == "edge") == pytest.approx(sorted(above + below))
    assert r.edge_trained == sum(trains(lr, 0) for lr in above)
    assert r.edge_failed_below == sum(not trains(lr, 0) for lr in below)
    assert r.nonmonotone == r.edge_trained + r.edge_failed_below >= 1
    (plain,), _, _ = search(EstimateConfig(**base), fake(trains))
    assert plain.edge_failed_below is None and (plain.lo, plain.hi) == (r.lo, r.hi)
