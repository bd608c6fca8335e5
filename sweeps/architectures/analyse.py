"""The architecture study's summary: η* against depth for residual MLPs under three branch
scalings, for linear, tanh and ReLU MLPs, and under Adam, from milr's own fits.

    python sweeps/architectures/analyse.py     # summary.md, fit-*.json and depth.png beside it

For each grid (its results file may be missing or still being written): the cells its YAML asks
for and which of them have no rows yet; every status that is not ok, by cell, and the cells where
no seed trained (with what their trials did); η* per cell (median over the seeds that ended ok,
their range, how many); η* = C d^−a w^−b over all cells and over depth >= 2, with p(a = b); the
depth exponent alone at each width (η* ∝ depth^−a); and where λ1 was measured, λ1 ∝ depth^s and
c = η*·λ1 against depth at each width. A fit that the cells present cannot support is reported
as such, with milr's reason, never drawn from fewer cells.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from pathlib import Path

from milr.analysis.fit import fit_power_law, relation, sharpness_relations
from milr.analysis.table import FitError, cells_from_rows, read_table, select
from milr.base.config import FitConfig
from milr.sweep.grid import load_grid

HERE = Path(__file__).parent
# (grid, what it is, the question it answers)
GRIDS = [
    ("residual-none", "SGD, residual, α = 1", "reference: the plain residual net"),
    ("residual-sqrt-depth", "SGD, residual, α = 1/√L", "a ≈ 0?"),
    ("residual-depth", "SGD, residual, α = 1/L", "a ≈ 0?"),
    ("mlp-linear", "SGD, MLP, linear", "η* ∝ 1/L and λ1 ∝ L?"),
    ("mlp-tanh", "SGD, MLP, tanh", "c = η*·λ1 beside ReLU's"),
    ("mlp-relu", "SGD, MLP, ReLU", "reference: the default network"),
    ("adam-residual-sqrt-depth", "Adam, residual, α = 1/√L", "a ≈ 1/2?"),
    ("adam-residual-sqrt-depth-e-half", "Adam, residual, α = 1/√L, block rate × L^−1/2",
     "a ≈ 0?"),
    ("adam-residual-depth", "Adam, residual, α = 1/L", "a ≈ 0?"),
]
# The exponents each question names, tested per width against the 95% interval: a of η* ∝ L^−a,
# s of λ1 ∝ L^s, t of c = η*·λ1 ∝ L^t (t = 0: c constant across depth).
TARGETS = {
    "residual-sqrt-depth": {"a": 0.0, "t": 0.0}, "residual-depth": {"a": 0.0, "t": 0.0},
    "mlp-linear": {"a": 1.0, "s": 1.0, "t": 0.0}, "mlp-tanh": {"t": 0.0},
    "mlp-relu": {"a": 1.5, "t": 0.0}, "adam-residual-sqrt-depth": {"a": 0.5},
    "adam-residual-sqrt-depth-e-half": {"a": 0.0}, "adam-residual-depth": {"a": 0.0},
}
SLOPES = {"a": "depth_exponent", "s": "lambda1_vs_depth", "t": "c_vs_depth"}
REGIMES = {"all": (), "depth >= 2": ("depth >= 2",)}
WIDTHS = [32, 64, 128, 256]


def cell_name(d: int, w: int) -> str:
    return f"({d}, {w})"


def coverage(grid: str, rows: list[dict]) -> dict:
    """The cells the grid asks for, those with no row yet and those with fewer rows than seeds."""
    g = load_grid(HERE / f"{grid}.yaml")
    seeds = int(g.params.get("seeds", 1))
    tried = Counter((int(r["depth"]), int(r["width"])) for r in rows)
    return {"expected_cells": len(g.cells), "seeds": seeds,
            "missing_cells": [cell_name(*c) for c in g.cells if c not in tried],
            "incomplete_cells": {cell_name(*c): n for c, n in sorted(tried.items()) if n < seeds},
            "done_cells": sum(1 for c in g.cells if tried.get(c, 0) >= seeds)}


def read_trials(path: Path) -> dict[tuple[int, int], list[dict]]:
    """A trials log's trials by cell; a last line being written is skipped."""
    out: dict[tuple[int, int], list[dict]] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            t = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "depth" in t:
            out.setdefault((t["depth"], t["width"]), []).append(t)
    return out


