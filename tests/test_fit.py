import csv
import json
import math

import numpy as np
import pytest

from milr.analysis import fit as ft
from milr.analysis import table
from milr.base.config import FitConfig

DEPTHS, WIDTHS = (1, 2, 4, 8), (32, 64, 128, 256, 512)


def law_rows(c=5.0, a=0.7, b=0.7, noise=0.05, seeds=3, seed=0, lam=None, lam_noise=0.02):
    """Per-seed rows drawn from η* = c d^-a w^-b with log-normal noise (and, with `lam`,
    λ1 = 2 (d w)^0.8 and λ1_eff = 3 (d w)^0.5, converged)."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in DEPTHS:
        for w in WIDTHS:
            for s in range(seeds):
                r = {"depth": str(d), "width": str(w), "seed": str(s), "status": "ok",
                     "lr_star": str(c * d**-a * w**-b * math.exp(noise * rng.standard_normal()))}
                if lam:
                    r["lambda1"] = str(2 * (d * w) ** 0.8 * math.exp(lam_noise
                                                                     * rng.standard_normal()))
                    r["lambda1_eff"] = str(3 * (d * w) ** 0.5)
                    r["lambda1_converged"] = "True"
                rows.append(r)
    return rows


def write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def test_recovers_alpha_and_c_within_their_intervals():
    cells, notes = table.cells_from_rows(law_rows())
    law = ft.fit_power_law(cells, bootstrap=300, seed=1)
    assert notes == [] and len(cells) == 20 and all(c.seeds == 3 for c in cells)
    assert law.alpha_ci[0] < 0.7 < law.alpha_ci[1] and abs(law.alpha - 0.7) < 0.02
    assert law.c_ci[0] < 5.0 < law.c_ci[1]
    assert law.r2 > 0.99
    lo, hi = law.bootstrap["alpha_ci95"]
    assert lo < 0.7 < hi
    assert ft.fit_power_law(cells, bootstrap=300, seed=1).bootstrap == law.bootstrap
    value, low, high = law.predict(16, 1024)
    truth = 5.0 * (16 * 1024) ** -0.7
    assert low < truth < high and value == pytest.approx(truth, rel=0.1)


def test_intervals_and_a_equals_b_test_are_calibrated():
    """Over 100 synthetic tables from a true d·w law: ~95% of α intervals cover the truth and
    ~5% of a = b tests reject it."""
    fits = [ft.fit_power_law(table.cells_from_rows(law_rows(seed=s))[0]) for s in range(100)]
    coverage = sum(f.alpha_ci[0] < 0.7 < f.alpha_ci[1] for f in fits) / 100
    rejected = sum(not f.compatible for f in fits) / 100
    assert 0.88 <= coverage <= 1.0
    assert 0.0 < rejected <= 0.12


def test_two_exponents_detect_a_not_equal_b():
    law = ft.fit_power_law(table.cells_from_rows(law_rows(a=1.0, b=0.3))[0])
    assert law.a_ci[0] < 1.0 < law.a_ci[1] and law.b_ci[0] < 0.3 < law.b_ci[1]
    assert not law.compatible and law.a_minus_b_p < 1e-6
    assert law.two_aic < law.aic and law.two_adj_r2 > law.adj_r2


def test_filters_select_the_regime():
    cells, _ = table.cells_from_rows(law_rows())
    sel = table.select(cells, FitConfig(where=("width >= 32 * depth",), min_depth=2))
    assert {(c.depth, c.width) for c in sel} == {(2, 64), (2, 128), (2, 256), (2, 512),
                                                 (4, 128), (4, 256), (4, 512), (8, 256),
                                                 (8, 512)}
    with pytest.raises(table.FitError, match="no cells left"):
        table.select(cells, FitConfig(where=("width > 10000",)))


def test_failed_seeds_and_cells_are_left_out_and_named():
    """Every row left out is listed with its line and reason, and each cell says how many of
    its seeds it was aggregated over (a partly failed cell is not silently thinner)."""
    rows = law_rows(seeds=2)
    rows[0].update(status="below_range", lr_star="")
    rows[1].update(status="below_range", lr_star="")
    rows[2].update(status="above_range", lr_star="")
    cells, excluded = table.cells_from_rows(rows)
    assert [(e["line"], e["depth"], e["width"], e["seed"], e["status"]) for e in excluded] == [
        (2, 1, 32, "0", "below_range"), (3, 1, 32, "1", "below_range"),
        (4, 1, 64, "0", "above_range")]
    assert excluded[2]["reason"].startswith("above_range: trained at the widened top")
    assert (1, 32) not in {(c.depth, c.width) for c in cells}
    thin = next(c for c in cells if (c.depth, c.width) == (1, 64))
    assert (thin.seeds, thin.rows) == (1, 2)
    assert all((c.seeds, c.rows) == (2, 2) for c in cells if c is not thin)


def test_sharpness_relations_against_known_answers():
    """Exact η* = 5 (dw)^-0.7 and λ1 = 2 (dw)^0.8: slopes, intercepts and ratios in closed form."""
    rows = law_rows(noise=0, lam=True, lam_noise=0)
    cells, _ = table.cells_from_rows(rows)
    rel = ft.sharpness_relations(rows, cells)["lambda1"]
    assert rel["vs_depth_width"]["slope"] == pytest.approx(0.8, abs=1e-9)
    assert rel["vs_depth_width"]["intercept"] == pytest.approx(math.log(2), abs=1e-9)
    # log η* = log 5 - 0.7 log dw and log dw = (log λ1 - log 2) / 0.8
    assert rel["eta_vs_lambda1"]["slope"] == pytest.approx(-0.875, abs=1e-9)
    assert rel["eta_vs_lambda1"]["intercept"] == pytest.approx(math.log(5) + 0.875 * math.log(2),
                                                               abs=1e-9)
    assert rel["eta_vs_2_over_lambda1"]["slope"] == pytest.approx(0.875, abs=1e-9)
    # η* / (2/λ1) = 5 (dw)^-0.7 · (dw)^0.8 = 5 (dw)^0.1
    ratio = sorted(5 * (d * w) ** 0.1 for d in DEPTHS for w in WIDTHS)
    got = rel["eta_over_2_div_lambda1"]
    assert got["min"] == pytest.approx(5 * 32 ** 0.1) and got["max"] == pytest.approx(5 * 4096
                                                                                      ** 0.1)
    assert got["median"] == pytest.approx((ratio[9] + ratio[10]) / 2)


def test_sharpness_relations_match_numpy_polyfit():
    """On noisy data, each slope equals numpy's own least-squares line through the cell medians."""
    rows = law_rows(lam=True, lam_noise=0.1, seed=3)
    cells, _ = table.cells_from_rows(rows)
    rel = ft.sharpness_relations(rows, cells)["lambda1"]
    eta, lam = {}, {}
    for r in rows:
        key = (int(r["depth"]), int(r["width"]))
        eta.setdefault(key, []).append(float(r["lr_star"]))
        lam.setdefault(key, []).append(float(r["lambda1"]))
    keys = sorted(eta)
    log_dw = np.log([d * w for d, w in keys])
    log_eta = np.log([np.median(eta[k]) for k in keys])
    log_lam = np.log([np.median(lam[k]) for k in keys])
    assert rel["vs_depth_width"]["slope"] == pytest.approx(np.polyfit(log_dw, log_lam, 1)[0])
    assert rel["eta_vs_lambda1"]["slope"] == pytest.approx(np.polyfit(log_lam, log_eta, 1)[0])
    assert rel["eta_vs_2_over_lambda1"]["slope"] == pytest.approx(
        np.polyfit(np.log(2) - log_lam, log_eta, 1)[0])


