"""The MNIST-1D study's summary, beside Fashion-MNIST's under the same two protocols, from milr's
own fit.

    python sweeps/mnist1d/analyse.py                  # summary.md, fit-*.json, fit-*.png,
                                                      # sweep.png and depth.png beside it
    python sweeps/mnist1d/analyse.py --check-lambda1  # first recompute λ1 under (g)'s settings

For each file: the power law η* = C (d·w)^−α and η* = C d^−a w^−b with p(a = b), over all cells
and over depth >= 2; every status that is not ok, by cell; c = η*·λ1 per seed; the exponent of
η* against λ1 over cells; λ1's own depth and width exponents; and, where the input layer is
slowed, the input layer's share of the top curvature (the median of λ1_eff / λ1, between the
rate multiple and 1: near 1 when the top direction lies outside the input layer, lower the more
of it lies inside).

(g) has no λ1 column. λ1 (unpreconditioned) is a property of the network at initialisation and
of the loss, which (g) shares with (a): same depth, width, seed, data and cross-entropy; neither
the criterion nor the input rate enters it. So (g)'s c uses (a)'s λ1 of the same (depth, width,
seed), and says so in its `lambda1_from`; `--check-lambda1` recomputes λ1 under (g)'s grid for
two cells and refuses to go on unless it equals (a)'s to the bit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from milr.analysis.fit import fit_power_law, sharpness_relations
from milr.analysis.table import cells_from_rows, read_table, select
from milr.base.config import FitConfig

HERE = Path(__file__).parent
PROTOCOLS = HERE.parent / "protocols"
# (name, data set, protocol, results, the results whose λ1 it uses)
FILES = [
    ("a-default", "MNIST-1D", "(a) default, accuracy ≥ 0.40",
     HERE / "a-default.csv", HERE / "a-default.csv"),
    ("g-stable-ce-input-lr-1", "MNIST-1D", "(g) stable CE, input × 1",
     HERE / "g-stable-ce-input-lr-1.csv", HERE / "a-default.csv"),
    ("fashion-mnist-a-default", "Fashion-MNIST", "(a) default, accuracy ≥ 0.80",
     PROTOCOLS / "a-default.csv", PROTOCOLS / "a-default.csv"),
    ("fashion-mnist-g-c-stable-ce-input-lr-1", "Fashion-MNIST", "(g) stable CE, input × 1",
     PROTOCOLS / "g-c-stable-ce-input-lr-1.csv", PROTOCOLS / "a-default.csv"),
]
REGIMES = {"all": (), "depth >= 2": ("depth >= 2",)}
CHECKED_CELLS = [(1, 32), (8, 64)]


def rel(path: Path) -> str:
    return str(path.relative_to(HERE.parent.parent))


def key(r) -> tuple[int, int, int]:
    return int(r["depth"]), int(r["width"]), int(r["seed"])


def statuses(rows) -> str:
    """Every status that is not ok, with its cells, in words; or that all rows are ok."""
    bad: dict[str, list[str]] = {}
    for r in rows:
        if r["status"] != "ok":
            bad.setdefault(r["status"], []).append(f"({r['depth']}, {r['width']}) seed {r['seed']}")
    if not bad:
        return f"all {len(rows)} rows ok"
    return "; ".join(f"{s}: {', '.join(where)}" for s, where in sorted(bad.items()))


def edges(rows, trials: Path) -> dict:
    """What decided each seed's bracket, from its trials log: the failure at hi diverged, or ran
    the whole budget without meeting the criterion; and the step at which the success at lo met
    it."""
    log: dict[tuple[int, int, int, float], list[dict]] = {}
    for line in trials.read_text().splitlines():
        t = json.loads(line)
        log.setdefault((t["depth"], t["width"], t["seed"], t["lr"]), []).append(t)
    fails, steps = [], []
    for r in rows:
        for t in log[(*key(r), float(r["hi"]))]:
            fails.append({"depth": t["depth"], "width": t["width"], "seed": t["seed"],
                          "diverged": t["diverged"], "steps": t["steps"],
                          "peak_acc": t["peak_acc"], "final_loss": t["final_loss"]})
        steps += [t["steps"] for t in log[(*key(r), float(r["lo"]))]]
    ran = [f for f in fails if not f["diverged"]]
    return {"trials_log": rel(trials), "hi_trials": len(fails),
            "hi_diverged": len(fails) - len(ran), "hi_ran_budget_below_criterion": len(ran),
            "hi_ran_peak_acc_range": [min(f["peak_acc"] for f in ran),
                                      max(f["peak_acc"] for f in ran)] if ran else None,
            "hi_ran_final_loss_range": [min(f["final_loss"] for f in ran),
                                        max(f["final_loss"] for f in ran)] if ran else None,
            "lo_steps_median": statistics.median(steps), "lo_steps_range": [min(steps), max(steps)],
            "hi": fails}


def with_lambda1(rows, source: Path, own: Path) -> list[dict]:
    """The rows with λ1 (and its convergence) from `source`'s row of the same (depth, width,
    seed). λ1_eff is dropped when borrowed: it depends on the input rate, which may differ."""
    if source == own:
        return rows
    lam = {key(r): r for r in read_table(source)}
    out = []
    for r in rows:
        row = {k: v for k, v in r.items() if not k.startswith("lambda1")}
        match = lam.get(key(r))
        if match is not None:
            row["lambda1"], row["lambda1_converged"] = match["lambda1"], match["lambda1_converged"]
        out.append(row)
    return out


def law_numbers(cells) -> dict:
    law = fit_power_law(cells)
    return {"cells": len(cells), "alpha": law.alpha, "alpha_ci95": list(law.alpha_ci),
            "r2": law.r2, "a": law.a, "a_ci95": list(law.a_ci), "b": law.b,
            "b_ci95": list(law.b_ci), "p_a_equals_b": law.a_minus_b_p}


def lambda1_part(rows, cells) -> dict:
    """c = η*·λ1 (with quartiles over seeds), η* against λ1, λ1's own exponents, and the input
    layer's share of the curvature where λ1_eff was measured."""
    sharp = sharpness_relations(rows, cells)
    if "lambda1" not in sharp:
        return {}
    c = sharp["lambda1"]["c"]
    eta = {key(r): float(r["lr_star"]) for r in rows if r["status"] == "ok"}
    per_seed = sorted(eta[key(r)] * float(r["lambda1"]) for r in rows
                      if key(r) in eta and str(r.get("lambda1_converged")) == "True")
    q = statistics.quantiles(per_seed, n=4)
    lam_cells, _ = cells_from_rows(rows, "lambda1")
    out = {"c_seeds": c["seeds"], "c_median": c["median"], "c_quartiles": [q[0], q[2]],
           "c_min": c["min"], "c_max": c["max"],
           "c_per_cell": c["per_cell"], "c_vs_dw": c["vs_depth_width"],
           "eta_vs_lambda1": sharp["lambda1"]["eta_vs_lambda1"],
           "lambda1_law": law_numbers(lam_cells)}
    measured = [r for r in rows if r.get("lambda1_eff") not in ("", None)
                and str(r.get("lambda1_converged")) == "True"]
    if measured:
        ratio = [float(r["lambda1_eff"]) / float(r["lambda1"]) for r in measured]
        by_depth: dict[int, list[float]] = {}
        for r, x in zip(measured, ratio, strict=True):
            by_depth.setdefault(int(r["depth"]), []).append(x)
        out["lambda1_eff_over_lambda1"] = {
            "median": statistics.median(ratio), "min": min(ratio), "max": max(ratio),
            "median_by_depth": {d: statistics.median(v) for d, v in sorted(by_depth.items())}}
    return out