def statuses(rows: list[dict], trials: dict) -> dict:
    """Seeds not ok by status and cell, and the cells where no seed ended ok, with what their
    trials did (diverged or ran the budget below the threshold) and their λ1 at initialisation."""
    bad: dict[str, list[str]] = {}
    by_cell: dict[tuple[int, int], list[dict]] = {}
    for r in rows:
        by_cell.setdefault((int(r["depth"]), int(r["width"])), []).append(r)
        if r["status"] != "ok":
            bad.setdefault(r["status"], []).append(
                f"{cell_name(r['depth'], r['width'])} seed {r['seed']}")
    dead = []
    for (d, w), rs in sorted(by_cell.items()):
        if any(r["status"] == "ok" for r in rs):
            continue
        ts = [t for t in trials.get((d, w), []) if not t.get("cancelled")]
        peaks = [t["peak_acc"] for t in ts if t.get("peak_acc") is not None]
        lam = [float(r["lambda1"]) for r in rs if str(r.get("lambda1_converged")) == "True"]
        dead.append({"cell": cell_name(d, w), "depth": d, "width": w,
                     "statuses": dict(Counter(r["status"] for r in rs)),
                     "lowest_rate_tried": min((t["lr"] for t in ts), default=None),
                     "trials": len(ts), "diverged": sum(1 for t in ts if t["diverged"]),
                     "best_peak_acc": max(peaks, default=None),
                     "lambda1_median": statistics.median(lam) if lam else None})
    return {"rows": len(rows), "not_ok": {s: len(v) for s, v in sorted(bad.items())},
            "not_ok_where": bad, "nothing_trains": dead}


def law(cells) -> dict:
    """The two-exponent fit, or why the cells cannot support it."""
    try:
        f = fit_power_law(cells)
    except FitError as e:
        return {"cells": len(cells), "not_fitted": str(e)}
    return {"cells": len(cells), "a": f.a, "a_ci95": list(f.a_ci), "b": f.b,
            "b_ci95": list(f.b_ci), "p_a_equals_b": f.a_minus_b_p, "adj_r2": f.two_adj_r2,
            "alpha": f.alpha, "alpha_ci95": list(f.alpha_ci)}


def depth_slopes(points: dict[int, list[tuple[int, float]]], sign: int = -1) -> dict:
    """Per width, the slope of log y against log depth (× sign: −1 gives η*'s a), or why not."""
    out = {}
    for w, pts in sorted(points.items()):
        if len(pts) < 3:
            out[w] = {"depths": [d for d, _ in pts], "not_fitted": "fewer than 3 depths"}
            continue
        r = relation([d for d, _ in pts], [v for _, v in pts])
        lo, hi = sorted((sign * r.slope_ci[0], sign * r.slope_ci[1]))
        out[w] = {"depths": [d for d, _ in pts], "slope": sign * r.slope, "ci95": [lo, hi],
                  "r2": r.r2}
    return out


def by_width(triples) -> dict[int, list[tuple[int, float]]]:
    out: dict[int, list[tuple[int, float]]] = {}
    for d, w, v in sorted(triples):
        out.setdefault(w, []).append((d, v))
    return out


def lambda1_part(rows: list[dict], cells) -> dict:
    """λ1 ∝ depth^s and c = η*·λ1 per cell and against depth, at each width (seeds ok only)."""
    sharp = sharpness_relations(rows, cells).get("lambda1")
    if not sharp:
        return {}
    lam, _ = cells_from_rows(rows, "lambda1")
    c = sharp["c"]
    return {"lambda1_per_cell": [{"depth": x.depth, "width": x.width, "median": x.value,
                                  "min": x.low, "max": x.high} for x in lam],
            "lambda1_vs_depth": depth_slopes(by_width((x.depth, x.width, x.value) for x in lam),
                                             sign=1),
            "c_seeds": c["seeds"], "c_median": c["median"], "c_min": c["min"], "c_max": c["max"],
            "c_per_cell": c["per_cell"],
            "c_vs_depth": depth_slopes(by_width((p["depth"], p["width"], p["median"])
                                                for p in c["per_cell"]), sign=1)}


