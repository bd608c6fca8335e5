import math
import random

import pytest

from milr import EstimateConfig
from milr.engine.search import SyncTrainer, search
from milr.engine.train import Outcome


def oracle(trains, log=None):
    """A fake trainer: success iff trains(lr, seed), a failure diverges; records every call."""

    def run(lrs, seeds):
        if log is not None:
            log.append(list(zip(lrs, seeds, strict=True)))
        return [Outcome(lr, s, trains(lr, s), not trains(lr, s), 1, 0.0, 0.0, 0.0)
                for lr, s in zip(lrs, seeds, strict=True)]

    return SyncTrainer(run)


def cfg(**kw):
    return EstimateConfig(**{**dict(depth=1, width=1, seeds=3), **kw})


def test_finds_planted_threshold_and_more_probes_take_fewer_rounds_to_the_same_brackets():
    star = {0: 0.37, 1: 0.52, 2: 0.29}
    found = {}
    for probes in (1, 4):
        log = []
        results, trials, rounds = search(cfg(), oracle(lambda lr, s: lr <= star[s], log),
                                         probes=probes)
        for r in results:
            assert r.status == "ok"
            assert r.lo <= star[r.seed] < r.hi and r.hi / r.lo - 1 <= 0.05
            assert abs(math.log(r.lr_star / star[r.seed])) <= math.log(1.05) / 2 + 1e-12
        # at most `probes` rates per seed and round, but the edge round (edge_probes = 4)
        assert all(len(batch) <= 3 * max(probes, 4) for batch in log)
        found[probes] = ([(r.lo, r.hi, r.lr_star) for r in results], rounds)
    assert found[4][0] == found[1][0]
    assert found[4][1] < found[1][1]


def test_slow_low_rates_do_not_trap_the_search():
    # Fails both below 0.1 (too slow) and above 0.37 (diverges): a bisection that starts at the
    # geometric midpoint of [1e-3, 10] sees 0.1 fail and returns the lower end.
    results, _, _ = search(cfg(seeds=1), oracle(lambda lr, s: 0.1 <= lr <= 0.37))
    assert results[0].status == "ok"
    assert results[0].lo <= 0.37 < results[0].hi


def test_noisy_oracle_within_tolerance_of_the_edge():
    rng = random.Random(0)
    noise = {}

    def trains(lr, s):  # flips outcomes within +-3% of the edge at random
        if abs(math.log(lr / 0.4)) < 0.03:
            return noise.setdefault((lr, s), rng.random() < 0.5)
        return lr < 0.4

    results, _, _ = search(cfg(seeds=5), oracle(trains))
    for r in results:
        assert abs(math.log(r.lr_star / 0.4)) < 0.03 + math.log(1.05)


def test_ragged_boundary_takes_upper_edge_and_the_edge_probes_count_the_band_above():
    # Trains below 0.15 and on an island [0.45, 0.5]; the scan goes down from 10 and the first
    # success is 0.464, on the island: its upper edge is the one found
    def trains(lr, s):
        return lr <= 0.15 or 0.45 <= lr <= 0.5

    results, trials, _ = search(cfg(seeds=1), oracle(trains), probes=4)
    r = results[0]
    assert r.lo <= 0.5 < r.hi
    assert r.edge_trained == 0 and r.nonmonotone == 0  # nothing trains in (hi, 1.25 hi]
    # successes again just above the edge: each edge probe that lands there is counted
    def band(lr, s):
        return lr <= 0.37 or 0.40 <= lr <= 0.44

    (r,), trials, _ = search(cfg(seeds=1), oracle(band), probes=1)
    edge = [t for t in trials if t.role == "edge"]
    assert [t.lr for t in edge] == pytest.approx([r.hi * 1.25 ** (j / 4) for j in (1, 2, 3, 4)])
    assert r.edge_trained == sum(band(t.lr, 0) for t in edge) >= 1
    assert r.nonmonotone == r.edge_trained
    assert r.lo <= 0.37 < r.hi  # η* stays the boundary the search reached