def summarise(name: str, data: str, protocol: str, path: Path, lam_path: Path) -> dict:
    rows = read_table(path)
    cells, _ = cells_from_rows(rows)
    merged = with_lambda1(rows, lam_path, path)
    trials = path.with_suffix(".trials.jsonl")
    return {"file": rel(path), "data": data, "protocol": protocol, "rows": len(rows),
            "statuses": statuses(rows), "lambda1_from": rel(lam_path),
            "fits": {k: law_numbers(select(cells, FitConfig(where=w)))
                     for k, w in REGIMES.items()},
            **lambda1_part(merged, cells),
            **({"edges": edges(rows, trials)} if trials.exists() else {})}


def ci(v: float, lo_hi: list[float], fmt: str = ".2f") -> str:
    return f"{v:{fmt}} [{lo_hi[0]:{fmt}}, {lo_hi[1]:{fmt}}]"


def law_line(s: dict, regime: str) -> str:
    f = s["fits"][regime]
    return (f"| {s['data']} | {s['protocol']} | {regime}: {f['cells']} | "
            f"{ci(f['alpha'], f['alpha_ci95'])} | {f['r2']:.2f} | {ci(f['a'], f['a_ci95'])} | "
            f"{ci(f['b'], f['b_ci95'])} | {f['p_a_equals_b']:.2g} |")