def summarise(grid: str, label: str, question: str) -> dict:
    path = HERE / f"{grid}.csv"
    out = {"grid": grid, "label": label, "question": question, "file": path.name}
    if not path.exists():
        return {**out, "missing": "no results file yet", **coverage(grid, [])}
    try:
        rows = read_table(path)
    except FitError as e:  # e.g. a header and no row yet
        return {**out, "missing": str(e).replace(f"{HERE}/", ""), **coverage(grid, [])}
    out.update(coverage(grid, rows))
    out["statuses"] = statuses(rows, read_trials(path.with_suffix(".trials.jsonl")))
    try:
        cells, _ = cells_from_rows(rows)
    except FitError as e:
        return {**out, "no_eta": str(e)}
    out["cells"] = [{"depth": c.depth, "width": c.width, "median": c.value, "min": c.low,
                     "max": c.high, "ok_seeds": c.seeds, "rows": c.rows} for c in cells]
    fits = {}
    for name, where in REGIMES.items():
        try:
            fits[name] = law(select(cells, FitConfig(where=where)))
        except FitError as e:
            fits[name] = {"cells": 0, "not_fitted": str(e)}
    out["fits"] = fits
    out["depth_exponent"] = depth_slopes(by_width((c.depth, c.width, c.value) for c in cells))
    return {**out, **lambda1_part(rows, cells)}


# --- summary.md -----------------------------------------------------------------------------

g3 = "{:.3g}".format


def ci(v: float, lo_hi: list[float], fmt: str = ".2f") -> str:
    return f"{v:{fmt}} [{lo_hi[0]:{fmt}}, {lo_hi[1]:{fmt}}]"


def slopes_text(slopes: dict) -> str:
    parts = []
    for w, s in slopes.items():
        if "not_fitted" in s:
            parts.append(f"w {w}: – ({len(s['depths'])} depth{'s' * (len(s['depths']) != 1)})")
        else:
            parts.append(f"w {w}: {ci(s['slope'], s['ci95'])} (depths {s['depths'][0]}–"
                         f"{s['depths'][-1]})")
    return "; ".join(parts) or "–"


def coverage_line(s: dict) -> str:
    done = f"{s['done_cells']} of {s['expected_cells']} cells done"
    if "missing" in s:
        return f"- **{s['grid']}** ({s['label']}): {s['missing']}; {done}."
    miss = f"; missing {', '.join(s['missing_cells'])}" if s["missing_cells"] else ""
    part = "; in progress " + ", ".join(f"{c} ({n} of {s['seeds']} seeds)" for c, n in
                                        s["incomplete_cells"].items()) \
        if s["incomplete_cells"] else ""
    st = s["statuses"]
    bad = ("; not ok: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in
                                    st["not_ok_where"].items())) if st["not_ok"] else \
        "; every seed ok"
    return f"- **{s['grid']}** ({s['label']}): {done}{miss}{part}; {st['rows']} rows{bad}."


def dead_line(s: dict, d: dict) -> str:
    acc = "none evaluated" if d["best_peak_acc"] is None else f"{d['best_peak_acc']:.3f}"
    lam = "–" if d["lambda1_median"] is None else g3(d["lambda1_median"])
    head = f"- {s['grid']} {d['cell']}: {', '.join(f'{n} {k}' for k, n in d['statuses'].items())}"
    if not d["trials"]:
        return f"{head}; no trials in the trials log; λ1 median {lam}."
    return (f"{head}; {d['trials']} trials down to η = {g3(d['lowest_rate_tried'])}, "
            f"{d['diverged']} diverged, best peak accuracy {acc}; λ1 median {lam}.")


def fit_cell(f: dict) -> str:
    if "not_fitted" in f:
        return f"{f['cells']} | not fitted: {f['not_fitted']} | | |"
    return (f"{f['cells']} | {ci(f['a'], f['a_ci95'])} | {ci(f['b'], f['b_ci95'])} | "
            f"{f['p_a_equals_b']:.2g} |")


def eta_table(s: dict) -> list[str]:
    """η* per cell: median [min–max] (ok seeds / rows), depths down, widths across."""
    cells = {(c["depth"], c["width"]): c for c in s["cells"]}
    dead = {(d["depth"], d["width"]) for d in s["statuses"]["nothing_trains"]}
    depths = sorted({k[0] for k in [*cells, *dead]})
    widths = [w for w in WIDTHS if any(k[1] == w for k in [*cells, *dead])]
    out = [f"η* of **{s['grid']}** ({s['label']}): median [range] (seeds ok / seeds)", "",
           "| depth | " + " | ".join(f"w {w}" for w in widths) + " |",
           "|---|" + "---|" * len(widths)]
    for d in depths:
        row = []
        for w in widths:
            c = cells.get((d, w))
            if c:
                row.append(f"{g3(c['median'])} [{g3(c['min'])}–{g3(c['max'])}] "
                           f"({c['ok_seeds']}/{c['rows']})")
            else:
                row.append("nothing trains" if (d, w) in dead else "–")
        out.append(f"| {d} | " + " | ".join(row) + " |")
    return out + [""]


