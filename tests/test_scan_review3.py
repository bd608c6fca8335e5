"""The scan's answers to a third review: `milr plot scan --compare-by` (and `--compare`) draws one
protocol per panel (the compared setting and what it sets differ only across panels; a model's or
data function's panel is its name and hash), and `milr fit` takes scan rows of different rate
ranges but not of different grid resolutions (points_per_octave moves the edges read off it)."""

from __future__ import annotations

import pytest
from test_scan_review import scan_doc, write
from test_scan_review2 import H1, H2, scans_of, with_code

# --- 1. one protocol inside each panel ---------------------------------------------------------

MLP = scan_doc(4)
TANH_RESNET = scan_doc(8, activation="tanh", architecture="residual")
MODEL = with_code(scan_doc(4), "model", "m.py:net", H1, input_lr_scale=1.0)


@pytest.mark.parametrize("key, a, b, named", [
    ("model", MLP, TANH_RESNET, "architecture="),  # both the built-in network
    ("parametrization", scan_doc(8, parametrization="mup", base_width=4),
     scan_doc(16, parametrization="mup", base_width=8), "base_width="),
    ("optimizer", scan_doc(4, optimizer="adam"), scan_doc(8, optimizer="adam", beta1=0.8),
     "beta1="),
    ("dataset", scan_doc(4), scan_doc(8, threshold=0.7), "threshold="),
])
def test_plot_scan_refuses_two_protocols_inside_one_panel(key, a, b, named, tmp_path, run_milr):
    """What the compared setting sets may differ between panels, never inside one: the other
    panel (another value of `key`) does not make two networks or settings one curve family."""
    other = {"model": MODEL, "parametrization": scan_doc(4),
             "optimizer": scan_doc(4), "dataset": with_code(scan_doc(4), "dataset",
                                                             "d.py:make", H1)}[key]
    files = [write(tmp_path, f"{n}.json", d) for n, d in (("a", a), ("b", b), ("o", other))]
    out = tmp_path / "f.png"
    flag = ["--compare"] if key == "parametrization" else ["--compare-by", key]
    code, _, err = run_milr(["plot", "scan", *files, *flag, "--out", str(out)])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and not out.exists(), err
    assert "different protocols" in lines[0] and named in lines[0], lines[0]
    assert "a.json" in lines[0] and "b.json" in lines[0] and "o.json" not in lines[0], lines[0]


def test_two_versions_of_one_function_are_two_panels(tmp_path):
    """One function under two hashes is two panels (told apart by the hash); under two paths
    with one hash, one panel. Titles name the function, and the built-in network, never a path
    or None."""
    from milr.analysis import plot

    v1 = with_code(scan_doc(4), "model", "/abs/m.py:net", H1, input_lr_scale=1.0)
    v1b = with_code(scan_doc(8), "model", "m.py:net", H1, input_lr_scale=1.0)
    v2 = with_code(scan_doc(4), "model", "m.py:net", H2, input_lr_scale=1.0)
    scans = scans_of(tmp_path, v1, v1b, v2, MLP)
    assert plot.check_scans(scans, None, "model", None) == ("width", "val-loss")
    fig = plot.scan_figure(scans, "width", None, "model")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["model: net (11111111)", "model: net (22222222)",
                      "model: built-in MLP"], titles
    assert len([ln for ln in fig.axes[0].lines if (ln.get_gid() or "").startswith("curve:")]) == 2
    d1, d2 = (with_code(scan_doc(4), "dataset", "/x/d.py:make", h) for h in (H1, H2))
    scans = scans_of(tmp_path, d1, d2)
    assert plot.check_scans(scans, None, "dataset", None) == ("width", "val-loss")
    fig = plot.scan_figure(scans, "width", None, "dataset")
    assert [ax.get_title() for ax in fig.axes] == ["dataset: make (11111111)",
                                                   "dataset: make (22222222)"]
    assert " on " not in fig.get_suptitle()  # the panels say which data
    alone = scans_of(tmp_path, v1, v1b)
    with pytest.raises(plot.PlotError, match="every scan has model net: nothing to compare"):
        plot.check_scans(alone, None, "model", None)


# --- 2. milr fit: a scan's rate range may differ, its grid's resolution not ----------------------

def scan_rows_csv(tmp_path, last: dict) -> str:
    """A scan sweep's results of four cells, the last one's row changed by `last`."""
    import csv

    from milr.base.config import EstimateConfig
    from milr.sweep.store import SCAN_COLUMNS

    rows = []
    for depth, width in ((1, 4), (1, 8), (2, 4), (2, 8)):
        cfg = EstimateConfig(depth=depth, width=width, dataset="gaussians")
        row = {c: "" for c in SCAN_COLUMNS} | {k: "" if v is None else str(v)
                                               for k, v in cfg.row().items()}
        rows.append(row | {"seed": "0", "seeds": "3", "points_per_octave": "4",
                           "objective": "val-loss", "status": "ok",
                           "eta_opt": str(0.8 / (depth * width) ** 0.5),
                           "eta_opt_status": "ok"})
    rows[-1].update(last)
    path = tmp_path / "r.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def test_fit_takes_scan_rows_of_other_ranges_but_not_other_resolutions(tmp_path, run_milr):
    """lr_min and lr_max only bound where a scan looks; points_per_octave sets the grid step,
    and the stability edge (a grid rate) is low by up to one step: a mix is two quantities, one
    line naming both, exit 2."""
    code, out, err = run_milr(["fit", scan_rows_csv(tmp_path, {"lr_min": "0.5", "lr_max": "20"}),
                               "--column", "eta_opt"])
    assert code in (0, None) and "different protocols" not in err, err
    code, _, err = run_milr(["fit", scan_rows_csv(tmp_path, {"points_per_octave": "3"}),
                             "--column", "eta_opt"])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "points_per_octave=4 (lines 2-4)" in lines[0] and \
        "points_per_octave=3 (line 5)" in lines[0], lines[0]