def test_widens_above_and_reports_bracket_ends():
    results, trials, _ = search(cfg(seeds=1, lr_max=1.0, widen=10), oracle(lambda lr, s: lr <= 3))
    assert results[0].status == "ok" and results[0].lo <= 3 < results[0].hi
    everything, _, _ = search(cfg(seeds=1, lr_max=1.0, widen=10), oracle(lambda lr, s: True))
    r = everything[0]
    assert r.status == "above_range" and r.lr_star is None
    assert r.lo == pytest.approx(10.0)  # trained at the widened ceiling: a lower bound only


def test_nothing_trains_is_below_range():
    results, trials, _ = search(cfg(seeds=1, widen=1), oracle(lambda lr, s: False))
    assert results[0].status == "below_range" and results[0].lr_star is None
    assert min(t.lr for t in trials) == pytest.approx(1e-3)


def test_arithmetic_midpoint_converges_too():
    results, _, _ = search(cfg(seeds=1, midpoint="arithmetic"), oracle(lambda lr, s: lr <= 0.37))
    r = results[0]
    assert r.lr_star == pytest.approx((r.lo + r.hi) / 2)
    assert r.lo <= 0.37 < r.hi and (r.hi - r.lo) / r.lo <= 0.05


@pytest.mark.parametrize("probes", [3, 7])
def test_several_probes_try_only_nodes_of_the_one_probe_bisection_tree(probes):
    log, one = [], []
    base = dict(seeds=1, midpoint="geometric", edge_probes=0, rtol=0.01)
    (r,), _, rounds = search(cfg(**base), oracle(lambda lr, s: lr <= 0.37, log), probes=probes)
    (r1,), _, rounds1 = search(cfg(**base), oracle(lambda lr, s: lr <= 0.37, one), probes=1)
    assert (r.lo, r.hi) == (r1.lo, r1.hi) and rounds < rounds1
    lo, hi = 0.2154434690031883, 0.46415888336127775  # the scan's cell: 0.464 F, 0.215 S
    inside = [lr for b in log for lr, _ in b if lo < lr < hi]
    for lr in inside:  # at position k / 2^j of the cell in log η
        x = math.log(lr / lo) / math.log(hi / lo) * 2**12
        assert abs(x - round(x)) < 1e-6
    assert all(len(b) <= probes for b in log)
    # 2^j - 1 probes a round cover j levels: the refinement needs about 1/j of the rounds
    levels = {3: 2, 7: 3}[probes]
    assert len([b for b in log if any(lo < lr < hi for lr, _ in b)]) <= \
        math.ceil(len([b for b in one if lo < b[0][0] < hi]) / levels) + 1


def test_bisection_with_one_probe_halves_the_log_bracket():
    log = []
    results, _, rounds = search(cfg(seeds=1, edge_probes=0),
                                oracle(lambda lr, s: lr <= 0.37, log), probes=1)
    assert all(len(b) == 1 for b in log)
    # grid 10, 4.6, 2.2, 1, 0.46 fail, 0.22 trains; log2(log(2.154) / log(1.05)) = 3.97 -> 4
    assert rounds == 6 + 4
    assert results[0].lo <= 0.37 < results[0].hi


def test_auto_probes():
    from milr.base.cost import probes_per_round as probes

    small, big = cfg(width=64, depth=2), cfg(width=1024, depth=8)
    assert probes(small, "cpu", 784, 10) == 1 and probes(big, "cpu", 784, 10) == 1
    assert probes(small, "cuda", 784, 10) == 8  # launch-bound: extra probes are free
    assert probes(cfg(width=1024, depth=8, seeds=5), "cuda", 784, 10) == 1  # 5 x 6.3 GFLOP
    assert probes(cfg(width=512, depth=16, seeds=5), "cuda", 784, 10) == 4  # deep, narrow
    assert probes(cfg(width=2048, depth=16, seeds=5), "cuda", 784, 10) == 1  # compute-bound
    assert probes(cfg(probes=3), "cpu", 784, 10) == 3