@pytest.mark.parametrize("mutate, message", [
    (lambda rows: [{k: v for k, v in r.items() if k != "lr_star"} for r in rows],
     "missing column 'lr_star'"),
    (lambda rows: [{**r, "lr_star": "-1"} if i == 3 else r for i, r in enumerate(rows)],
     "r.csv line 5: lr_star must be a finite positive number for a log-log fit, got '-1'"),
    (lambda rows: [{**r, "lr_star": "abc"} if i == 0 else r for i, r in enumerate(rows)],
     "line 2: lr_star must be a number, got 'abc'"),
    (lambda rows: [r for r in rows if r["depth"] == "1" and r["width"] in ("32", "64")],
     "need at least 4 cells"),
])
def test_bad_tables_exit_2_with_one_line(tmp_path, run_milr, mutate, message):
    path = write(tmp_path / "r.csv", mutate(law_rows()))
    code, out, err = run_milr(["fit", path])
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1


def test_the_library_fits_a_table_as_milr_fit_does(tmp_path, run_milr):
    path = write(tmp_path / "r.csv", law_rows(lam=True))
    cfg = FitConfig(where=("width >= 64",), min_depth=2, bootstrap=50)
    got = ft.fit_table(path, cfg)
    code, out, err = run_milr(["fit", path, "--where", "width >= 64", "--min-depth", "2",
                               "--bootstrap", "50", "--json"])
    doc = json.loads(out)
    assert code in (0, None), err
    assert len(got.law.cells) == doc["cells"] == 3 * 4 and got.law.alpha == doc["alpha"]
    assert got.law.bootstrap["alpha_ci95"] == tuple(doc["bootstrap"]["alpha_ci95"])
    assert got.sharpness["lambda1"]["c"]["median"] == doc["sharpness"]["lambda1"]["c"]["median"]


