"""The scan's answers to a hostile review: η_opt's interval only where the seeds can spread it,
`milr plot scan` refusing to mix protocols (and reading a file once), an all-diverged grid's
table kept before its refusal, and a scan sweep's resume reusing any stored row of the grid's
seed count, as a search's resume reuses stored seeds."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from milr.base.config import EstimateConfig, ScanConfig
from milr.base.results import ScanRun, json_safe
from milr.engine.scan import analyse, optimum
from milr.sweep import run as sw
from milr.sweep.grid import parse_grid
from milr.sweep.store import COLUMNS, SCAN_COLUMNS, ResultStore

LRS = [0.01 * 2 ** (i / 2) for i in range(13)]


def bowl(center: float, seeds: int) -> np.ndarray:
    """A cost [rate, seed] quadratic in log-rate with its minimum at `center`; seeds shifted."""
    x = np.log(LRS)[:, None]
    return (x - math.log(center)) ** 2 + np.linspace(0, 0.3, seeds)[None, :]


# --- 1. η_opt's interval needs seeds to resample ---------------------------------------------

def test_one_seed_gives_eta_opt_without_an_interval():
    """With one seed every resample is that seed: no interval, never [x, x]; two seeds give
    one (their η_opt differ, so it has width)."""
    from milr.engine.scan import MIN_INTERVAL_SEEDS

    assert MIN_INTERVAL_SEEDS == 2
    one = optimum(LRS, bowl(0.1, 1), np.zeros((len(LRS), 1), dtype=bool))
    assert one.status == "ok" and one.eta_opt == pytest.approx(0.1)
    assert (one.lo, one.hi) == (None, None)
    two_cost = np.hstack([bowl(0.08, 1), bowl(0.12, 1)])
    two = optimum(LRS, two_cost, np.zeros((len(LRS), 2), dtype=bool))
    assert two.status == "ok" and two.lo < two.hi


def one_seed_result(seeds: int = 1):
    """A scan of `seeds` seeds (made-up runs) whose η_opt is ok: loss a bowl around 0.1."""
    cfg = EstimateConfig(depth=1, width=8, dataset="gaussians", seeds=seeds)
    runs = [ScanRun(lr, s, success=lr <= 0.2, diverged=lr >= 0.5, steps=100, final_acc=0.9,
                    peak_acc=0.9, final_loss=0.1, train_loss=0.2,
                    val_loss=None if lr >= 0.5 else 0.3 + math.log(lr / 0.1) ** 2 + 0.01 * s,
                    val_acc=0.9)
            for lr in LRS for s in range(seeds)]
    return analyse(cfg, ScanConfig(), runs, LRS, list(range(seeds)))


def test_one_seeds_row_json_and_table_say_no_interval(capsys, monkeypatch):
    from rich.console import Console

    from milr.cli import render
    from milr.cli.render import render_scan, render_scan_summary

    monkeypatch.setattr(render, "console", Console(width=300))  # a table cell, unwrapped

    r = one_seed_result()
    row, doc = r.row(), json_safe(r.to_dict())
    assert row["eta_opt_status"] == "ok" and row["eta_opt"] == pytest.approx(0.1)
    assert (row["eta_opt_lo"], row["eta_opt_hi"]) == (None, None)
    assert (doc["optimum"]["lo"], doc["optimum"]["hi"]) == (None, None)
    render_scan(r)
    out = " ".join(capsys.readouterr().out.split())
    assert "no interval: 1 seed" in out and "95%" not in out
    stored = {k: "" if v is None else str(v) for k, v in {**r.config.row(), **row}.items()}
    render_scan_summary([stored], "r.csv", 1)
    out = " ".join(capsys.readouterr().out.split())
    assert "no interval: 1 seed" in out


def test_plot_scan_draws_one_seeds_eta_opt_without_an_interval(tmp_path):
    pytest.importorskip("matplotlib")
    from milr.analysis import plot

    path = tmp_path / "one.json"
    path.write_text(json.dumps(json_safe(one_seed_result().to_dict())))
    scans, _ = plot.read_scans([str(path)])
    fig = plot.scan_figure(scans, "width")
    gids = {line.get_gid() for line in fig.axes[0].lines}
    assert "opt::width 8" in gids and "optci::width 8" not in gids


# --- 2. milr plot scan mixes no protocols, reads a file once -----------------------------------

def scan_doc(width: int, **kw) -> dict:
    """A scan's document from made-up runs under the config `kw` changes."""
    from test_scan_sweep import synthetic

    doc = synthetic(width)
    if kw:
        cfg = EstimateConfig(**{**doc["config"], **kw})
        doc["config"] = json_safe(cfg.row())
    return doc


