"""The transfer study's summary: η_opt, η* and the stability edge per cell, their width and depth
exponents, and the ratios η_opt/η* and η_opt/(stability edge) across every cell.

    python sweeps/transfer/analyse.py      # writes summary.md and fit-*.json beside it

Each grid's results file holds one row per cell (`milr sweep` of a `measure: scan` grid); a
number counts only where its status is ok (flat optima and edges outside the grid are counted,
never fitted). Grids still being swept are summarised over the cells they hold, and say so.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from milr.analysis.fit import FitError, fit_power_law, relation
from milr.analysis.table import cells_from_rows, read_table
from milr.engine.scan import STATUS_OF
from milr.sweep.grid import load_grid

HERE = Path(__file__).parent
# label -> the grids whose rows it pools (one protocol: the same grid split by width)
RUNS = {"adam, SP": ["adam-sp", "adam-sp-w512"],
        "adam, μP (base 32)": ["adam-mup", "adam-mup-w512"],
        "sgd, SP": ["sgd-sp"]}
# the rates a row gives, each with the status column that says whether it counts (milr fit's)
RATES = {c: STATUS_OF[c][0] for c in ("eta_opt", "eta_star_median", "stability_edge")}
NAMES = {"eta_opt": "η_opt", "eta_star_median": "η* (median on the grid)",
         "stability_edge": "stability edge"}


def rows_of(label: str) -> tuple[list[dict], int]:
    """The rows of a run's grids that exist, and how many cells its grids ask for."""
    rows, wanted = [], 0
    for name in RUNS[label]:
        wanted += len(load_grid(HERE / f"{name}.yaml").cells)
        path = HERE / f"{name}.csv"
        if path.exists():
            rows += read_table(path)
    return rows, wanted


def value(row: dict, column: str) -> float | None:
    """A row's number where its status is ok, else None (never a bound read as a value)."""
    if row.get(RATES.get(column, ""), "ok") != "ok" or row.get(column) in (None, ""):
        return None
    return float(row[column])


def ratio(row: dict, top: str, bottom: str) -> float | None:
    a, b = value(row, top), value(row, bottom)
    return a / b if a is not None and b is not None else None


def exponents(rows: list[dict], column: str) -> dict:
    """The column's law in depth and width (milr's fit) where both vary, else its slope in the
    one that does; with the cells it rests on."""
    keep = [r for r in rows if value(r, column) is not None]
    depths, widths = {int(r["depth"]) for r in keep}, {int(r["width"]) for r in keep}
    out = {"cells": len(keep), "left_out": len(rows) - len(keep)}
    try:
        if len(depths) >= 2 and len(widths) >= 2:
            cells, _ = cells_from_rows(keep, column=column)
            law = fit_power_law(cells)
            out |= {"a": law.a, "a_ci95": law.a_ci, "b": law.b, "b_ci95": law.b_ci,
                    "p_a_equals_b": law.a_minus_b_p}
        elif len(widths) >= 3:  # η ∝ w^−b at one depth
            rel = relation([int(r["width"]) for r in keep], [value(r, column) for r in keep])
            out |= {"b": -rel.slope, "b_ci95": [-rel.slope_ci[1], -rel.slope_ci[0]]}
    except FitError as e:
        out["no_fit"] = str(e)
    return out


def ci(v: float, lo_hi) -> str:
    return f"{v:.2f} [{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]"


def law_text(f: dict) -> str:
    parts = []
    if "a" in f:
        parts.append(f"a = {ci(f['a'], f['a_ci95'])}")
    if "b" in f:
        parts.append(f"b = {ci(f['b'], f['b_ci95'])}")
    if not parts:
        parts.append(f.get("no_fit", "too few cells"))
    return ", ".join(parts) + f" ({f['cells']} cells; {f['left_out']} not ok)"


