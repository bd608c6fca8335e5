"""The figures of a search and of a sweep, read back from their artists; the curves in --json
and in a sweep's trials log; bad input to the plot commands."""

import json
import statistics
import sys

import pytest

pytest.importorskip("matplotlib")

from milr import EstimateConfig, estimate  # noqa: E402
from milr.analysis.plot import (  # noqa: E402
    search_figure,
    search_view_from_log,
    search_view_of,
    sweep_figure,
    sweep_table,
    verdict,
)


def offsets(fig, gid, ax=0):
    """x of the points of the scatter `gid` on axes number `ax`."""
    (coll,) = [c for c in fig.axes[ax].collections if c.get_gid() == gid]
    return sorted(float(x) for x, _ in coll.get_offsets())


@pytest.fixture(scope="module")
def est(tiny):
    cfg = EstimateConfig(depth=2, width=16, steps=200, eval_every=20, batch_size=32, seeds=2,
                         threshold=0.75, input_lr_scale=1.0, device="cpu")
    return estimate(cfg, data=tiny)


def test_search_figure_plots_every_trial_by_verdict_and_each_eta_star(est):
    fig = search_figure(search_view_of(est))
    for v in ("success", "diverged", "too slow", "cancelled"):
        # on the decision path, and faded beside them the edge probes (off the path)
        assert offsets(fig, f"verdict:{v}") == sorted(t.lr for t in est.trials
                                                      if verdict(vars(t)) == v
                                                      and t.role == "path")
        assert offsets(fig, f"verdict:{v}:off-path") == sorted(
            t.lr for t in est.trials if verdict(vars(t)) == v and t.role != "path")
    assert sum(verdict(vars(t)) == "success" for t in est.trials) >= 2
    assert any(t.role == "edge" for t in est.trials)
    stars = sorted(s.lr_star for s in est.seeds if s.status == "ok")
    assert stars and offsets(fig, "eta-star") == pytest.approx(stars)
    (median,) = [ln for ln in fig.axes[0].lines if ln.get_gid() == "eta-median"
                 and ln.get_marker() == "D"]  # the mark, not the caps of its seed range
    assert list(median.get_xdata()) == [statistics.median(stars)]
    # the curves of each seed's deciding trials: the largest success and the failure above it
    for s in est.seeds:
        lo = next(t for t in est.trials if t.seed == s.seed and t.lr == s.lo)
        (line,) = [ln for ln in fig.axes[2].lines if ln.get_gid() == f"curve:{s.seed}:lo"]
        assert list(line.get_xdata()) == list(lo.curve_steps)
        assert list(line.get_ydata()) == pytest.approx(list(lo.curve_loss))
        (acc,) = [ln for ln in fig.axes[3].lines if ln.get_gid() == f"accuracy:{s.seed}:lo"]
        assert max(acc.get_ydata()) >= 0.75
    (thr,) = [ln for ln in fig.axes[3].lines if ln.get_gid() == "threshold"]
    assert list(thr.get_ydata()) == [0.75, 0.75]


def test_curves_go_into_json_and_the_trials_log(run_milr, tmp_path):
    quick = ["estimate", "--depth", "1", "--width", "8", "--dataset", "gaussians", "--seeds",
             "1", "--steps", "40", "--eval-every", "20", "--device", "cpu", "--max-rounds", "3",
             "--json"]
    code, out, _ = run_milr(quick)
    assert code == 0
    for t in json.loads(out)["trials"]:
        assert len(t["curve_steps"]) == len(t["curve_acc"]) == len(t["curve_loss"]) \
            == len(t["curve_seen"]) >= 1
        assert t["curve_steps"][-1] == t["steps"] or verdict(t) == "diverged"
    grid = tmp_path / "g.yaml"
    grid.write_text("depths: [1]\nwidths: [8]\nseeds: 1\nsteps: 40\neval_every: 20\n"
                    "dataset: gaussians\ndevice: cpu\nmax_rounds: 3\ncriterion: stable\n")
    log = tmp_path / "t.jsonl"
    code, _, err = run_milr(["sweep", str(grid), "--out", str(tmp_path / "r.csv"), "--trials",
                             str(log)])
    assert code == 0, err
    recs = [json.loads(line) for line in log.read_text().splitlines()[1:]]  # after the header
    assert recs and all(r["max_loss_step"] >= 1 for r in recs)  # stable: largest loss too
    ok = [r for r in recs if r["success"]]
    assert ok and all(r["curve_steps"] == [20, 40] for r in ok)


