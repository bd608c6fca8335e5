"""Scans everywhere (issue 31, items 3 and 4): grids with `measure: scan` through `milr sweep`
(rows equal to `milr scan --json`, resume, no mixing with a search), `milr fit` of η_opt and the
other scan columns by their statuses, and `milr plot scan` from scan files and a sweep's log."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from milr.base.config import EstimateConfig, ScanConfig
from milr.base.results import ScanRun, json_safe
from milr.engine.scan import ROW_FIELDS, analyse, scan_grid
from milr.sweep import run as sw
from milr.sweep.executors import local_runner
from milr.sweep.grid import GridError, parse_grid
from milr.sweep.store import ResultStore, StoreError

# depth 1, widths 4 and 8, 2 seeds: 14 rates from 0.05 to 800 (the top ones diverge), seconds
OPTIONS = {"dataset": "gaussians", "seeds": 2, "steps": 60, "eval_every": 20, "lr_min": 0.05,
           "lr_max": 800, "points_per_octave": 1, "device": "cpu"}
GRID = "measure: scan\ndepths: [1]\nwidths: [4, 8]\n" + "".join(
    f"{k}: {v}\n" for k, v in OPTIONS.items())


def counting():
    """local_runner, recording the (depth, width) of every task it is given."""
    calls = []

    def run(tasks):
        def seen():
            for t in tasks:
                calls.append((t.config.depth, t.config.width, t.config.seeds))
                yield t
        yield from local_runner(seen())

    return run, calls


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The tiny scan grid swept once, with its trials log: (results, log, tasks run)."""
    where = tmp_path_factory.mktemp("scan-sweep")
    run, calls = counting()
    sw.run_sweep(parse_grid(GRID), where / "r.csv", run, where / "t.jsonl")
    return where / "r.csv", where / "t.jsonl", calls


def scan_json(run_milr, width: int) -> dict:
    args = ["scan", "--depth", "1", "--width", str(width), "--json"]
    for k, v in OPTIONS.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    code, out, err = run_milr(args)
    assert code in (0, None), err
    return json.loads(out)


def same(text: str, value) -> bool:
    """A results file's text against a JSON value (empty: null)."""
    if value is None or isinstance(value, str):
        return text == ("" if value is None else value)
    return float(text) == value


def test_a_scan_sweeps_rows_and_log_are_milr_scan_json(swept, run_milr):
    """Each cell's row holds `milr scan --json`'s summary of that cell (same config and seeds:
    the same numbers), and its log record the whole document, every run included."""
    results, log, calls = swept
    assert calls == [(1, 4, 2), (1, 8, 2)]  # one task per cell, all its seeds
    rows = ResultStore(results, "scan").rows()
    records = [json.loads(line) for line in log.read_text().splitlines()[1:]]
    assert [(r["depth"], r["width"]) for r in rows] == [("1", "4"), ("1", "8")]
    assert {r["eta_opt_status"] for r in rows} & {"ok"}  # a number is compared, not only None
    for row, rec, width in zip(rows, records, (4, 8), strict=True):
        doc = scan_json(run_milr, width)
        assert all(same(row[k], doc[k]) for k in ROW_FIELDS), (row, doc)
        assert (row["seeds"], row["seed"], row["points_per_octave"], row["rates"]) == (
            "2", "0", "1", str(len(doc["grid"])))
        assert rec["measure"] == "scan" and (rec["depth"], rec["width"]) == (1, width)
        for key in ("config", "scan", "grid", "optimum", "rates", "seeds", "runs"):
            assert rec[key] == doc[key], key


def test_a_scan_sweep_resumes_without_recomputing(swept, tmp_path):
    """A rerun finds every cell stored; another seed count scans the cells again (its new rows
    count), a third run nothing."""
    results, log, _ = swept
    out, trials = tmp_path / "r.csv", tmp_path / "t.jsonl"
    out.write_bytes(results.read_bytes())
    trials.write_bytes(log.read_bytes())
    run, calls = counting()
    assert sw.run_sweep(parse_grid(GRID), out, run, trials).ran == 0 and calls == []
    three = GRID.replace("seeds: 2", "seeds: 3")
    report = sw.run_sweep(parse_grid(three), out, run, trials)
    assert calls == [(1, 4, 3), (1, 8, 3)] and report.ran == 2
    assert [r["seeds"] for r in report.rows] == ["3", "3"] and len(ResultStore(out).rows()) == 4
    sw.run_sweep(parse_grid(three), out, run, trials)
    assert len(calls) == 2