def costly_oracle(edge, log):
    """Success iff lr <= edge[seed], after 300 steps; failures diverge within 10 steps."""

    def run(lrs, seeds):
        log.extend(zip(lrs, seeds, strict=True))
        return [Outcome(lr, s, lr <= edge[s], lr > edge[s], 300 if lr <= edge[s] else 10,
                        0.9, 0.9, 0.1) for lr, s in zip(lrs, seeds, strict=True)]

    return SyncTrainer(run)


def test_weighted_split_trades_successes_for_cheap_failures():
    edge = {0: 0.37, 1: 0.52, 2: 0.29, 3: 0.6, 4: 0.45}
    runs = {}
    for midpoint in ("weighted", "geometric"):
        log = []
        results, _, _ = search(cfg(seeds=5, midpoint=midpoint), costly_oracle(edge, log), 1)
        for r in results:  # the same estimand: a success and a failure within rtol around the edge
            assert r.status == "ok" and r.lo <= edge[r.seed] < r.hi <= r.lo * 1.05
        runs[midpoint] = log
    succ = {m: sum(lr <= edge[s] for lr, s in log) for m, log in runs.items()}
    steps = {m: sum(300 if lr <= edge[s] else 10 for lr, s in log) for m, log in runs.items()}
    assert succ["weighted"] < succ["geometric"] and steps["weighted"] < 0.8 * steps["geometric"]


def test_cheapest_split_bisects_for_equal_costs_and_leans_up_for_cheap_failures():
    from milr.engine.search import _cheapest_split, _plan

    def bisection(n, ratio):  # expected cost of always splitting in the middle
        low = n // 2
        return 0.0 if n <= 1 else (low * (ratio + bisection(low, ratio))
                                   + (n - low) * (1 + bisection(n - low, ratio))) / n

    assert _cheapest_split(16, 1.0) == 8 and _plan(16, 1.0)[0] == pytest.approx(bisection(16, 1))
    assert _cheapest_split(16, 0.05) > 12  # near the top: most likely a cheap failure
    assert _cheapest_split(16, 20.0) < 4  # failures dear (slow, non-divergent): go low
    assert _plan(16, 0.05)[0] < 0.7 * bisection(16, 0.05)


class UnevenTrainer:
    """Seed 0's runs finish in one advance, seed 1's in three; success iff lr <= 0.37."""

    def __init__(self):
        self.running, self.admitted, self.clock, self.next_key = {}, [], 0, 0

    @property
    def pending(self):
        return len(self.running)

    def admit(self, lrs, seeds):
        keys = list(range(self.next_key, self.next_key + len(lrs)))
        self.next_key += len(lrs)
        for k, lr, s in zip(keys, lrs, seeds, strict=True):
            self.running[k] = (lr, s, self.clock + (1 if s == 0 else 3))
            self.admitted.append((self.clock, s))
        return keys

    def advance(self):
        self.clock += 1
        done = [k for k, (_, _, end) in self.running.items() if end <= self.clock]
        return [(k, Outcome(lr, s, lr <= 0.37, lr > 0.37, 10, 0.9, 0.9, 0.1))
                for k in done for lr, s, _ in [self.running.pop(k)]]


@pytest.mark.parametrize("probes", [1, 3])
def test_pipelined_seeds_go_at_their_own_pace_with_one_probe(probes):
    trainer = UnevenTrainer()
    results, _, _ = search(cfg(seeds=2), trainer, probes, pipeline=True)
    assert all(r.status == "ok" and r.lo <= 0.37 < r.hi for r in results)
    fast = [t for t, s in trainer.admitted if s == 0 and t < 3]
    if probes == 1:  # seed 0 started three runs while seed 1's first was still training
        assert len(fast) == 3
    else:  # lockstep rounds: everyone waits for seed 1
        assert len(fast) == 3 and {t for t, _ in trainer.admitted} <= set(range(0, 100, 3))
