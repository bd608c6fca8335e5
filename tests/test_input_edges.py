"""Input at the edges (issue 28, item 7): floats float32 cannot hold, numbers in grid files and
the line an error names, λ1 of an operator that overflows, and where and how figures are drawn."""

import json
import os

import pytest

H = "depths: [1]\nwidths: [8]\n"


# --- figures: where they go and what they say -------------------------------------------------

def fit_csv(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("depth,width,lr_star,status\n" + "".join(
        f"{d},{w},{3.0 * (d * w) ** -0.5},ok\n" for d in (1, 2, 4) for w in (16, 32, 64)))
    return str(path)


@pytest.mark.parametrize("command", ["fit", "plot sweep"])
@pytest.mark.parametrize("target", ["DIR", "FIFO", "DIR.png", "x.txt"])
def test_every_plot_path_is_checked_alike(command, target, tmp_path, run_milr):
    """A directory, a pipe, a name whose .png is a directory, an unknown extension: refused by
    `fit --plot` (which wrote adir.png or x.txt.png) as by every other figure option."""
    pytest.importorskip("matplotlib")
    (tmp_path / "adir").mkdir()
    (tmp_path / "taken.png").mkdir()
    os.mkfifo(tmp_path / "pipe")
    path = str(tmp_path / {"DIR": "adir", "FIFO": "pipe", "DIR.png": "taken",
                           "x.txt": "x.txt"}[target])
    csv = fit_csv(tmp_path)
    args = ["fit", csv, "--plot", path] if command == "fit" else \
        ["plot", "sweep", csv, "--out", path]
    before = sorted(os.listdir(tmp_path))
    code, _, err = run_milr(args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and path in lines[0], err
    assert sorted(os.listdir(tmp_path)) == before  # nothing written


def test_search_figure_names_the_optimizer_and_no_sgd_step(tmp_path):
    pytest.importorskip("matplotlib")
    from milr.analysis.plot import search_figure, search_view_from_log

    log, csv = tmp_path / "t.jsonl", tmp_path / "r.csv"
    log.write_text("".join(json.dumps({"depth": 1, "width": 4, "seed": 0, "lr": lr,
                                       "success": ok, "diverged": not ok, "steps": 20,
                                       "curve_steps": [10, 20], "curve_acc": [0.5, 0.9],
                                       "curve_loss": [0.6, 0.3]}) + "\n"
                           for lr, ok in ((0.01, True), (0.02, False))))
    csv.write_text("depth,width,seed,status,lr_star,threshold,criterion,loss,steps,optimizer,"
                   "beta1,beta2,eps,weight_decay,warmup_steps,parametrization,base_width,"
                   "output_lr_scale\n1,4,0,ok,0.015,0.8,accuracy,ce,20,adam,0.9,0.999,1e-08,0.0,"
                   "5,mup,2,1.0\n")
    view = search_view_from_log(str(log), 1, 4, str(csv))
    assert view.title.endswith("20 steps, adam (β 0.9, 0.999, ε 1e-08), 5 warm-up steps, "
                               "mup (base width 2)")
    fig = search_figure(view)
    assert [ax.get_xlabel() for ax in fig.axes[2:4]] == ["training step"] * 2