def test_search_and_scan_never_share_a_file(swept, tmp_path, run_milr):
    """A scan grid refuses a search's results file or trials log, a search grid a scan's:
    one line, nothing written."""
    results, log, _ = swept
    search_grid = "depths: [1]\nwidths: [4]\nseeds: 1\ndataset: gaussians\n"
    with pytest.raises(StoreError, match="rows of a scan sweep but the grid has measure: search"):
        sw.plan_sweep(parse_grid(search_grid), results)
    with pytest.raises(StoreError, match="log of a scan sweep but the grid has measure: search"):
        sw.plan_sweep(parse_grid(search_grid), tmp_path / "new.csv", log)
    searched = tmp_path / "s.csv"
    store = ResultStore(searched)
    store.append([dict.fromkeys(store.columns, "") | {"depth": 1, "width": 4, "seed": 0,
                                                      "status": "ok"}])
    before = searched.read_bytes()
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    code, _, err = run_milr(["sweep", str(grid), "--out", str(searched)])
    assert code == 2 and err.count("\n") == 1 and "rows of a search sweep" in err, err
    assert searched.read_bytes() == before
    search_log = tmp_path / "s.jsonl"
    search_log.write_text('{"depth": 1, "width": 4, "seed": 0, "lr": 0.5, "success": true, '
                          '"diverged": false, "steps": 20}\n')
    with pytest.raises(StoreError, match="log of a search sweep but the grid has measure: scan"):
        sw.plan_sweep(parse_grid(GRID), tmp_path / "new.csv", search_log)


@pytest.mark.parametrize("text, named", [
    (GRID + "rtol: 0.1\n", "line 12: rtol = 0.1 is an option of the search"),
    (GRID + "warm_start: true\n", "line 12: warm_start applies to measure: search"),
    (GRID.replace("measure: scan", "measure: scans"), "line 1: measure must be one of"),
    (GRID.replace("measure: scan\n", ""), "line 9: points_per_octave applies to measure: scan"),
    (GRID.replace("lr_max: 800", "lr_max: 0.1"), "has 2 rate(s)"),
    (GRID + "objective: loss\n", "line 12: objective must be one of"),
])
def test_scan_grid_refusals_name_the_line(text, named):
    with pytest.raises(GridError, match=named.replace("(", r"\(").replace(")", r"\)")):
        parse_grid(text, "g.yaml")


def test_a_dry_run_prices_a_scan_cell_as_its_members():
    """rates × seeds members, each the whole budget."""
    from milr.base.cost import flops_per_member_step

    grid = parse_grid(GRID)
    task = sw.pending_tasks(grid, set())[0]
    cfg = grid.config(1, 4)
    members = len(scan_grid(0.05, 800, 1)) * 2
    assert sw.task_cost_tflop(grid, task) == pytest.approx(
        members * 60 * flops_per_member_step(cfg, 64, 2) / 1e12)


# --- milr fit of a scan sweep's columns ------------------------------------------------------

def scan_results(path, bad: float = 1e3) -> None:
    """A scan results table whose ok numbers follow known laws: η_opt = 0.5 d^-1 w^-0.5,
    stability edge = 4 d^-0.5 w^-1, η* = 2 w^-0.25; where a status is not ok the number is
    `bad` (what a fit must never read)."""
    fields = ["depth", "width", "seed", "seeds", "eta_opt", "eta_opt_status", "stability_edge",
              "stability_edge_status", "eta_star_median", "eta_star_status"]
    rows = []
    for d in (1, 2, 4):
        for w in (16, 32, 64, 128):
            flat = (d + w) % 3 == 0
            rows.append([d, w, 0, 3, bad if flat else 0.5 / d / w ** 0.5,
                         "flat" if flat else "ok",
                         bad if w == 128 else 4 / d ** 0.5 / w,
                         "above_range" if w == 128 else "ok", 2 / w ** 0.25, "ok"])
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([fields, *rows])


@pytest.mark.parametrize("column, a, b, left_out, why", [
    ("eta_opt", 1.0, 0.5, 6, "eta_opt_status flat"),
    ("stability_edge", 0.5, 1.0, 3, "stability_edge_status above_range"),
    ("eta_star_median", 0.0, 0.25, 0, ""),
])
def test_fit_of_a_scan_column_recovers_its_exponents_and_skips_what_is_not_ok(
        column, a, b, left_out, why, tmp_path, run_milr):
    scan_results(tmp_path / "s.csv")
    code, out, err = run_milr(["fit", str(tmp_path / "s.csv"), "--column", column, "--json"])
    assert code in (0, None), err
    doc = json.loads(out)
    two = doc["two_exponent"]
    assert (two["a"], two["b"]) == (pytest.approx(a, abs=1e-9), pytest.approx(b, abs=1e-9))
    assert len(doc["excluded"]) == left_out
    assert all(e["reason"].startswith(why) for e in doc["excluded"])


def test_a_scan_fit_says_what_was_left_out(tmp_path, run_milr):
    scan_results(tmp_path / "s.csv")
    code, out, err = run_milr(["fit", str(tmp_path / "s.csv"), "--column", "eta_opt"])
    assert code in (0, None), err
    assert "eta_opt = " in out and "flat" in out and "η*" not in out.split("\n")[0]


