"""The scan's answers to a second hostile review: `milr plot scan --compare-by dataset` and
`--compare-by model` (with what follows from them) and never a hash to compare by; one data
function or model under two spellings of its path is one protocol (plot scan and fit); scans on
different rate grids drawn and fitted together; which stored row of a cell counts (the most
seeds); an all-diverged scan left out of a figure with a note; an optimum beside a diverged top
rate."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_scan_review import fake_runner, scan_doc, write

from milr.base.config import EstimateConfig, ScanConfig
from milr.base.results import ScanRun, json_safe
from milr.engine.scan import analyse, optimum
from milr.sweep import run as sw
from milr.sweep.grid import parse_grid
from milr.sweep.store import ResultStore

H1, H2 = "1" * 64, "2" * 64


def with_code(doc: dict, field: str, spec: str, sha: str, **config) -> dict:
    """`doc` as if its `field` (dataset or model) named user code `spec` hashing to `sha`."""
    doc = json.loads(json.dumps(doc))
    doc["config"].update({field: spec, **config})
    doc[f"{field}_sha256"] = sha
    return doc


def scans_of(tmp_path, *docs):
    from milr.analysis import plot

    scans, _ = plot.read_scans([write(tmp_path, f"s{i}.json", d) for i, d in enumerate(docs)])
    return scans


# --- A. --compare-by dataset and model ---------------------------------------------------------

def test_compare_by_dataset_lets_its_hash_and_threshold_differ(tmp_path):
    """Two data functions: their hashes (and thresholds, a data set's own) differ with them."""
    from milr.analysis import plot

    a = with_code(scan_doc(4), "dataset", "a.py:make", H1)
    b = with_code(scan_doc(4), "dataset", "b.py:make", H2, threshold=0.7)
    scans = scans_of(tmp_path, a, b)
    assert plot.check_scans(scans, None, "dataset", None) == ("width", "val-loss")
    with pytest.raises(plot.PlotError, match="dataset"):
        plot.check_scans(scans, None, None, None)


def test_compare_by_model_lets_the_mlps_own_settings_differ(tmp_path):
    """A model against the built-in MLP (input_lr_scale 0.1 against a model's 1, μP's
    base_width): those follow from `model`; its hash too."""
    from milr.analysis import plot

    mlp = scan_doc(4, parametrization="mup", base_width=4, output_init="zero")
    model = with_code(scan_doc(4), "model", "m.py:net", H1, input_lr_scale=1.0)
    scans = scans_of(tmp_path, mlp, model)
    assert plot.check_scans(scans, None, "model", None) == ("width", "val-loss")
    with pytest.raises(plot.PlotError, match="--compare-by model"):
        plot.check_scans(scans, None, None, None)


def test_a_refusal_never_suggests_comparing_by_a_hash(tmp_path, run_milr):
    """Other data under one spec: its hash differs, which --compare-by cannot take, so no
    --compare-by is suggested; under two specs, the spec's setting is."""
    same = [with_code(scan_doc(4), "dataset", "d.py:make", h) for h in (H1, H2)]
    two = [with_code(scan_doc(4), "dataset", f"{n}.py:make", h) for n, h in (("a", H1), ("b", H2))]
    for docs, hint in ((same, None), (two, "--compare-by dataset")):
        files = [write(tmp_path, f"{i}.json", d) for i, d in enumerate(docs)]
        code, _, err = run_milr(["plot", "scan", *files, "--out", str(tmp_path / "f.png")])
        (line,) = [x for x in err.splitlines() if x.strip()]
        assert code == 2 and "dataset_sha256=" in line and "one dataset per" in line, line
        assert (hint in line and line.count("--compare-by") == 1) if hint else \
            "--compare-by" not in line, line


# --- B. one function under two spellings of its path -------------------------------------------

def test_plot_scan_takes_one_data_function_under_two_paths(tmp_path):
    """A sweep's log records the path it resolved, `milr scan --json` the one typed: the same
    hash and name are the same data. Another name in the same file is not."""
    from milr.analysis import plot

    a = with_code(scan_doc(4), "dataset", "/abs/d/data2.py:make", H1)
    b = with_code(scan_doc(8), "dataset", "data2.py:make", H1)
    plot.check_scans(scans_of(tmp_path, a, b), None, None, None)
    m1 = with_code(scan_doc(4), "model", "/abs/m.py:net", H1, input_lr_scale=1.0)
    m2 = with_code(scan_doc(8), "model", "m.py:other", H1, input_lr_scale=1.0)
    with pytest.raises(plot.PlotError, match="model=m.py:other"):
        plot.check_scans(scans_of(tmp_path, m1, m2), None, None, None)


def test_fit_takes_one_model_under_two_paths_but_not_two_versions():
    from milr.analysis.table import FitError, one_protocol
    from milr.sweep.store import COLUMNS

    cfg = EstimateConfig(depth=1, width=4, model="/abs/m.py:make")
    row = {c: "" for c in COLUMNS} | {k: "" if v is None else str(v)
                                      for k, v in cfg.row().items()} | {"model_sha256": H1}
    one_protocol([row, {**row, "width": "8", "model": "m.py:make"}])
    with pytest.raises(FitError, match="model_sha256"):
        one_protocol([row, {**row, "model": "m.py:make", "model_sha256": H2}])
    with pytest.raises(FitError, match="model=m.py:other"):
        one_protocol([row, {**row, "model": "m.py:other"}])
    with pytest.raises(FitError, match="model="):  # a hash on one row only: not known equal
        one_protocol([row, {**row, "model": "m.py:make", "model_sha256": ""}])


# --- C. scans on different rate grids ------------------------------------------------------------

def test_plot_scan_and_fit_take_scans_on_different_grids(tmp_path):
    """A width rescanned over a wider range, or finer: the figure draws against rate, and an
    η_opt that is ok lies inside its own grid; a fit takes other ranges but not a finer grid
    (test_scan_review3); a search's rows still keep one bracket."""
    from milr.analysis import plot
    from milr.analysis.table import FitError, one_protocol
    from milr.sweep.store import COLUMNS, SCAN_COLUMNS

    wide = scan_doc(8, lr_min=0.5, lr_max=20.0)
    wide["scan"]["points_per_octave"] = 3
    plot.check_scans(scans_of(tmp_path, scan_doc(4), wide), None, None, None)
    cfg = EstimateConfig(depth=1, width=4)
    text = {k: "" if v is None else str(v) for k, v in cfg.row().items()}
    scan = {c: "" for c in SCAN_COLUMNS} | text | {"points_per_octave": "4",
                                                   "eta_opt_status": "ok"}
    one_protocol([scan, {**scan, "lr_min": "0.5", "lr_max": "20", "width": "8"}])
    with pytest.raises(FitError, match="points_per_octave"):  # the resolution moves the edges
        one_protocol([scan, {**scan, "points_per_octave": "3", "width": "8"}])
    search = {c: "" for c in COLUMNS} | text
    with pytest.raises(FitError, match="lr_min"):
        one_protocol([search, {**search, "lr_min": "0.5"}])


# --- D. the row of a cell that counts: the most seeds --------------------------------------------

SCAN_GRID = ("measure: scan\ndepths: [1]\nwidths: [4]\nseeds: 3\ndataset: gaussians\n"
             "steps: 60\neval_every: 20\nlr_min: 0.05\nlr_max: 800\npoints_per_octave: 1\n"
             "device: cpu\n")


@pytest.mark.parametrize("order", [(3, 2, 3), (2, 3, 2)])
def test_the_row_with_most_seeds_counts_for_summary_and_fit(order, tmp_path):
    """Seeds 3, 2, 3 (or 2, 3, 2): the third run scans nothing, and the summary, the store and
    `milr fit` use the 3-seed row, whichever was written last."""
    from milr.analysis.table import read_table

    out, calls = tmp_path / "r.csv", []
    for n in order:
        report = sw.run_sweep(parse_grid(SCAN_GRID.replace("seeds: 3", f"seeds: {n}")), out,
                              fake_runner(calls))
    assert len(calls) == 2 and report.ran == 0
    assert [r["seeds"] for r in ResultStore(out, "scan").rows()] == [str(n) for n in order[:2]]
    assert [int(r["seeds"]) for r in report.rows] == [3]
    assert [r["seeds"] for r in read_table(out)] == ["3"]


def test_plot_scan_draws_a_logs_row_with_most_seeds(tmp_path):
    """In a scan sweep's log, a cell's record of most seeds is drawn, the last among equals."""
    from milr.analysis import plot

    three = scan_doc(4)
    two = json.loads(json.dumps(three))
    two["seeds"] = two["seeds"][:2]
    log = tmp_path / "t.jsonl"
    log.write_text("".join(json.dumps({"depth": 1, "width": 4, "seed": 0, "measure": "scan",
                                       **d}) + "\n" for d in (three, two)))
    (scan,), notes = plot.read_scans([str(log)])
    assert len(scan.doc["seeds"]) == 3 and scan.source.endswith("line 1"), notes


# --- E. an all-diverged scan in a figure --------------------------------------------------------

def all_diverged(width: int) -> dict:
    lrs = [1.0, 2.0, 4.0]
    cfg = EstimateConfig(depth=1, width=width, dataset="gaussians", seeds=2)
    runs = [ScanRun(lr, s, success=False, diverged=True, steps=10, final_acc=0.1, peak_acc=0.1,
                    final_loss=None, train_loss=None, val_loss=None, val_acc=0.1)
            for lr in lrs for s in range(2)]
    return json_safe(analyse(cfg, ScanConfig(), runs, lrs, [0, 1]).to_dict())


def test_an_all_diverged_scan_is_left_out_of_the_figure_with_a_note(tmp_path, run_milr):
    div = write(tmp_path, "div.json", all_diverged(8))
    good = write(tmp_path, "good.json", scan_doc(4))
    out = tmp_path / "f.png"
    code, _, err = run_milr(["plot", "scan", good, div, "--out", str(out)])
    assert code in (0, None) and out.exists(), err
    assert "div.json" in err and "width 8" in err and "left out" in err, err
    code, _, err = run_milr(["plot", "scan", div, "--out", str(tmp_path / "g.png")])
    (line,) = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and "nothing to draw" in line and "div.json" in line, line
    assert not (tmp_path / "g.png").exists()


# --- F. a minimum beside a diverged top rate ---------------------------------------------------

def test_a_minimum_below_a_diverged_top_rate_is_ok_with_hi_the_top_rate():
    """Flatness is judged on the bootstrap interval before it is widened to the diverged rate:
    the optimum lies below a rate the grid covers, so it is ok, its interval reaching that rate."""
    lrs = [0.01 * 2 ** i for i in range(8)]
    x = np.log(lrs)[:, None]
    cost = (x - math.log(lrs[-2])) ** 2 + np.linspace(0, 0.3, 4)[None, :]
    cost[-1] = math.inf
    o = optimum(lrs, cost, np.isinf(cost))
    assert (o.status, o.refined) == ("ok", False)
    assert (o.eta_opt, o.lo, o.hi) == (pytest.approx(lrs[-2]), pytest.approx(lrs[-2]),
                                       pytest.approx(lrs[-1]))

