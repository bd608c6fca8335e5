"""The protocol study's summary: one line per results file, from milr's own fit.

    python sweeps/protocols/analyse.py            # writes summary.md and fit-*.json beside it

For each protocol: α with its 95% interval, R², the depth and width exponents and p(a = b),
and the distribution of c = η*·λ1 over seeds. Protocols (b) and (c) train the same networks on
the same loss as (a), so their λ1 is (a)'s, matched by (depth, width, seed); every other file
has its own λ1 column.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from milr.analysis.fit import fit_power_law, relation
from milr.analysis.table import cells_from_rows, read_table

HERE = Path(__file__).parent
SAME_LAMBDA1 = {"b-strict": "a-default", "c-stable-ce": "a-default",
                "g-c-stable-ce-input-lr-1": "a-default",
                "f-b-strict": "f-a-default", "f-c-stable-ce": "f-a-default"}


def lambda1_of(name: str) -> dict[tuple[str, str, str], float]:
    """Converged λ1 per (depth, width, seed) of a results file."""
    rows = read_table(HERE / f"{SAME_LAMBDA1.get(name, name)}.csv")
    return {(r["depth"], r["width"], r["seed"]): float(r["lambda1"]) for r in rows
            if r.get("lambda1_converged") == "True" and r.get("lambda1") not in ("", None)}


def summarise(name: str) -> dict:
    rows = read_table(HERE / f"{name}.csv")
    cells, excluded = cells_from_rows(rows)
    law = fit_power_law(cells)
    lam = lambda1_of(name)
    c = [float(r["lr_star"]) * lam[k] for r in rows if r["status"] == "ok"
         for k in [(r["depth"], r["width"], r["seed"])] if k in lam]
    per_cell: dict[tuple[int, int], list[float]] = {}
    for r in rows:
        k = (r["depth"], r["width"], r["seed"])
        if r["status"] == "ok" and k in lam:
            per_cell.setdefault((int(r["depth"]), int(r["width"])), []).append(
                float(r["lr_star"]) * lam[k])
    c_cells = sorted(per_cell)
    lam_cell: dict[tuple[int, int], list[float]] = {}
    for (d, w, _), v in lam.items():
        lam_cell.setdefault((int(d), int(w)), []).append(v)
    both = [cl for cl in cells if (cl.depth, cl.width) in lam_cell]
    eta_lam = relation([statistics.median(lam_cell[(cl.depth, cl.width)]) for cl in both],
                       [cl.value for cl in both]) if len(both) >= 3 else None
    c_dw = relation([d * w for d, w in c_cells],
                    [statistics.median(per_cell[k]) for k in c_cells]) if len(c_cells) >= 3 \
        else None
    q = statistics.quantiles(c, n=4) if len(c) >= 4 else [float("nan")] * 3
    return {"protocol": name, "cells": len(cells), "rows": len(rows),
            "excluded": len(excluded), "alpha": law.alpha, "alpha_ci95": law.alpha_ci,
            "r2": law.r2, "a": law.a, "a_ci95": law.a_ci, "b": law.b, "b_ci95": law.b_ci,
            "p_a_equals_b": law.a_minus_b_p, "two_exponent_adj_r2": law.two_adj_r2,
            "c_seeds": len(c), "c_median": statistics.median(c) if c else None,
            "c_quartiles": [q[0], q[2]], "c_min": min(c) if c else None,
            "c_max": max(c) if c else None,
            "c_vs_dw_slope": c_dw.slope if c_dw else None,
            "c_vs_dw_ci95": c_dw.slope_ci if c_dw else None,
            "eta_vs_lambda1_slope": eta_lam.slope if eta_lam else None,
            "eta_vs_lambda1_ci95": eta_lam.slope_ci if eta_lam else None,
            "lambda1_from": SAME_LAMBDA1.get(name, name)}


def line(s: dict) -> str:
    g = "{:.3g}".format
    lo, hi = s["alpha_ci95"]
    c = (f"{g(s['c_median'])} [{g(s['c_quartiles'][0])}–{g(s['c_quartiles'][1])}], "
         f"{g(s['c_min'])}–{g(s['c_max'])}; slope {s['c_vs_dw_slope']:+.2f} "
         f"[{s['c_vs_dw_ci95'][0]:+.2f}, {s['c_vs_dw_ci95'][1]:+.2f}]"
         if s["c_median"] is not None else "–")
    k = (f"{s['eta_vs_lambda1_slope']:+.2f} [{s['eta_vs_lambda1_ci95'][0]:+.2f}, "
         f"{s['eta_vs_lambda1_ci95'][1]:+.2f}]" if s["eta_vs_lambda1_slope"] is not None else "–")
    return (f"| {s['protocol']} | {s['cells']} | {s['alpha']:.3f} [{lo:.3f}, {hi:.3f}] | "
            f"{s['r2']:.2f} | {s['a']:.2f} [{s['a_ci95'][0]:.2f}, {s['a_ci95'][1]:.2f}] | "
            f"{s['b']:.2f} [{s['b_ci95'][0]:.2f}, {s['b_ci95'][1]:.2f}] | "
            f"{s['p_a_equals_b']:.2g} | {s['two_exponent_adj_r2']:.2f} | {k} | {c} |")


def main() -> None:
    names = [p.stem for p in sorted(HERE.glob("*.csv"))]
    out = ["| protocol | cells | α [95% CI] | R² | a (depth) | b (width) | p(a = b) | "
           "adj. R² (d, w) | η* ∝ λ1^k: k [95% CI] | c = η*·λ1: median [quartiles], range; "
           "slope against d·w [95% CI] |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        s = summarise(name)
        (HERE / f"fit-{name}.json").write_text(json.dumps(s, indent=2) + "\n")
        out.append(line(s))
        subprocess.run([sys.executable, "-m", "milr", "fit", f"{name}.csv", "--plot",
                        f"fit-{name}.png"], check=True, stdout=subprocess.DEVNULL, cwd=HERE)
    (HERE / "summary.md").write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