def test_empty_selection_and_missing_file(tmp_path, run_milr):
    path = write(tmp_path / "r.csv", law_rows())
    code, _, err = run_milr(["fit", path, "--where", "depth > 100"])
    assert code == 2 and "no cells left after the filters" in err
    code, _, err = run_milr(["fit", str(tmp_path / "none.csv")])
    assert code == 2 and "cannot read" in err
    (tmp_path / "empty.csv").write_text("")
    code, _, err = run_milr(["fit", str(tmp_path / "empty.csv")])
    assert code == 2 and "empty.csv is empty" in err
    code, _, err = run_milr(["fit", path, "--where", "import os"])
    assert code == 2 and "cannot parse filter" in err


def test_cli_prints_law_prediction_and_writes_plot(tmp_path, run_milr):
    pytest.importorskip("matplotlib")
    import matplotlib.image as mpimg

    path = write(tmp_path / "r.csv", law_rows())
    png = tmp_path / "fit.png"
    code, out, err = run_milr(["fit", path, "--plot", str(png), "--predict", "4", "512"])
    assert code == 0, err
    assert "η* = " in out and "compatible" in out and "predicted η*(4, 512)" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert mpimg.imread(png).shape[:2] == (540, 1320)


def test_cli_json(tmp_path, run_milr):
    import json

    path = write(tmp_path / "r.csv", law_rows(lam=True))
    code, out, _ = run_milr(["fit", path, "--json", "--min-width", "64"])
    doc = json.loads(out)
    assert code == 0 and doc["cells"] == 16 and doc["filters"]["min_width"] == 64
    assert doc["two_exponent"]["compatible"] is True
    assert "lambda1" in doc["sharpness"]


def flat(text):
    """Output with all whitespace removed: rich wraps long lines at the console width."""
    return "".join(text.split())


def test_cli_lists_excluded_rows_and_seeds_per_cell(tmp_path, run_milr):
    import json

    rows = law_rows(seeds=2)
    rows[2].update(status="unfinished", lr_star="")  # (1, 64) seed 0: line 4
    rows[7].update(status="below_range", lr_star="")  # (1, 256) seed 1: line 9
    path = write(tmp_path / "r.csv", rows)
    code, out, err = run_milr(["fit", path])
    assert code == 0, err
    assert flat("seeds per cell: 2 of 2 in 18 cells; 1 of 2 in (1, 64), (1, 256)") in flat(out)
    assert "2 row(s) left out of the fit" in out
    assert "unfinished: max_rounds reached" in out and "below_range: no rate tried trained" in out
    code, out, _ = run_milr(["fit", path, "--json"])
    doc = json.loads(out)
    assert [(e["line"], e["depth"], e["width"], e["seed"], e["status"]) for e in
            doc["excluded"]] == [(4, 1, 64, "0", "unfinished"), (9, 1, 256, "1", "below_range")]
    seeds = {(c["depth"], c["width"]): (c["seeds"], c["rows"]) for c in doc["residuals"]}
    assert seeds[(1, 64)] == seeds[(1, 256)] == (1, 2) and seeds[(8, 32)] == (2, 2)
    code, out, _ = run_milr(["fit", path, "--json", "--min-width", "128"])
    assert [e["line"] for e in json.loads(out)["excluded"]] == [9]  # only rows in the regime