def write_log(path, curves=True):
    """A trials log of cell (1, 4), seeds 0 and 1, with or without curves (an old log)."""
    recs = []
    for seed, edge in ((0, 1.0), (1, 2.0)):
        for lr in (4.0, 1.5, 0.8, 1.2):
            ok = lr <= edge
            rec = {"depth": 1, "width": 4, "seed": seed, "round": 1, "lr": lr, "success": ok,
                   "diverged": not ok, "steps": 40 if ok else 10, "final_acc": 0.9 if ok else
                   None, "peak_acc": 0.9, "final_loss": 0.3, "cancelled": False}
            if curves:
                rec |= {"curve_steps": [20, 40] if ok else [], "curve_acc": [0.7, 0.9] if ok
                        else [], "curve_loss": [0.5, 0.3] if ok else []}
            recs.append(rec)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


def test_plot_search_reads_a_log_with_and_without_curves(tmp_path, run_milr):
    log = tmp_path / "t.jsonl"
    recs = write_log(log)
    view = search_view_from_log(str(log), 1, 4)
    assert [(s.lo, s.hi) for s in view.seeds] == [(0.8, 1.2), (1.5, 4.0)]
    fig = search_figure(view)
    assert offsets(fig, "verdict:success") == sorted(r["lr"] for r in recs if r["success"])
    assert offsets(fig, "verdict:diverged") == sorted(r["lr"] for r in recs if r["diverged"])
    assert offsets(fig, "eta-star") == []  # no --results: no status, so no η* is shown
    csv = tmp_path / "r.csv"
    csv.write_text("depth,width,seed,status,lr_star,threshold,criterion\n"
                   "1,4,0,ok,0.98,0.8,accuracy\n1,4,1,unfinished,,0.8,accuracy\n")
    fig = search_figure(search_view_from_log(str(log), 1, 4, str(csv)))
    assert offsets(fig, "eta-star") == [0.98]  # only the seed whose status is ok
    write_log(log, curves=False)  # a trials log from before the curves
    out = tmp_path / "s.svg"
    code, stdout, err = run_milr(["plot", "search", str(log), "--cell", "1", "4", "--out",
                                  str(out)])
    assert code == 0 and out.read_text().startswith("<?xml")
    assert "no curves" in err and str(out) in stdout


def test_evaluations_that_stopped_early_are_drawn_hollow(tmp_path):
    """A trial's evaluation that saw fewer examples than the fullest one (an early exit) is
    marked, and the curves' legend says what its accuracy is; full evaluations are not marked.
    No title or legend runs into another (that note, as the accuracy panel's title, once ran
    into the loss panel's)."""
    log = tmp_path / "t.jsonl"
    recs = write_log(log)
    for r in recs:
        if r["curve_steps"]:
            r["curve_seen"] = [1024, 2000] if r["seed"] == 0 else [2000, 2000]
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    fig = search_figure(search_view_from_log(str(log), 1, 4))
    marked = {ln.get_gid(): list(ln.get_xdata()) for ln in fig.axes[3].lines
              if (ln.get_gid() or "").startswith("partial:")}
    assert marked == {"partial:0:lo": [20]}
    assert "stopped once its verdict was certain" in legend_text(fig)
    assert not overlapping_texts(fig)
    for r in recs:  # every deciding evaluation stopped early: the recorded size tells
        if r["curve_steps"]:
            r |= {"curve_seen": [1024, 1024], "eval_examples": 2000}
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    fig = search_figure(search_view_from_log(str(log), 1, 4))
    assert {ln.get_gid() for ln in fig.axes[3].lines
            if (ln.get_gid() or "").startswith("partial:")} == {"partial:0:lo", "partial:1:lo"}
    write_log(log)  # no curve_seen (an older log): every evaluation saw all
    fig = search_figure(search_view_from_log(str(log), 1, 4))
    assert not [ln for ln in fig.axes[3].lines if (ln.get_gid() or "").startswith("partial:")]
    assert "stopped" not in legend_text(fig)
    assert not overlapping_texts(fig)


