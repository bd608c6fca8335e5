"""Input at the edges (issue 28, item 7): floats float32 cannot hold, numbers in grid files and
the line an error names, λ1 of an operator that overflows, and where and how figures are drawn."""

import json
import math
import os

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import LinearOperator

from milr import EstimateConfig
from milr.base.config import FLOAT32_MAX, FLOAT32_TINY, NetworkConfig, SharpnessConfig
from milr.engine.sharpness import lanczos, sharpness, top_eigenvalue
from milr.sweep.grid import GridError, parse_grid

H = "depths: [1]\nwidths: [8]\n"


# --- floats float32 cannot hold --------------------------------------------------------------

@pytest.mark.parametrize("kw, named", [
    ({"optimizer": "adam", "eps": 1e39}, "eps = 1e+39"),
    ({"optimizer": "adam", "eps": 1e-39}, "eps = 1e-39"),
    ({"optimizer": "momentum", "momentum": 1e-300}, "momentum = 1e-300"),
    ({"optimizer": "adam", "beta2": 1e-40}, "beta2 = 1e-40"),
    ({"optimizer": "adam", "weight_decay": 1e36, "parametrization": "mup", "base_width": 1,
      "width": 1000}, "weight_decay × μP's factor (1e+36 × 1000)"),
    ({"lr_max": 1e36, "widen": 1000.0}, "lr_max × widen"),
    ({"divergence_factor": 1e37, "initial_loss_floor": 100.0}, "divergence_factor ×"),
])
def test_floats_beyond_float32_are_refused_naming_them(kw, named):
    with pytest.raises(ValueError) as exc:
        EstimateConfig(**{"depth": 1, "width": 4, **kw})
    assert named in str(exc.value) and "float32" in str(exc.value)


def test_floats_within_float32_are_kept():
    """The bound is float32's, no tighter: values at its edges (and 0) are accepted."""
    cfg = EstimateConfig(depth=1, width=4, weight_decay=FLOAT32_MAX / 2, lr_min=FLOAT32_TINY * 1e6,
                         widen=1e4, lr_max=1e30, optimizer="adam", beta1=0.0, eps=1e-37)
    assert cfg.weight_decay == FLOAT32_MAX / 2 and cfg.beta1 == 0.0 and cfg.eps == 1e-37
    assert float(np.float32(FLOAT32_MAX)) == FLOAT32_MAX  # the constants are float32's own
    assert float(np.finfo(np.float32).tiny) == FLOAT32_TINY
    with pytest.raises(ValueError, match="output_lr_scale = 1e"):
        NetworkConfig(depth=1, width=4, output_lr_scale=1e300)


# --- numbers in grid files, and the line an error names ---------------------------------------

def test_grid_reads_exponent_numbers_and_refuses_quoted_ones():
    g = parse_grid(H + "optimizer: adam\neps: 1e-8\nweight_decay: 1e-3\nlr_max: 1E1\n")
    assert g.params == {"optimizer": "adam", "eps": 1e-8, "weight_decay": 1e-3, "lr_max": 10.0}
    assert g.config(1, 8).eps == 1e-8
    for quoted in ('"1e-8"', "'1e-8'", '"0.001"'):
        with pytest.raises(GridError) as exc:
            parse_grid(H + f"optimizer: adam\neps: {quoted}\n")
        assert str(exc.value).startswith("grid line 4: eps must be a number, got the string")
        assert "write it without quotes" in str(exc.value)
    with pytest.raises(GridError) as exc:  # a word, unquoted: not told to drop quotes it lacks
        parse_grid(H + "threshold: inf\n")
    assert str(exc.value) == "grid line 3: threshold must lie in (0, 1), got 'inf'"
    import yaml

    assert yaml.safe_load("a: 1e-8") == {"a": "1e-8"}  # PyYAML's own loader is left alone


def test_grid_beyond_float32_is_refused_by_dry_run(tmp_path, run_milr):
    grid = tmp_path / "g.yaml"
    grid.write_text(H + "steps: 20\neval_every: 10\ninitial_loss_floor: 1e39\n")
    code, _, err = run_milr(["sweep", str(grid), "--out", str(tmp_path / "r.csv"), "--dry-run"])
    assert code == 2 and err.strip().startswith(f"milr: error: {grid} line 5: "
                                                "initial_loss_floor = 1e+39 is outside the range")


@pytest.mark.parametrize("text, line, key", [
    ("steps: 20\neval_every: 10\nwarmup_steps: 30\n", 5, "warmup_steps (30)"),
    ("steps: 100\neval_every: 10\nalso_steps: 15\n", 5, "also_steps must be"),
    ("optimizer: sgd\nmomentum: 0.9\n", 4, "momentum applies"),
    ("optimizer: sgd\nbeta1: 0.9\n", 4, "beta1 applies"),
    ("steps: 20\neval_every: 50\n", 4, "eval_every (50)"),
    ("lr_max: 10\nwiden: 1e38\n", 4, "lr_min / widen"),  # lr_min is not in the file
])
def test_grid_error_names_the_line_of_the_key_it_is_about(text, line, key):
    with pytest.raises(GridError) as exc:
        parse_grid(H + text)
    assert str(exc.value).startswith(f"grid line {line}: {key}"), str(exc.value)


# --- λ1 of an operator that overflows ---------------------------------------------------------

@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_a_non_finite_operator_is_not_converged(bad):
    a = np.diag(np.arange(1.0, 11.0))
    op = LinearOperator((10, 10), matvec=lambda v: a @ v * bad, dtype=np.float64)
    lam, residual, converged, method = top_eigenvalue(op, seed=0)
    assert (converged, math.isnan(lam), residual, method) == (False, True, math.inf, "arpack")
    t = torch.from_numpy(a)
    lam, residual, converged, _ = lanczos(lambda v: t @ v * bad, 10, t, seed=0)
    assert (converged, math.isnan(lam), residual) == (False, True, math.inf)


def test_preconditioned_lambda1_that_overflows_is_not_converged(tiny, run_milr):
    """output_lr_scale 1e38 is a float32, but S^½HS^½ overflows: per seed not converged, the
    solver stopped at the first product that is not finite (residual inf, as documented)."""
    cfg = NetworkConfig(depth=1, width=4, output_lr_scale=1e38)
    s = sharpness(cfg, tiny, 0, SharpnessConfig(samples=64, preconditioned=True))
    assert not s.converged and s.lambda1 is None and s.residual == math.inf and s.hvps == 1
    code, out, err = run_milr(["sharpness", "--depth", "1", "--width", "4", "--seeds", "1",
                               "--samples", "64", "--device", "cpu", "--preconditioned",
                               "--output-lr-scale", "1e38", "--json"])
    assert code == 0, err
    (r,) = json.loads(out)["results"]
    assert r["converged"] is False and r["lambda1"] is None


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