# --- milr plot scan ----------------------------------------------------------------------------

LRS = [0.01 * 2 ** i for i in range(9)]


def synthetic(width: int, parametrization: str = "sp", centre: float = 0.3,
              objective: str = "val-loss") -> dict:
    """A scan's document from made-up runs: val loss a bowl in log-rate around `centre` (at the
    top of the grid: flat), rates from 1.28 on diverged, success up to 0.32."""
    extra = {"base_width": 4} if parametrization == "mup" else {}
    cfg = EstimateConfig(depth=1, width=width, dataset="gaussians", seeds=3,
                         parametrization=parametrization, **extra)
    runs = [ScanRun(lr, s, success=lr <= 0.32, diverged=lr >= 1.28, steps=100, final_acc=0.9,
                    peak_acc=0.9, final_loss=0.1, train_loss=0.2,
                    val_loss=None if lr >= 1.28 else
                    0.3 + math.log(lr / centre) ** 2 + 0.01 * s, val_acc=0.9)
            for lr in LRS for s in range(3)]
    result = analyse(cfg, ScanConfig(objective=objective), runs, LRS, [0, 1, 2])
    return json_safe(result.to_dict())


def write(tmp_path, name: str, doc: dict) -> str:
    (tmp_path / name).write_text(json.dumps(doc))
    return str(tmp_path / name)


def gids(ax, kind: str) -> list[str]:
    return sorted(line.get_gid() for line in ax.lines
                  if (line.get_gid() or "").startswith(kind + ":"))


def test_plot_scan_draws_one_curve_per_width_with_its_marks(tmp_path, run_milr):
    """From scan JSON files: a curve per width, η_opt marked where ok and not where flat, η*
    and the stability edge on every curve; the command writes the figure."""
    from milr.analysis import plot

    files = [write(tmp_path, "a.json", synthetic(4)), write(tmp_path, "b.json",
                                                            synthetic(8, centre=0.005))]
    scans, _ = plot.read_scans(files)
    assert plot.check_scans(scans, None, None, None) == ("width", "val-loss")
    assert [s.doc["optimum"]["status"] for s in scans] == ["ok", "flat"]
    fig = plot.scan_figure(scans, "width")
    (ax,) = fig.axes
    assert gids(ax, "curve") == ["curve::width 4", "curve::width 8"]
    assert gids(ax, "opt") == ["opt::width 4"]  # none where flat
    assert gids(ax, "star") == ["star::width 4", "star::width 8"]
    assert gids(ax, "edge") == ["edge::width 4", "edge::width 8"]
    (curve,) = [line for line in ax.lines if line.get_gid() == "curve::width 4"]
    want = [r["val_loss"][0] for r in scans[0].doc["rates"]]
    got = curve.get_ydata()
    assert [v if v is not None else "gap" for v in want] == [
        "gap" if np.isnan(g) else pytest.approx(g) for g in got]
    out = tmp_path / "f.png"
    code, said, err = run_milr(["plot", "scan", *files, "--out", str(out)])
    assert code in (0, None) and out.stat().st_size > 0, err


def test_plot_scan_compares_two_parametrizations_side_by_side(tmp_path):
    from milr.analysis import plot

    files = [write(tmp_path, f"{p}{w}.json", synthetic(w, p)) for p in ("sp", "mup")
             for w in (4, 8)]
    scans, _ = plot.read_scans(files)
    plot.check_scans(scans, None, "parametrization", None)
    fig = plot.scan_figure(scans, "width", None, "parametrization")
    left, right = fig.axes[:2]
    assert len(fig.axes) == 2 and left.get_shared_y_axes().joined(left, right)
    assert [ax.get_title() for ax in fig.axes] == ["parametrization sp",
                                                   "parametrization mup"]
    assert gids(right, "curve") == ["curve:mup:width 4", "curve:mup:width 8"]
    with pytest.raises(plot.PlotError, match="every scan has parametrization sp"):
        plot.check_scans(scans[:2], None, "parametrization", None)


def test_plot_scan_reads_a_scan_sweeps_trials_log(swept):
    from milr.analysis import plot

    _, log, _ = swept
    scans, _ = plot.read_scans([str(log)])
    assert [(s.setting("depth"), s.setting("width")) for s in scans] == [(1, 4), (1, 8)]
    fig = plot.scan_figure(scans, "width")
    assert gids(fig.axes[0], "curve") == ["curve::width 4", "curve::width 8"]


def test_a_scan_sweep_says_each_cells_seeds(tmp_path, run_milr):
    """A scan cell is one row for all its seeds: its progress line names them all."""
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID.replace("widths: [4, 8]", "widths: [4]"))
    code, _, err = run_milr(["sweep", str(grid), "--out", str(tmp_path / "r.csv")])
    assert code in (0, None), err
    assert "[1/1] depth 1 width 4 seeds 0–1 done" in err, err