def lambda1_line(s: dict) -> str:
    g = "{:.3g}".format
    if "c_median" not in s:
        return f"| {s['data']} | {s['protocol']} | no λ1 | | | | |"
    borrowed = "" if s["lambda1_from"] == s["file"] else f" (λ1 of `{s['lambda1_from']}`)"
    lam, k, cdw = s["lambda1_law"], s["eta_vs_lambda1"], s["c_vs_dw"]
    share = s.get("lambda1_eff_over_lambda1")
    share_text = "–" if share is None else (
        f"{share['median']:.2f} ({share['min']:.2f}–{share['max']:.2f}); by depth "
        + ", ".join(f"{d}: {v:.2f}" for d, v in share["median_by_depth"].items()))
    return (f"| {s['data']} | {s['protocol']}{borrowed} | "
            f"{g(s['c_median'])} [{g(s['c_quartiles'][0])}–{g(s['c_quartiles'][1])}], "
            f"{g(s['c_min'])}–{g(s['c_max'])}; {cdw['slope']:+.2f} "
            f"[{cdw['slope_ci'][0]:+.2f}, {cdw['slope_ci'][1]:+.2f}] | "
            f"{k['slope']:+.2f} [{k['slope_ci'][0]:+.2f}, {k['slope_ci'][1]:+.2f}] | "
            f"{-lam['alpha']:.2f} [{-lam['alpha_ci95'][1]:.2f}, {-lam['alpha_ci95'][0]:.2f}], "
            f"R² {lam['r2']:.2f} | {-lam['a']:.2f} [{-lam['a_ci95'][1]:.2f}, "
            f"{-lam['a_ci95'][0]:.2f}] | {-lam['b']:.2f} [{-lam['b_ci95'][1]:.2f}, "
            f"{-lam['b_ci95'][0]:.2f}] | {share_text} |")


def edges_line(s: dict) -> str:
    e = s["edges"]
    ran = "" if not e["hi_ran_budget_below_criterion"] else (
        f" (peak accuracy {e['hi_ran_peak_acc_range'][0]:.3f}–{e['hi_ran_peak_acc_range'][1]:.3f}"
        f", final loss {e['hi_ran_final_loss_range'][0]:.3f}–"
        f"{e['hi_ran_final_loss_range'][1]:.3f})")
    return (f"- {s['data']} {s['protocol']}: of {e['hi_trials']} trials at hi, "
            f"{e['hi_diverged']} diverged and {e['hi_ran_budget_below_criterion']} ran the whole "
            f"budget without meeting the criterion{ran}; the trials at lo met it at step "
            f"{e['lo_steps_median']:g} (median; range {e['lo_steps_range'][0]}–"
            f"{e['lo_steps_range'][1]}).")


def summary_text(summaries: list[dict]) -> str:
    out = ["η* = C (d·w)^−α and η* = C d^−a w^−b over cells (median of 3 seeds); 95% intervals "
           "in brackets; p: two-sided p-value of a = b.", "",
           "| data | protocol | cells | α | R² | a (depth) | b (width) | p(a = b) |",
           "|---|---|---|---|---|---|---|---|"]
    out += [law_line(s, r) for r in REGIMES for s in summaries]
    out += ["", "Statuses: " + "; ".join(f"{s['data']} {s['protocol']}: {s['statuses']}"
                                          for s in summaries) + ".", "",
            "c = η*·λ1 per seed: median [quartiles], range; slope of the cell medians against "
            "d·w. k: η* ∝ λ1^k over cell medians. λ1 ∝ (d·w)^β and λ1 ∝ d^a' w^b' over cell "
            "medians. λ1_eff / λ1: λ1 with every layer's rate multiple applied (input × 0.1) "
            "over plain λ1, per seed: median (range).", "",
            "| data | protocol | c: median [quartiles], range; slope against d·w | k | "
            "λ1: β | λ1: a' (depth) | λ1: b' (width) | λ1_eff / λ1 |",
            "|---|---|---|---|---|---|---|---|"]
    out += [lambda1_line(s) for s in summaries]
    out += ["", "What decided the brackets (from the trials logs, MNIST-1D only; the Fashion-MNIST "
            "sweeps kept none): the trial at each seed's hi, and the step at which the trial at "
            "its lo met the criterion.", ""]
    out += [edges_line(s) for s in summaries if "edges" in s]
    return "\n".join(out) + "\n"


