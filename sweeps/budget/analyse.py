"""The budget study's summary: the power law per budget and input rate, from milr's own fit, and
each seed's η* against its `stable` η* (the divergence boundary of the same budget's networks).

    python sweeps/budget/analyse.py        # writes summary.md and fit-*.json beside it

The 1000-step rows are sweeps/protocols/a-default.csv (milr 0.1: the weighted split's cost ratio
was pooled over seeds, so a probe there could differ from 0.2's; brackets meet the same rtol) and
the `stable` reference is sweeps/protocols/c-stable-ce.csv (1000 steps; with the input layer at
x 1, g-c-stable-ce-input-lr-1.csv). Files that are still
being swept are summarised over the cells they hold, and say so.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from milr.analysis.fit import fit_power_law
from milr.analysis.table import cells_from_rows, read_table

HERE = Path(__file__).parent
PROTOCOLS = HERE.parent / "protocols"
GRID_CELLS = 16
# (label, file, budget in steps, input-layer rate)
RUNS = [("accuracy, 1000 steps", PROTOCOLS / "a-default.csv", 1000, 0.1),
        ("accuracy, 4000 steps", HERE / "accuracy-4000.csv", 4000, 0.1),
        ("accuracy, 16000 steps", HERE / "accuracy-16000.csv", 16000, 0.1),
        ("accuracy, 1000 steps, input x 1", HERE / "accuracy-input-lr-1.csv", 1000, 1.0),
        ("accuracy, 1000 steps, input x 0.01", HERE / "accuracy-input-lr-0.01.csv", 1000, 0.01)]
# The `stable` η* of the same networks at 1000 steps, per input-layer rate (none swept at x 0.01).
STABLE = {0.1: PROTOCOLS / "c-stable-ce.csv", 1.0: PROTOCOLS / "g-c-stable-ce-input-lr-1.csv"}
WHERE = {"all": lambda d, w: True, "w >= 8d": lambda d, w: w >= 8 * d,
         "w >= 16d": lambda d, w: w >= 16 * d}


def per_seed(rows: list[dict]) -> dict[tuple[int, int, int], float]:
    return {(int(r["depth"]), int(r["width"]), int(r["seed"])): float(r["lr_star"])
            for r in rows if r["status"] == "ok"}


def summarise(label: str, path: Path, budget: int, input_rate: float) -> dict | None:
    if not path.exists():
        return None
    rows = read_table(path)
    stable = per_seed(read_table(STABLE[input_rate])) if input_rate in STABLE else {}
    mine = per_seed(rows)
    ratios = [v / stable[k] for k, v in mine.items() if k in stable]
    out = {"run": label, "file": str(path.relative_to(HERE.parent.parent)), "budget": budget,
           "input_lr_scale": input_rate, "rows": len(rows),
           "not_ok": sorted({r["status"] for r in rows} - {"ok"}),
           "ratio_to_stable_median": statistics.median(ratios) if ratios else None,
           "ratio_to_stable_range": [min(ratios), max(ratios)] if ratios else None,
           "fits": {}}
    for name, keep in WHERE.items():
        sub = [r for r in rows if keep(int(r["depth"]), int(r["width"]))]
        cells, _ = cells_from_rows(sub)
        if len(cells) < 4 or len({c.depth for c in cells}) < 2 or len({c.width for c in cells}) < 2:
            continue
        law = fit_power_law(cells)
        out["fits"][name] = {"cells": len(cells), "alpha": law.alpha,
                             "alpha_ci95": law.alpha_ci, "r2": law.r2, "a": law.a,
                             "a_ci95": law.a_ci, "b": law.b, "b_ci95": law.b_ci,
                             "p_a_equals_b": law.a_minus_b_p}
    return out


def fmt(s: dict, where: str) -> str:
    f = s["fits"].get(where)
    ratio = ("–" if s["ratio_to_stable_median"] is None else
             f"{s['ratio_to_stable_median']:.2f} ({s['ratio_to_stable_range'][0]:.2f}–"
             f"{s['ratio_to_stable_range'][1]:.2f})")
    if f is None:
        return f"| {s['run']} | {where} | – | | | | | {ratio} |"
    part = "" if f["cells"] == GRID_CELLS or where != "all" else " (partial)"
    return (f"| {s['run']} | {where}: {f['cells']} cells{part} | {f['alpha']:.2f} "
            f"[{f['alpha_ci95'][0]:.2f}, {f['alpha_ci95'][1]:.2f}] | {f['r2']:.2f} | "
            f"{f['a']:.2f} [{f['a_ci95'][0]:.2f}, {f['a_ci95'][1]:.2f}] | "
            f"{f['b']:.2f} [{f['b_ci95'][0]:.2f}, {f['b_ci95'][1]:.2f}] | "
            f"{f['p_a_equals_b']:.2g} | {ratio} |")


def main() -> None:
    lines = ["| run | cells | α [95% CI] | R² | a (depth) | b (width) | p(a = b) | "
             "η* / stable η*: median (range) |", "|---|---|---|---|---|---|---|---|"]
    for label, path, budget, rate in RUNS:
        s = summarise(label, path, budget, rate)
        if s is None:
            continue
        slug = label.replace(", ", "-").replace(" ", "-")
        (HERE / f"fit-{slug}.json").write_text(json.dumps(s, indent=2, allow_nan=False) + "\n")
        lines += [fmt(s, w) for w in WHERE if w == "all" or w in s["fits"]]
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