def c_table(s: dict) -> list[str]:
    """c = η*·λ1 per cell (median over ok seeds with converged λ1)."""
    per = {(p["depth"], p["width"]): p["median"] for p in s["c_per_cell"]}
    lam = {(p["depth"], p["width"]): p["median"] for p in s["lambda1_per_cell"]}
    depths = sorted({k[0] for k in per})
    widths = [w for w in WIDTHS if any(k[1] == w for k in per)]
    out = [f"c = η*·λ1 (λ1) per cell of **{s['grid']}**: median over seeds", "",
           "| depth | " + " | ".join(f"w {w}" for w in widths) + " |",
           "|---|" + "---|" * len(widths)]
    for d in depths:
        out.append(f"| {d} | " + " | ".join(
            f"{g3(per[(d, w)])} ({g3(lam[(d, w)])})" if (d, w) in per else "–"
            for w in widths) + " |")
    return out + [""]


def verdict(s: dict, name: str, target: float) -> str:
    """Whether `target` lies in each width's 95% interval of exponent `name`, or not measured."""
    slopes = s.get(SLOPES[name], {})
    fitted = {w: x for w, x in slopes.items() if "not_fitted" not in x}
    head = f"- **{s['grid']}**, {name} = {target:g}: "
    if not fitted:
        return head + "not yet measured (no width has 3 depths measured)"
    return head + "; ".join(
        f"w {w}: {ci(x['slope'], x['ci95'])} "
        f"{'inside' if x['ci95'][0] <= target <= x['ci95'][1] else 'OUTSIDE'}"
        for w, x in fitted.items()) + (" (other widths: fewer than 3 depths)"
                                      if len(fitted) < len(slopes) else "")


def ratio_line(summaries: list[dict], top: str, bottom: str) -> str:
    """c of one grid over another's (medians over seeds): Lewkowycz et al.'s ReLU / tanh."""
    c = {s["grid"]: s.get("c_median") for s in summaries}
    if c.get(top) is None or c.get(bottom) is None:
        return f"c of {top} / c of {bottom}: not yet measured."
    return (f"c of {top} / c of {bottom} (medians over seeds): {c[top]:.3g} / {c[bottom]:.3g} "
            f"= {c[top] / c[bottom]:.2f}.")


def summary_text(summaries: list[dict]) -> str:
    out = ["# Architectures: summary (written by analyse.py; numbers change while grids run)", "",
           "## Coverage and statuses", ""]
    out += [coverage_line(s) for s in summaries]
    dead = [dead_line(s, d) for s in summaries if "statuses" in s
            for d in s["statuses"]["nothing_trains"]]
    out += ["", "Cells where no seed trained (no η*; left out of every fit below):", ""]
    out += dead or ["- none"]
    out += ["", "## Fits", "",
            "η* = C d^−a w^−b over cells (median of the seeds that ended ok); 95% intervals; "
            "p: two-sided p-value of a = b.", "",
            "| grid | regime | cells | a (depth) | b (width) | p(a = b) |",
            "|---|---|---|---|---|---|"]
    for s in summaries:
        for regime in REGIMES:
            if "fits" in s:
                out.append(f"| {s['grid']} | {regime} | {fit_cell(s['fits'][regime])}")
    out += ["", "Depth exponent alone at each width: η* ∝ depth^−a (a per width, 95% interval, "
            "over the depths with an η*).", ""]
    out += [f"- **{s['grid']}** ({s['question']}): {slopes_text(s['depth_exponent'])}"
            for s in summaries if "depth_exponent" in s]
    lam = [s for s in summaries if "c_per_cell" in s]
    out += ["", "λ1 (at initialisation, plain) against depth at each width, λ1 ∝ depth^s: s "
            "[95%]; and c = η*·λ1 against depth, c ∝ depth^t: t [95%]; c per seed: median, "
            "range. Only seeds that ended ok with converged λ1.", ""]
    for s in lam:
        out += [f"- **{s['grid']}**: λ1: {slopes_text(s['lambda1_vs_depth'])}",
                f"  c: {g3(s['c_median'])} ({g3(s['c_min'])}–{g3(s['c_max'])}, "
                f"{s['c_seeds']} seeds); t: {slopes_text(s['c_vs_depth'])}"]
    out += ["", "## The questions, per width (the named exponent inside the 95% interval?)", ""]
    out += [verdict(s, k, v) for s in summaries for k, v in TARGETS.get(s["grid"], {}).items()]
    out += ["", ratio_line(summaries, "mlp-relu", "mlp-tanh"), "", "## Per cell", ""]
    for s in summaries:
        if "cells" in s:
            out += eta_table(s)
    for s in lam:
        out += c_table(s)
    return "\n".join(out) + "\n"