def check_lambda1() -> None:
    """Recompute λ1 under (g)'s grid and compare it with (a)'s rows, bit for bit."""
    from milr.base.config import SharpnessConfig
    from milr.engine.sharpness import sharpness_seeds
    from milr.sweep.grid import load_grid

    grid = load_grid(HERE / "g-stable-ce-input-lr-1.yaml")
    rows = {key(r): r for r in read_table(HERE / "a-default.csv")}
    for d, w in CHECKED_CELLS:
        for s in sharpness_seeds(grid.config(d, w).network, SharpnessConfig(samples=1024)):
            a = float(rows[(d, w, s.seed)]["lambda1"])
            if s.lambda1 != a:
                sys.exit(f"λ1 of ({d}, {w}) seed {s.seed} under (g): {s.lambda1!r}, under "
                         f"(a): {a!r}; (a)'s λ1 cannot stand for (g)'s")
            print(f"λ1 ({d}, {w}) seed {s.seed}: {s.lambda1!r} under (g), as under (a)")


def depth_figure(summaries: list[dict], out: Path) -> None:
    """Per-cell median η* against depth, one line per width: both data sets under both
    protocols, on one η* scale so that panels compare."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 8), sharex=True, sharey=True)
    for ax, s in zip(axes.T.flat, summaries, strict=True):
        cells, _ = cells_from_rows(read_table(HERE.parent.parent / s["file"]))
        widths = sorted({c.width for c in cells})
        for i, w in enumerate(widths):
            cs = sorted((c for c in cells if c.width == w), key=lambda c: c.depth)
            ax.errorbar([c.depth for c in cs], [c.value for c in cs], capsize=3,
                        yerr=[[c.value - c.low for c in cs], [c.high - c.value for c in cs]],
                        marker="osD^v"[i % 5], color=plt.cm.tab10(i), label=f"width {w}")
        f = s["fits"]["all"]
        ax.set_title(f"{s['data']}, {s['protocol']}\na = {f['a']:.2f}, b = {f['b']:.2f}, "
                     f"p(a = b) = {f['p_a_equals_b']:.2g}", fontsize=10)
        ax.set(xscale="log", yscale="log")
        ax.grid(which="both", alpha=0.25)
    for ax in axes[1]:
        ax.set_xlabel("depth")
        ax.set_xticks([1, 2, 4, 8], ["1", "2", "4", "8"])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for ax in axes[:, 0]:
        ax.set_ylabel("η* (median of 3 seeds; bars: seed range)")
        ax.set_yticks([0.3, 1, 3, 10], ["0.3", "1", "3", "10"])
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def milr(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "milr", *args], check=True, stdout=subprocess.DEVNULL,
                   cwd=HERE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-lambda1", action="store_true",
                        help="recompute λ1 under (g) for two cells first (needs torch)")
    if parser.parse_args().check_lambda1:
        check_lambda1()
    summaries = [summarise(*f) for f in FILES]
    for (name, *_), s in zip(FILES, summaries, strict=True):
        (HERE / f"fit-{name}.json").write_text(json.dumps(s, indent=2, allow_nan=False) + "\n")
    text = summary_text(summaries)
    (HERE / "summary.md").write_text(text)
    print(text)
    for name in ("a-default", "g-stable-ce-input-lr-1"):
        milr("fit", f"{name}.csv", "--plot", f"fit-{name}.png")
    milr("plot", "sweep", "a-default.csv", "--compare", "g-stable-ce-input-lr-1.csv",
         "--out", "sweep.png")
    depth_figure(summaries, HERE / "depth.png")


if __name__ == "__main__":
    main()
