"""η* at a second, shorter budget from the same search (`also_steps`): exact verdicts from where
each run stopped, refined to rtol, and no change to the budget's own η*."""

import math

import pytest

from milr import EstimateConfig
from milr.engine.search import SyncTrainer, search
from milr.engine.train import Outcome

EDGE = 2.0  # diverges above this at any budget


def to_threshold(lr):
    """Steps to reach the threshold: slow at small rates, slower again near the edge."""
    return math.ceil((20 / lr + 5000 * (lr / EDGE) ** 8) / 50) * 50


def accuracy_fake(budget):
    def run(lrs, seeds):
        out = []
        for lr, s in zip(lrs, seeds, strict=True):
            if lr > EDGE:
                out.append(Outcome(lr, s, False, True, 10, None, 0.1, 9.0))
            else:
                t = to_threshold(lr)
                ok = t <= budget
                out.append(Outcome(lr, s, ok, False, t if ok else budget, 0.9, 0.9, 0.1))
        return out
    return SyncTrainer(run)


def edge_at(budget):
    """The largest rate that reaches the threshold within `budget` steps (by bisection)."""
    lo, hi = 0.05, EDGE
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if to_threshold(mid) <= budget else (lo, mid)
    return lo


@pytest.mark.parametrize("short", [100, 300, 500])
def test_eta_at_a_shorter_budget_brackets_its_true_edge(short):
    base = dict(depth=1, width=1, seeds=2, steps=1000, rtol=0.02, threshold=0.8)
    plain, plain_trials, _ = search(EstimateConfig(**base), accuracy_fake(1000), 1)
    both, trials, _ = search(EstimateConfig(**base, also_steps=short), accuracy_fake(1000), 1)
    direct, _, _ = search(EstimateConfig(**{**base, "steps": short}), accuracy_fake(short), 1)
    for p, b, d in zip(plain, both, direct, strict=True):
        # the budget's own result is untouched, its trials run first and unchanged
        assert (b.status, b.lo, b.hi, b.lr_star) == (p.status, p.lo, p.hi, p.lr_star)
        assert b.also_status == "ok" == d.status
        assert b.also_lo <= edge_at(short) < b.also_hi
        assert b.also_hi / b.also_lo - 1 <= 0.02
        assert d.lo <= edge_at(short) < d.hi  # a search at that budget agrees
        assert b.also_lr_star < b.lr_star  # a shorter budget, a smaller η*
    assert [t for t in trials if t.seed == 0][:len([t for t in plain_trials if t.seed == 0])] \
        == [t for t in plain_trials if t.seed == 0]


def stable_fake(also_steps):
    """Diverges above 1.0, later the closer it is (step 10 at 2.0, 5000 near 1.0); a run is
    caught at the next check, 10 steps on, and reports where it diverged, as the engine does."""
    def run(lrs, seeds):
        out = []
        for lr, s in zip(lrs, seeds, strict=True):
            bad = None if lr <= 1.0 else min(1000, math.ceil(10 / (lr - 1.0) ** 2))
            stop = 1000 if bad is None else min(1000, bad + 10)
            out.append(Outcome(lr, s, bad is None, bad is not None, stop, None, 0.0, 0.5,
                               first_bad_step=bad,
                               also_success=bad is None or bad > also_steps + 1))
        return out
    return SyncTrainer(run)


def test_under_stable_a_shorter_budget_has_a_larger_eta():
    base = dict(depth=1, width=1, seeds=1, steps=1000, rtol=0.02, criterion="stable")
    res, _, _ = search(EstimateConfig(**base, also_steps=100), stable_fake(100), 1)
    r = res[0]
    true_short = 1.0 + math.sqrt(10 / 100)  # diverges after step 100 up to here
    assert r.status == "ok" and r.lo <= 1.0 < r.hi
    assert r.also_status == "ok" and r.also_lo <= true_short < r.also_hi


def test_a_seed_without_eta_at_the_budget_has_none_at_the_shorter_one():
    base = dict(depth=1, width=1, seeds=1, steps=1000, threshold=0.8, lr_min=3.0, lr_max=10.0,
                widen=1.0)
    res, _, _ = search(EstimateConfig(**base, also_steps=500), accuracy_fake(1000), 1)
    assert res[0].status == "below_range" and res[0].also_status == "below_range"
    assert res[0].also_lr_star is None


@pytest.mark.parametrize("bad", [-50, 1000, 2000, 75])
def test_also_steps_must_be_a_multiple_of_eval_every_below_the_budget(bad):
    with pytest.raises(ValueError, match="also_steps"):
        EstimateConfig(depth=1, width=1, steps=1000, also_steps=bad)


def test_the_engine_runs_the_shorter_budget_search_to_its_end(tiny):
    from milr import estimate

    cfg = EstimateConfig(depth=2, width=16, steps=200, eval_every=20, also_steps=60,
                         threshold=0.75, seeds=2, rtol=0.05, device="cpu")
    est = estimate(cfg, data=tiny)
    assert [s.also_status for s in est.seeds] == ["ok", "ok"]
    assert not any(t.cancelled for t in est.trials)  # a success must not cancel the probes below
    for s in est.seeds:
        mine = [t for t in est.trials if t.seed == s.seed]
        assert any(t.lr == s.also_lo and t.success and t.steps <= 60 for t in mine)
        assert any(t.lr == s.also_hi and not (t.success and t.steps <= 60) for t in mine)


def test_the_shorter_budgets_verdicts_are_those_of_real_runs_of_that_budget(tiny):
    """Under stable, each run's verdict at also_steps equals a real run of exactly also_steps
    steps at the same rate and seed, including runs that diverge between also_steps and the
    check that catches them (the old rule read the check's step as the divergence's)."""
    from milr.engine.train import train

    # a warm-up spreads the divergences over many steps, on both sides of step 25
    base = dict(depth=2, width=16, criterion="stable", eval_every=25, warmup_steps=20,
                nonfinite_every=10, seeds=1, device="cpu")
    lrs = [2 * 1.02**x for x in range(240)]
    seeds = [0, 1] * (len(lrs) // 2)
    long = train(EstimateConfig(**base, steps=200, also_steps=25), tiny, lrs, seeds)
    short = train(EstimateConfig(**base, steps=25), tiny, lrs, seeds)
    assert [o.also_success for o in long] == [o.success for o in short]
    assert 0 < sum(o.success for o in short) < len(short)
    assert all(o.first_bad_step <= o.steps for o in long if o.first_bad_step)
    # the old rule (a failure counts as diverged at the step of the check that caught it)
    # was wrong for some of these members
    old = [o.success or o.steps > 25 for o in long]
    assert old != [o.success for o in short]


def test_also_steps_below_the_warm_up_is_refused():
    with pytest.raises(ValueError, match=r"warmup_steps \(100\) must not exceed also_steps"):
        EstimateConfig(depth=1, width=1, steps=1000, warmup_steps=100, also_steps=50)