def write(tmp_path, name: str, doc: dict) -> str:
    (tmp_path / name).write_text(json.dumps(doc))
    return str(tmp_path / name)


@pytest.mark.parametrize("kw, named", [
    ({"steps": 400}, "steps=1000"), ({"threshold": 0.7}, "threshold=0.7"),
    ({"optimizer": "adam"}, "optimizer=sgd"), ({"dataset": "fashion-mnist"}, "dataset="),
])
def test_plot_scan_refuses_scans_of_different_protocols(kw, named, tmp_path, run_milr):
    """Two scans that differ in a field a sweep keeps fixed are different quantities: one line
    naming the field, its values and files, exit 2, no figure."""
    files = [write(tmp_path, "a.json", scan_doc(4)), write(tmp_path, "b.json", scan_doc(8, **kw))]
    out = tmp_path / "f.png"
    code, _, err = run_milr(["plot", "scan", *files, "--out", str(out)])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    field = next(iter(kw))
    assert "different protocols" in lines[0] and named in lines[0] and "b.json" in lines[0]
    assert f"--compare-by {field}" in lines[0] and not out.exists()


def test_plot_scan_lets_the_compared_setting_differ_and_what_follows_from_it(tmp_path):
    """--compare-by optimizer: sgd and adam panels, whose β, ε and default rate range differ
    with the optimizer; --compare: sp and μP, whose base_width differs; anything else not."""
    pytest.importorskip("matplotlib")
    from milr.analysis import plot

    sgd = scan_doc(4)
    adam = scan_doc(4, optimizer="adam", lr_min=None, lr_max=None)
    assert adam["config"]["beta1"] == 0.9 and adam["config"]["lr_min"] != sgd["config"]["lr_min"]
    scans, _ = plot.read_scans([write(tmp_path, "s.json", sgd), write(tmp_path, "a.json", adam)])
    assert plot.check_scans(scans, None, "optimizer", None) == ("width", "val-loss")
    with pytest.raises(plot.PlotError, match="optimizer=sgd"):
        plot.check_scans(scans, None, None, None)
    mup = scan_doc(4, parametrization="mup", base_width=4)
    scans, _ = plot.read_scans([write(tmp_path, "m.json", mup), write(tmp_path, "p.json", sgd)])
    plot.check_scans(scans, None, "parametrization", None)
    with pytest.raises(plot.PlotError, match="parametrization=mup"):
        plot.check_scans(scans, None, None, None)
    slow = scan_doc(8, steps=400, parametrization="mup", base_width=4)
    scans, _ = plot.read_scans([write(tmp_path, "q.json", slow), write(tmp_path, "p.json", sgd)])
    with pytest.raises(plot.PlotError, match="steps=400"):
        plot.check_scans(scans, None, "parametrization", None)


def test_plot_scan_reads_a_file_given_twice_once(tmp_path, run_milr):
    """The same file under two names (itself, a symlink) is one scan, drawn once, and said."""
    pytest.importorskip("matplotlib")
    from milr.analysis import plot

    path = write(tmp_path, "a.json", scan_doc(4))
    os.symlink(path, tmp_path / "link.json")
    scans, notes = plot.read_scans([path, str(tmp_path / "link.json"), path])
    assert len(scans) == 1 and len(notes) == 2 and all("read once" in n for n in notes), notes
    code, said, err = run_milr(["plot", "scan", path, path, "--out", str(tmp_path / "f.png")])
    assert code in (0, None) and "read once" in err, err


# --- 3. an all-diverged grid: the table first, then the refusal --------------------------------

ALL_DIVERGED = ["--depth", "1", "--width", "8", "--seeds", "2", "--steps", "60", "--eval-every",
                "20", "--device", "cpu", "--lr-min", "1000", "--lr-max", "8000",
                "--points-per-octave", "1"]


