"""The scan (`milr scan`): the engine's full-budget mode held to the textbook, and the analysis
(stability edge, η* brackets, η_opt's parabola, bootstrap and `flat`) on synthetic curves whose
answers are known."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from milr.base.config import EstimateConfig, ScanConfig
from milr.base.results import ScanRun
from milr.engine.scan import (
    analyse,
    costs,
    optimum,
    parabola_vertex,
    scan_grid,
    seed_edges,
    stability_edge,
)
from milr.engine.train import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reference import loader, make_net, optimiser  # noqa: E402
from test_textbook import config  # noqa: E402  (its cell: the budget is no multiple of eval_every)


@pytest.fixture(scope="module")
def tiny64(tiny):
    return dataclasses.replace(tiny, x_train=tiny.x_train.double(), x_eval=tiny.x_eval.double())


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def textbook(cfg: EstimateConfig, data, lr: float, seed: int) -> tuple[float, float, float]:
    """nn.Sequential + torch.optim in float64 for the whole budget: the mean training loss over
    the last eval interval's minibatches, then the validation loss and accuracy."""
    net = make_net(cfg, data, seed).double()
    opt = optimiser(cfg, net, lr)
    loss_fn, losses = nn.CrossEntropyLoss(), []
    for xb, yb in loader(cfg, data, seed):
        loss = loss_fn(net(xb.double()), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    last = (cfg.steps - 1) // cfg.eval_every * cfg.eval_every  # the last evaluation before
    with torch.no_grad():
        out = net(data.x_eval.double())
        val = loss_fn(out, data.y_eval).item()
        acc = (out.argmax(1) == data.y_eval).double().mean().item()
    return statistics.fmean(losses[last:]), val, acc


@pytest.mark.parametrize("optimizer, rates", [("sgd", (0.03, 0.3, 1.0)),
                                              ("adam", (1e-3, 3e-3, 0.01))])
def test_final_losses_are_the_textbooks(optimizer, rates, tiny64, one_thread):
    """Three rates, two seeds, the whole budget in float64: the engine's training loss (mean over
    the last interval), validation loss and accuracy are torch.optim's, to rounding."""
    cfg = config(optimizer=optimizer)
    members = [(lr, s) for lr in rates for s in (0, 1)]
    runs = train(cfg, tiny64, [lr for lr, _ in members], [s for _, s in members],
                 full_budget=True, dtype=torch.float64)
    for (lr, seed), run in zip(members, runs, strict=True):
        assert isinstance(run, ScanRun) and not run.diverged and run.steps == cfg.steps
        assert run.eval_steps == (30, 60, 90, 120, 150, 180, 200)
        want = textbook(cfg, tiny64, lr, seed)
        got = (run.train_loss, run.val_loss, run.val_acc)
        assert got == pytest.approx(want, rel=1e-10), (lr, seed)
        assert (run.eval_train_loss[-1], run.eval_val_loss[-1]) == got[:2]


# test_textbook's rates: too slow, trains, stalls or blows up late, diverges
RATES = (0.01, 0.3, 1.0, 2.0, 5.0, 15.0, 40.0, 1e3, 1e5)


@pytest.fixture(scope="module")
def both(tiny):
    """Every member of RATES × 4 seeds, as the search trains it and as a scan does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        members = [(lr, s) for lr in RATES for s in range(4)]
        lrs, seeds = [lr for lr, _ in members], [s for _, s in members]
        yield train(config(), tiny, lrs, seeds), train(config(), tiny, lrs, seeds,
                                                        full_budget=True)
    finally:
        torch.set_num_threads(threads)


def test_a_scans_verdicts_are_the_searchs(both):
    """A scan's run gives the search's verdict exactly: success where the search's run
    succeeded, at its stopping step (met_step); a divergence before any success at the same
    check. So each seed's η* bracket on the grid is the search's on that grid."""
    searched, scanned = both
    for o, s in zip(searched, scanned, strict=True):
        assert s.success == o.success, (o.lr, o.seed)
        assert s.met_step == (o.steps if o.success else None)
        if o.diverged:
            assert (s.diverged, s.steps, s.first_bad_step) == (True, o.steps, o.first_bad_step)
    assert any(o.success for o in searched) and any(o.diverged for o in searched)
    assert any(not o.success and not o.diverged for o in searched)  # too slow, too


def test_a_diverged_run_stops_there_and_is_marked(both):
    """A run that diverges stops at the check that caught it, has no final validation numbers,
    and no evaluation after it; one that does not trains the whole budget, past its success."""
    _, scanned = both
    gone = [s for s in scanned if s.diverged]
    assert gone and all(s.steps < config().steps for s in gone)
    for s in gone:
        assert s.val_loss is None and s.val_acc is None and s.final_acc is None
        assert all(step < s.steps for step in s.eval_steps)
        assert s.steps % config().nonfinite_every == 0 or s.steps % config().eval_every == 0
    kept = [s for s in scanned if not s.diverged]
    assert kept and all(s.steps == config().steps and s.eval_steps[-1] == config().steps
                        for s in kept)
    assert any(s.success and s.met_step < config().steps for s in kept)  # trained on past it


def test_the_grid_and_its_refusals():
    assert scan_grid(1e-3, 8e-3, 1) == pytest.approx([1e-3, 2e-3, 4e-3, 8e-3])
    grid = scan_grid(1e-5, 0.1, 4)
    assert len(grid) == 54 and grid[-1] <= 0.1 and grid[1] / grid[0] == pytest.approx(2 ** 0.25)
    with pytest.raises(ValueError, match="has 2 rate"):
        scan_grid(1.0, 2.0, 1)
    with pytest.raises(ValueError, match="more than"):
        scan_grid(1e-5, 0.1, 10**6)
    with pytest.raises(ValueError, match="objective"):
        ScanConfig(objective="val-acc")


LRS = [0.01 * 2 ** (i / 2) for i in range(13)]


def bowl(center: float, seeds: int = 5, noise: float = 0.0, depth: float = 1.0):
    """A cost [rate, seed] quadratic in log-rate with its minimum at `center`, each seed shifted
    by a constant (which moves no minimum) plus iid noise of that size."""
    x = np.log(LRS)[:, None]
    rng = np.random.default_rng(1)
    shift = np.linspace(0, 0.3, seeds)[None, :]
    return depth * (x - math.log(center)) ** 2 + shift + noise * rng.normal(size=(len(LRS),
                                                                                   seeds))


NONE = np.zeros((len(LRS), 5), dtype=bool)


@pytest.mark.parametrize("center", [0.03, 0.0537, 0.1, 0.2718])
def test_the_parabola_finds_a_known_minimum(center):
    """On a curve quadratic in log-rate the refined η_opt is the minimum itself, between grid
    points too, with an interval around it."""
    o = optimum(LRS, bowl(center), NONE)
    assert o.status == "ok" and o.eta_opt == pytest.approx(center, rel=1e-9)
    assert o.lo <= o.eta_opt <= o.hi


def test_the_parabola_vertex_is_clamped_and_needs_convexity():
    assert parabola_vertex((0.0, 1.0, 2.0), (1.0, 0.0, 1.0)) == pytest.approx(1.0)
    assert parabola_vertex((0.0, 1.0, 3.0), (4.0, 1.0, 0.0)) == pytest.approx(2.3)  # uneven
    assert parabola_vertex((0.0, 1.0, 2.0), (3.0, 2.0, 1.01)) == 2.0  # beyond x2: clamped
    assert parabola_vertex((0.0, 1.0, 2.0), (1.0, 1.0, 1.0)) is None  # level
    assert parabola_vertex((0.0, 1.0, 2.0), (0.0, 1.0, 0.0)) is None  # concave
    assert parabola_vertex((0.0, 1.0, 2.0), (1.0, 0.0, math.inf)) is None


@pytest.mark.parametrize("center", [1e-3, 0.01, 10.0])
def test_a_minimum_at_an_end_is_flat(center):
    o = optimum(LRS, bowl(center), NONE)
    assert (o.status, o.eta_opt, o.lo, o.hi) == ("flat", None, None, None)


def test_a_curve_flat_within_noise_is_flat_and_a_deep_one_is_not():
    """Noise on a level curve puts the resampled minimum anywhere, the ends included: flat. The
    same noise on a bowl leaves the minimum inside: ok."""
    level = bowl(0.1, depth=0.0, noise=0.05)
    assert 0 < int(np.argmin(np.median(level, axis=1))) < len(LRS) - 1  # no end to blame
    assert optimum(LRS, level, NONE).status == "flat"
    assert optimum(LRS, bowl(0.1, depth=0.5, noise=0.05), NONE).status == "ok"


def test_diverged_runs_are_the_worst_and_all_diverged_is_said():
    acc = np.full((3, 2), 0.9)
    div = np.array([[False, True], [False, False], [True, True]])
    assert costs(acc, div, "val-accuracy") == pytest.approx(np.array([[0.1, 1.0], [0.1, 0.1],
                                                                      [1.0, 1.0]]))
    assert costs(np.full((3, 2), 0.5), div, "val-loss")[2].tolist() == [math.inf, math.inf]
    assert costs(np.array([[math.nan]]), np.array([[False]]), "train-loss")[0, 0] == math.inf
    everything = np.ones((3, 2), dtype=bool)
    assert optimum([1.0, 2.0, 4.0], np.zeros((3, 2)), everything).status == "all_diverged"


def test_stability_edges_on_known_patterns():
    lrs = [1.0, 2.0, 4.0, 8.0, 16.0]
    assert stability_edge(lrs, [0, 0, 0, 1, 1]) == (4.0, "ok")
    assert stability_edge(lrs, [0, 0, 1, 0, 1]) == (2.0, "ok")  # a later recovery changes none
    assert stability_edge(lrs, [0, 0, 0, 0, 0]) == (16.0, "above_range")
    assert stability_edge(lrs, [1, 0, 0, 0, 0]) == (None, "below_range")


def test_accuracy_brackets_on_known_patterns():
    """Each seed's bracket as the search reads one: the largest success and the next failure
    above it; failures between successes counted as non-monotone."""
    lrs = [1.0, 2.0, 4.0, 8.0, 16.0]
    never = [0] * 5
    ok = seed_edges(0, lrs, never, [0, 1, 1, 0, 0])
    assert (ok.lo, ok.hi, ok.status, ok.lr_star, ok.nonmonotone) == (4.0, 8.0, "ok",
                                                                    math.sqrt(32), 0)
    holes = seed_edges(1, lrs, never, [1, 0, 1, 0, 1])
    assert (holes.lo, holes.hi, holes.status, holes.nonmonotone) == (16.0, None,
                                                                     "above_range", 2)
    none = seed_edges(2, lrs, never, [0] * 5)
    assert (none.lo, none.status, none.lr_star) == (None, "below_range", None)


def run(lr, seed, **kw) -> ScanRun:
    base = dict(success=False, diverged=False, steps=100, final_acc=0.9, peak_acc=0.9,
                final_loss=0.1, train_loss=0.1, val_loss=0.2, val_acc=0.9)
    return ScanRun(lr, seed, **{**base, **kw})


def test_the_result_row_and_json():
    """A synthetic grid through `analyse`: the row the sweep stores, the ratios, and a JSON
    document with every (rate, seed) run."""
    lrs, seeds = [1.0, 2.0, 4.0, 8.0], [0, 1, 2]
    loss = {1.0: 0.5, 2.0: 0.3, 4.0: 0.4, 8.0: None}
    runs = [run(lr, s, val_loss=loss[lr] if loss[lr] is None else loss[lr] + 0.01 * s,
                diverged=loss[lr] is None, success=lr <= 2.0, met_step=50 if lr <= 2.0 else None)
            for lr in lrs for s in seeds]
    r = analyse(config(), ScanConfig(), runs, lrs, seeds)
    row = r.row()
    assert row["eta_opt_status"] == "ok" and 1.0 < row["eta_opt"] < 4.0
    assert row["stability_edge"] == 4.0 and row["eta_star_median"] == pytest.approx(
        math.sqrt(8))
    assert row["eta_opt_over_eta_star"] == pytest.approx(row["eta_opt"] / math.sqrt(8))
    assert row["eta_opt_over_stability_edge"] == pytest.approx(row["eta_opt"] / 4.0)
    assert [x.diverged for x in r.rates] == [0, 0, 0, 3]
    assert r.rates[3].val_loss == (math.inf, math.inf, math.inf)
    from milr.base.results import json_safe

    doc = json.loads(json.dumps(json_safe(r.to_dict()), allow_nan=False))
    assert len(doc["runs"]) == 12 and doc["optimum"]["status"] == "ok"
    assert doc["rates"][3]["val_loss"] == [None, None, None]


def test_milr_scan_json_end_to_end(run_milr):
    """The command: a per-rate table and every run in --json, the three rates beside them."""
    code, out, err = run_milr(["scan", "--depth", "1", "--width", "8", "--seeds", "2",
                               "--steps", "60", "--eval-every", "20", "--device", "cpu",
                               "--lr-min", "0.05", "--lr-max", "800", "--points-per-octave",
                               "1", "--json"])
    assert code in (0, None), err
    doc = json.loads(out)
    assert len(doc["grid"]) == 14 and len(doc["runs"]) == 28 and len(doc["rates"]) == 14
    assert doc["objective"] == "val-loss" and doc["scan"]["points_per_octave"] == 1
    assert {s["seed"] for s in doc["seeds"]} == {0, 1}
    assert [(r["lr"], r["seed"]) for r in doc["runs"]] == [(lr, s) for lr in doc["grid"]
                                                            for s in (0, 1)]  # grid order
    assert doc["rates"][-1]["diverged"] == 2  # 800 diverges


def test_milr_scan_prints_the_table_and_the_three_rates(run_milr):
    code, out, err = run_milr(["scan", "--depth", "1", "--width", "8", "--seeds", "2",
                               "--steps", "60", "--eval-every", "20", "--device", "cpu",
                               "--lr-min", "0.05", "--lr-max", "800", "--points-per-octave",
                               "1"])
    assert code in (0, None), err
    for words in ("η_opt", "stability edge", "η* on the grid", "η_opt / η*", "diverged"):
        assert words in out


def test_under_stable_a_scan_is_the_searchs_run_evaluated(tiny, one_thread):
    """Under criterion stable the search's run already trains the whole budget: a scan's run is
    the same run (verdict, stopping step), evaluated every eval_every steps for the record."""
    cfg = config(criterion="stable", threshold=None)
    lrs = [0.3, 2.0, 15.0, 1e3]
    searched = train(cfg, tiny, lrs, [0] * 4)
    scanned = train(cfg, tiny, lrs, [0] * 4, full_budget=True)
    assert [(o.success, o.diverged, o.steps) for o in searched] == [
        (s.success, s.diverged, s.steps) for s in scanned]
    assert {s.diverged for s in scanned} == {True, False}
    for s in scanned:
        assert s.met_step == (cfg.steps if s.success else None)
        assert not s.success or (s.eval_steps[-1] == cfg.steps and s.val_acc is not None)


@pytest.mark.parametrize("diverges_at, edge, median, status", [
    # seed -> the first rate it diverged at (None: never on the grid)
    ({0: 4.0, 1: 8.0, 2: None}, 2.0, 4.0, "ok"),  # the lowest seed's edge and the median known
    ({0: 4.0, 1: None, 2: None}, 2.0, None, "ok"),  # the median reaches the unbounded seeds
    ({0: None, 1: None, 2: None}, 8.0, None, "above_range"),  # only a lower bound
    ({0: 1.0, 1: 8.0, 2: 8.0}, None, None, "below_range"),
])
def test_the_scans_stability_edge_is_the_lowest_seeds_and_claims_no_more(
        diverges_at, edge, median, status):
    """The scan's stability edge (the smallest seed's) is known once one seed diverged inside the
    grid, whatever the others did; its median only where known seeds reach the middle."""
    lrs, seeds = [1.0, 2.0, 4.0, 8.0], [0, 1, 2]

    def diverged(lr, s):
        return diverges_at[s] is not None and lr >= diverges_at[s]

    runs = [run(lr, s, val_loss=None if diverged(lr, s) else abs(lr - 2.0) + 0.1,
                diverged=diverged(lr, s)) for lr in lrs for s in seeds]
    r = analyse(config(), ScanConfig(), runs, lrs, seeds)
    row = r.row()
    assert (row["stability_edge"], row["stability_edge_median"],
            row["stability_edge_status"]) == (edge, median, status)
    ratio = row["eta_opt_over_stability_edge"]
    if status == "ok" and row["eta_opt"] is not None:
        assert ratio == pytest.approx(row["eta_opt"] / edge)
    else:
        assert ratio is None


def test_a_plateau_at_the_minimum_is_flat_not_a_midpoint():
    """Accuracies tie: a minimum level with its neighbour has no vertex, whatever the plateau's
    width (a parabola through it would always put η_opt halfway between the two)."""
    lrs = [2.0 ** i for i in range(8)]
    acc = np.array([0.5, 0.7, 0.9, 0.9, 0.9, 0.9, 0.9, 0.6])
    cost = np.repeat((1 - acc)[:, None], 3, axis=1)
    o = optimum(lrs, cost, np.zeros_like(cost, dtype=bool))
    assert o.status == "flat" and o.eta_opt is None


def test_eta_opt_over_eta_star_only_where_every_seeds_eta_star_is_known():
    """A median η* that leaves out a seed whose η* lies above the grid is biased low: no ratio."""
    lrs, seeds = [1.0, 2.0, 4.0, 8.0], [0, 1, 2]
    runs = [run(lr, s, val_loss=abs(lr - 2.0) + 0.1 + 0.01 * s,
                success=lr <= (8.0 if s == 2 else 2.0)) for lr in lrs for s in seeds]
    r = analyse(config(), ScanConfig(), runs, lrs, seeds)
    row = r.row()
    assert row["eta_star_status"] == "above_range" and row["eta_star_median"] is not None
    assert row["eta_opt_status"] == "ok" and row["eta_opt_over_eta_star"] is None


def test_a_minimum_beside_a_diverged_rate_has_an_interval_reaching_it():
    """Where the rate above the lowest median diverged, nothing places the optimum between the
    two: η_opt is the grid rate, and its interval reaches the diverged rate rather than stopping
    at the grid rate as if the optimum were known to lie below it."""
    cost = bowl(LRS[8])
    cost[9:] = math.inf  # every rate above the minimum diverged
    o = optimum(LRS, cost, np.isinf(cost))
    assert (o.status, o.eta_opt, o.refined) == ("ok", pytest.approx(LRS[8]), False)
    assert (o.lo, o.hi) == (pytest.approx(LRS[8]), pytest.approx(LRS[9]))