# --- depth.png ------------------------------------------------------------------------------


def plain_ticks(ax, few: bool) -> None:
    """η* ticks as plain numbers (0.1, 1, 3), and 2, 3, 5 × 10^k labelled too when the axis
    spans little more than a decade."""
    from matplotlib.ticker import FuncFormatter

    def minor(v, _):
        return f"{v:g}" if few and round(v / 10 ** math.floor(math.log10(v))) in (2, 3, 5) \
            else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def depth_figure(summaries: list[dict], out: Path) -> None:
    """Median η* against depth per grid, one line per width (seed range as bars), log-log; the
    SGD panels on one η* scale, the Adam panels on another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(13, 12), sharex=True)
    for ax, s in zip(axes.flat, summaries, strict=True):
        title = s["label"]
        f = s.get("fits", {}).get("all", {})
        if "a" in f:
            title += f"\na = {f['a']:.2f} [{f['a_ci95'][0]:.2f}, {f['a_ci95'][1]:.2f}], " \
                     f"b = {f['b']:.2f}"
        ax.set_title(title, fontsize=9.5)
        for i, w in enumerate(WIDTHS):
            cs = sorted((c for c in s.get("cells", []) if c["width"] == w),
                        key=lambda c: c["depth"])
            if cs:
                ax.errorbar([c["depth"] for c in cs], [c["median"] for c in cs], capsize=3,
                            yerr=[[c["median"] - c["min"] for c in cs],
                                  [c["max"] - c["median"] for c in cs]],
                            marker="osD^"[i], color=plt.cm.tab10(i), label=f"width {w}")
        notes = []
        if "missing" in s or "no_eta" in s:
            notes.append("no η* yet")
        elif s["missing_cells"]:
            notes.append(f"{len(s['missing_cells'])} of {s['expected_cells']} cells not run yet")
        dead = s.get("statuses", {}).get("nothing_trains", [])
        if dead:
            notes.append("nothing trains: " + ", ".join(d["cell"] for d in dead))
        if notes:
            ax.text(0.03, 0.03, "\n".join(notes), transform=ax.transAxes, fontsize=8,
                    va="bottom", bbox={"fc": "white", "ec": "0.7", "alpha": 0.9})
        ax.set(xscale="log", yscale="log")
        ax.grid(which="both", alpha=0.25)
    for group in (range(6), range(6, 9)):  # SGD, Adam: one η* scale each
        cs = [c for i in group for c in summaries[i].get("cells", [])]
        if cs:
            lo, hi = min(c["min"] for c in cs) / 1.5, max(c["max"] for c in cs) * 1.5
            for i in group:
                axes.flat[i].set_ylim(lo, hi)
                plain_ticks(axes.flat[i], few=hi / lo < 30)
    for ax in axes[2]:
        ax.set_xlabel("depth L")
        ax.set_xticks([1, 2, 4, 8, 16], ["1", "2", "4", "8", "16"])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for ax in axes[:, 0]:
        ax.set_ylabel("η* (median of seeds ok; bars: range)")
    handles = [plt.Line2D([], [], color=plt.cm.tab10(i), marker="osD^"[i], label=f"width {w}")
               for i, w in enumerate(WIDTHS)]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.972), ncol=4,
               fontsize=10, frameon=False)
    fig.suptitle("Fashion-MNIST, accuracy ≥ 0.80 within 1000 steps: η* against depth "
                 "(rows 1–2 SGD, row 3 Adam)", y=0.993, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.945))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    summaries = [summarise(*g) for g in GRIDS]
    for s in summaries:
        (HERE / f"fit-{s['grid']}.json").write_text(
            json.dumps(s, indent=2, allow_nan=False, default=str) + "\n")
    text = summary_text(summaries)
    (HERE / "summary.md").write_text(text)
    print(text)
    depth_figure(summaries, HERE / "depth.png")


if __name__ == "__main__":
    main()