def g(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def cell_table(rows: list[dict]) -> list[str]:
    lines = ["| depth | width | η_opt [95%] | status | η* | stability edge | η_opt/η* | "
             "η_opt/edge |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (int(r["depth"]), int(r["width"]))):
        opt = value(r, "eta_opt")
        interval = (f" [{float(r['eta_opt_lo']):.3g}, {float(r['eta_opt_hi']):.3g}]"
                    if opt and r["eta_opt_lo"] else "")
        edge = value(r, "stability_edge")
        bound = float(r["stability_edge"]) if r["stability_edge"] else None
        edge_text = g(edge) if edge is not None else f"{r['stability_edge_status']} ({g(bound)})"
        lines.append(f"| {r['depth']} | {r['width']} | {g(opt)}{interval} | "
                     f"{r['eta_opt_status']} | {g(value(r, 'eta_star_median'))} | {edge_text} | "
                     f"{g(ratio(r, 'eta_opt', 'eta_star_median'))} | "
                     f"{g(ratio(r, 'eta_opt', 'stability_edge'))} |")
    return lines


def spread(values: list[float]) -> str:
    if not values:
        return "none"
    logs = [math.log(v) for v in values]
    sd = statistics.stdev(logs) if len(logs) > 1 else 0.0
    return (f"median {statistics.median(values):.3g}, range {min(values):.3g}–{max(values):.3g}, "
            f"std of log {sd:.2f} ({len(values)} cells)")


def first_failures(label: str) -> dict[int, list[int]]:
    """Per depth, [seeds whose first failure above their η* bracket diverged, seeds with an ok
    bracket], from the trials logs: whether the accuracy edge is also the stability edge."""
    out: dict[int, list[int]] = {}
    for name in RUNS[label]:
        path = HERE / f"{name}.trials.jsonl"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            cell = json.loads(line)
            for seed in cell.get("seeds", []):
                if seed["status"] != "ok":
                    continue
                count = out.setdefault(cell["depth"], [0, 0])
                count[0] += any(r["diverged"] for r in cell["runs"]
                                if r["seed"] == seed["seed"] and r["lr"] == seed["hi"])
                count[1] += 1
    return out


def by_depth(rows: list[dict]) -> list[str]:
    """Where depth varies: each ratio's median per depth, the accuracy edge's first failure per
    depth, and the laws refitted without depth 1 (a one-hidden-layer net's edges differ)."""
    depths = sorted({int(r["depth"]) for r in rows})
    if len(depths) < 2:
        return []
    lines = ["", "| depth | η_opt/η* (median, range) | η_opt/edge (median, range) |",
             "|---|---|---|"]
    for d in depths:
        cells = [r for r in rows if int(r["depth"]) == d]
        parts = []
        for bottom in ("eta_star_median", "stability_edge"):
            rs = [x for r in cells if (x := ratio(r, "eta_opt", bottom)) is not None]
            parts.append(f"{statistics.median(rs):.3g} ({min(rs):.3g}–{max(rs):.3g})"
                         if rs else "–")
        lines.append(f"| {d} | {parts[0]} | {parts[1]} |")
    deep = [r for r in rows if int(r["depth"]) >= 2]
    lines += ["", "Without depth 1:"]
    lines += [f"- {NAMES[c]}: {law_text(exponents(deep, c))}" for c in RATES]
    return lines


def main() -> None:
    lines = ["# Transfer: summary (written by analyse.py; numbers change while grids run)", ""]
    fits, all_ratios = {}, {"eta_star_median": [], "stability_edge": []}
    for label in RUNS:
        rows, wanted = rows_of(label)
        lines += [f"## {label}: {len(rows)} of {wanted} cells", ""]
        if not rows:
            continue
        lines += cell_table(rows) + [""]
        fits[label] = {c: exponents(rows, c) for c in RATES}
        lines += [f"- {NAMES[c]}: {law_text(f)}" for c, f in fits[label].items()]
        for bottom in all_ratios:
            rs = [x for r in rows if (x := ratio(r, "eta_opt", bottom)) is not None]
            all_ratios[bottom] += rs
            lines.append(f"- η_opt / {NAMES[bottom]}: {spread(rs)}")
        failures = first_failures(label)
        lines.append("- seeds whose first failure above η* diverged (the accuracy edge is the "
                     "stability edge on the grid), by depth: " + ", ".join(
                         f"{d}: {n} of {m}" for d, (n, m) in sorted(failures.items())))
        lines += by_depth(rows)
        lines.append("")
    lines += ["## Every cell", ""]
    lines += [f"- η_opt / {NAMES[b]}: {spread(v)}" for b, v in all_ratios.items()]
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")
    (HERE / "fits.json").write_text(json.dumps(fits, indent=2, allow_nan=False) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