def test_an_all_diverged_scan_prints_its_table_then_refuses(run_milr):
    code, out, err = run_milr(["scan", *ALL_DIVERGED])
    (refusal,) = [line for line in err.splitlines() if line.startswith("milr: error")]
    assert code == 2 and "every run of the grid diverged" in refusal, err
    assert err.rstrip().endswith(refusal)  # after the progress lines, the last
    assert out.count("2/2") >= 4 and "all_diverged" in out, out  # every rate: 2 of 2 diverged


def test_an_all_diverged_scans_json_is_written_then_refused(run_milr):
    code, out, err = run_milr(["scan", *ALL_DIVERGED, "--json"])
    lines = [line for line in err.splitlines() if line.strip()]  # --json: no progress lines
    assert code == 2 and len(lines) == 1 and "every run of the grid diverged" in lines[0], err
    doc = json.loads(out)
    assert doc["eta_opt_status"] == "all_diverged" and doc["eta_opt"] is None
    assert len(doc["runs"]) == 8 and all(r["diverged"] for r in doc["runs"])


def test_an_all_diverged_sweep_cell_is_stored_with_its_status(tmp_path):
    grid = ("measure: scan\ndepths: [1]\nwidths: [8]\nseeds: 2\ndataset: gaussians\n"
            "steps: 60\neval_every: 20\ndevice: cpu\nlr_min: 1000\nlr_max: 8000\n"
            "points_per_octave: 1\n")
    report = sw.run_sweep(parse_grid(grid), tmp_path / "r.csv")
    (row,) = ResultStore(tmp_path / "r.csv", "scan").rows()
    assert report.ran == 1 and row["eta_opt_status"] == "all_diverged" and row["eta_opt"] == ""


# --- 4. a resume reuses a stored row of the grid's seed count ----------------------------------

SCAN_GRID = ("measure: scan\ndepths: [1]\nwidths: [4, 8]\nseeds: 2\ndataset: gaussians\n"
             "steps: 60\neval_every: 20\nlr_min: 0.05\nlr_max: 800\npoints_per_octave: 1\n"
             "device: cpu\n")
SEARCH_GRID = "depths: [1]\nwidths: [4, 8]\nseeds: 2\ndataset: gaussians\nsteps: 60\n"


def fake_runner(calls: list):
    """A runner that trains nothing: one made-up row per task (a scan's per cell, a search's per
    seed), recording (width, seeds) of each task."""
    def run(configs):
        for t in configs:
            cfg = t.config
            calls.append((cfg.width, cfg.seeds))
            if t.scan is not None:
                yield [dict.fromkeys(SCAN_COLUMNS, "") | cfg.row() | dataclasses.asdict(t.scan)
                       | {"seeds": t.cell_seeds, "eta_opt_status": "flat",
                          "stability_edge_status": "ok", "eta_star_status": "ok"}], []
            else:
                yield [dict.fromkeys(COLUMNS, "") | cfg.row()
                       | {"seeds": t.cell_seeds, "seed": s, "status": "ok", "lr_star": 0.5}
                       for s in range(cfg.seed, cfg.seed + cfg.seeds)], []
    return run


@pytest.mark.parametrize("grid", [SCAN_GRID, SEARCH_GRID], ids=["scan", "search"])
def test_seeds_2_3_2_reuses_what_is_stored(grid, tmp_path):
    """Seeds 2, then 3, then 2 again: the third run measures nothing, for a scan as for a
    search, and the file keeps each row once (the scan's 3-seed rows are not overwritten)."""
    out, calls = tmp_path / "r.csv", []
    runner = fake_runner(calls)
    three = grid.replace("seeds: 2", "seeds: 3")
    for text in (grid, three):
        sw.run_sweep(parse_grid(text), out, runner)
    before, measured = out.read_bytes(), list(calls)
    report = sw.run_sweep(parse_grid(grid), out, runner)
    assert report.ran == 0 and calls == measured and out.read_bytes() == before
    if grid is SCAN_GRID:
        assert measured == [(4, 2), (8, 2), (4, 3), (8, 3)]
        assert [r["seeds"] for r in ResultStore(out, "scan").rows()] == ["2", "2", "3", "3"]
        assert not sw.plan_sweep(parse_grid(grid), out).notes  # no duplicates reported