def legend_text(fig) -> str:
    """The entries of the curves' legend (below the loss panel, for both curve panels)."""
    return " ".join(" ".join(t.get_text() for t in fig.axes[2].get_legend().get_texts()).split())


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of titles and legends of the figure whose boxes, as drawn, overlap."""
    renderer = fig.canvas.get_renderer()
    boxes = [(a.get_title(), a.title.get_window_extent(renderer)) for a in fig.axes]
    boxes += [(f"legend {i}", lg.get_window_extent(renderer)) for i, lg in enumerate(
        [*fig.legends, *(a.get_legend() for a in fig.axes if a.get_legend())])]
    return [(a, b) for i, (a, box) in enumerate(boxes) for b, other in boxes[i + 1:]
            if box.overlaps(other)]


LAW = "depth,width,seed,lr_star,status\n" + "".join(
    f"{d},{w},{s},{3.0 * (d * w) ** -0.5 * (1 + 0.05 * s)},ok\n"
    for d in (1, 2, 4) for w in (16, 32, 64) for s in range(3) if (d, w) != (4, 16)) + \
    "4,16,0,,below_range\n4,16,1,,below_range\n4,16,2,,below_range\n"


def test_sweep_figure_marks_cells_and_overlays_protocols(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("".join("1,64,2,,unfinished\n" if line.startswith("1,64,2,") else line + "\n"
                         for line in LAW.splitlines()))
    b.write_text(LAW.replace("3.0 *", "x"))
    main = sweep_table(str(a))
    fig = sweep_figure(main)
    texts = {t.get_gid(): t.get_text() for t in fig.axes[0].texts}
    assert texts["cell:4:16"].startswith("no η*") and "below range ×3" in texts["cell:4:16"]
    assert "1 of 3 no η*" in texts["cell:1:64"] and len(texts) == 9
    depth_lines = {ln.get_gid(): ln for ln in fig.axes[1].lines if ln.get_gid()
                   and ln.get_gid().startswith("depth:")}
    assert {g: len(ln.get_xdata()) for g, ln in depth_lines.items()} == {
        "depth:1": 3, "depth:2": 3, "depth:4": 2}
    other = sweep_table(str(b))
    fig = sweep_figure(main, [other])
    ax = fig.axes[1]
    pts = {ln.get_gid(): len(ln.get_xdata()) for ln in ax.lines
           if (ln.get_gid() or "").startswith("points:")}
    assert pts == {"points:a": 8, "points:b": 8}
    assert {ln.get_gid() for ln in ax.lines if (ln.get_gid() or "").startswith("fit:")} == {
        "fit:a", "fit:b"}
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(lab.startswith("a: α = 0.50") for lab in labels), labels


@pytest.mark.parametrize("args, says", [
    (["plot", "sweep", "NOCOLS"], "missing column lr_star"),
    (["plot", "sweep", "LAW", "--out", "map.txt"], "unknown extension .txt"),
    (["plot", "sweep", "LAW", "--out", "/nonexistent/dir/m.png"], "does not exist"),
    (["plot", "sweep", "LAW", "--compare", "NOCOLS"], "missing column lr_star"),
    (["plot", "search", "LOG", "--cell", "2", "4"], "no trials of that cell"),
    (["plot", "search", "LOG", "--cell", "1", "4", "--results", "NOCOLS"], "missing column"),
    (["plot", "search", "LOG", "--cell", "1", "4", "--out", "OUTDIR"], "is a directory"),
])
def test_bad_plot_input_is_one_line_and_exit_2(args, says, tmp_path, run_milr):
    (tmp_path / "law.csv").write_text(LAW)
    (tmp_path / "nocols.csv").write_text("depth,width,eta\n1,4,0.5\n")
    write_log(tmp_path / "t.jsonl")
    subst = {"NOCOLS": tmp_path / "nocols.csv", "LAW": tmp_path / "law.csv",
             "LOG": tmp_path / "t.jsonl", "OUTDIR": tmp_path}
    code, _, err = run_milr([str(subst.get(a, a)) for a in args])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and says in lines[0], err


def test_plot_without_matplotlib_says_how_before_any_training(monkeypatch, run_milr):
    monkeypatch.setitem(sys.modules, "matplotlib", None)

    def no_training(*a, **k):
        raise AssertionError("trained before checking for matplotlib")

    monkeypatch.setattr("milr.engine.estimation.estimate", no_training)
    code, _, err = run_milr(["estimate", "--depth", "1", "--width", "4", "--device", "cpu",
                             "--plot", "s.png"])
    assert code == 2 and err.strip() == ("milr: error: --plot needs matplotlib: "
                                         "pip install 'milr[plot]'")