def csv_text(rows):
    head = ",".join(rows[0])
    return head + "\n" + "".join(",".join(r.values()) + "\n" for r in rows)


def one_dw(rows):
    return [r for r in rows if int(r["depth"]) * int(r["width"]) == 64] + [
        {**r, "depth": str(d), "width": str(64 // d)} for r in rows[:3] for d in (4, 8)]


@pytest.mark.parametrize("content, message", [
    (b"", "r.csv is empty"),
    (b"depth,width,seed,status,lr_star\n", "r.csv has a header but no data rows"),
    (csv_text(law_rows()).encode().replace(b",0.", b",\xff0.", 1),
     "r.csv line 2: not UTF-8 text (byte 0xff)"),
    (csv_text([{**r, "lr_star": "nan"} if i == 3 else r for i, r in enumerate(law_rows())]
              ).encode(), "r.csv line 5: lr_star must be a finite positive number for a log-log "
                          "fit, got 'nan'"),
    (csv_text([{**r, "lr_star": "0"} if i == 7 else r for i, r in enumerate(law_rows())]
              ).encode(), "r.csv line 9: lr_star must be a finite positive number for a log-log "
                          "fit, got '0'"),
    (csv_text([{**r, "depth": "0"} if i == 4 else r for i, r in enumerate(law_rows())]
              ).encode(), "r.csv line 6: depth must be a positive integer, got '0'"),
    (csv_text([{**r, "status": "below_range", "lr_star": ""} for r in law_rows()]).encode(),
     "r.csv: no row has a usable lr_star: all 60 rows left out: 60 below_range: no rate tried "
     "trained"),
    (csv_text(one_dw(law_rows())).encode(),
     "the 4 cells share one value of depth × width (64): a slope in d·w cannot be fitted"),
])
def test_bad_csvs_name_file_line_and_value(tmp_path, run_milr, content, message):
    """Each bad table ends in one line that says what is wrong and where, never a traceback."""
    path = tmp_path / "r.csv"
    path.write_bytes(content)
    code, out, err = run_milr(["fit", str(path)])
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_bom_and_negative_alpha(tmp_path, run_milr):
    """A UTF-8 BOM (Excel's CSV) is read; a rising law prints its exponent with one sign."""
    rows = law_rows(c=1e-4, a=-0.5, b=-0.5, noise=0)
    path = tmp_path / "r.csv"
    path.write_text(csv_text(rows), encoding="utf-8-sig")
    code, out, err = run_milr(["fit", str(path)])
    assert code == 0, err
    assert "(depth·width)^0.5000" in out and "^−-" not in out and "^-" not in out
    write(path, law_rows())
    code, out, err = run_milr(["fit", str(path)])
    assert "(depth·width)^−0.6996" in out


def test_plot_path_without_extension_is_reported_as_written(tmp_path, run_milr):
    pytest.importorskip("matplotlib")
    import json

    path = write(tmp_path / "r.csv", law_rows())
    code, out, err = run_milr(["fit", path, "--plot", str(tmp_path / "fig")])
    assert code == 0, err
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "fig").exists()
    assert flat(f"figure written to {tmp_path / 'fig.png'}") in flat(out)
    code, out, err = run_milr(["fit", path, "--json", "--plot", str(tmp_path / "f.pdf")])
    assert json.loads(out)["plot"] == str(tmp_path / "f.pdf")
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"


def test_where_arithmetic_errors_exit_2_in_fit(tmp_path, run_milr):
    path = write(tmp_path / "r.csv", law_rows())
    code, _, err = run_milr(["fit", path, "--where", "width / (depth - 1) > 1"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "filter 'width / (depth - 1) > 1': division by zero at depth=1, width=32" in err
    code, _, err = run_milr(["fit", path, "--where", "width ** 10 ** 10 > 1"])
    assert code == 2 and "exponent 1e+10 is beyond ±64" in err


def test_c_per_cell_and_against_dw(tmp_path, run_milr):
    """c = η*·λ1 from each row's own η* and converged λ1, per cell and against d·w, checked
    against numpy; an unconverged λ1 (empty, or a stale number flagged false) is never used."""
    import json

    rows = law_rows(lam=True, lam_noise=0.05, seed=2)
    rows[0].update(lambda1="", lambda1_eff="", lambda1_converged="False")
    rows[1].update(lambda1="1e9", lambda1_eff="1e9", lambda1_converged="False")
    rows[5].update(status="below_range", lr_star="")
    path = write(tmp_path / "r.csv", rows)
    code, out, err = run_milr(["fit", path, "--json"])
    assert code == 0, err
    got = json.loads(out)["sharpness"]
    per_seed: dict = {}
    for r in rows:
        if r["lambda1_converged"] == "True" and r["status"] == "ok":
            key = (int(r["depth"]), int(r["width"]))
            per_seed.setdefault(key, []).append(float(r["lr_star"]) * float(r["lambda1"]))
    c = got["lambda1"]["c"]
    cells = {(p["depth"], p["width"]): p for p in c["per_cell"]}
    assert set(cells) == set(per_seed)
    for key, vals in per_seed.items():
        assert cells[key]["median"] == pytest.approx(np.median(vals))
        assert (cells[key]["min"], cells[key]["max"]) == pytest.approx((min(vals), max(vals)))
        assert cells[key]["rows"] == 3 and cells[key]["seeds"] == len(vals)
    assert cells[(1, 32)]["seeds"] == 1 and cells[(1, 64)]["seeds"] == 2
    everything = [v for vals in per_seed.values() for v in vals]
    assert c["seeds"] == len(everything) == 57 and c["max"] < 1e3
    assert c["median"] == pytest.approx(np.median(everything))
    keys = sorted(per_seed)
    slope = np.polyfit(np.log([d * w for d, w in keys]),
                       np.log([np.median(per_seed[k]) for k in keys]), 1)[0]
    fit = c["vs_depth_width"]
    assert fit["slope"] == pytest.approx(slope)
    assert fit["slope_ci"][0] < 0.1 < fit["slope_ci"][1]  # c = 10 (dw)^0.1 by construction
    eff = got["lambda1_eff"]["c"]["vs_depth_width"]  # c_eff = 15 (dw)^-0.2
    assert eff["slope_ci"][0] < -0.2 < eff["slope_ci"][1]
    code, out, err = run_milr(["fit", path])
    assert "c = η*·λ1 (dimensionless): median" in out and "c = η*·λ1 per cell" in out
    assert flat(f"c ∝ (d·w)^{fit['slope']:.3f}") in flat(out)
    assert "c_eff = η*·λ1_eff" in out and "1e+09" not in out and "1e9" not in out


def test_a_equals_b_not_rejected_on_noise_is_not_called_sufficient(tmp_path, run_milr):
    """Where η* depends on neither depth nor width (pure noise), a = b is not rejected only
    because neither exponent is resolved: the verdict must say the test cannot tell, not that
    d·w is a sufficient variable; with a real d·w law it still says sufficient."""
    noise, law = law_rows(a=0.0, b=0.0, noise=0.5, seed=1), law_rows(seed=1)
    fit_noise = ft.fit_power_law(table.cells_from_rows(noise)[0])
    fit_law = ft.fit_power_law(table.cells_from_rows(law)[0])
    assert fit_noise.compatible and not fit_noise.resolved
    assert fit_law.compatible and fit_law.resolved
    for rows, said in ((noise, "cannot tell"), (law, "sufficient variable")):
        code, out, err = run_milr(["fit", write(tmp_path / "r.csv", rows)])
        assert code == 0, err
        assert said.replace(" ", "") in flat(out)
    code, out, _ = run_milr(["fit", write(tmp_path / "r.csv", noise), "--json"])
    assert json.loads(out)["two_exponent"]["resolved"] is False
