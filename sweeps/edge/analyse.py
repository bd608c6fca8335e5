"""The edge study's summary: how often rates above a seed's bracket train, what probing them
costs, and whether the power law moves if η* is taken as the largest success found.

    python sweeps/edge/analyse.py          # writes summary.md and summary.json beside it

Reads a-default.csv and its trials log (every trial carries its role: path, edge, ...), and,
for comparison, the same grid as milr 0.1 searched it (sweeps/protocols/a-default.csv).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from milr.analysis.fit import fit_power_law
from milr.analysis.table import read_table
from milr.base.results import Cell

HERE = Path(__file__).parent
OLD = HERE.parent / "protocols" / "a-default.csv"


def trials_of(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    return [t for t in map(json.loads, lines) if "milr_trials_log" not in t]


def cells(values: dict[tuple[int, int, int], float]) -> list[Cell]:
    """Per-cell medians over seeds, as milr fit aggregates them."""
    by: dict[tuple[int, int], list[float]] = {}
    for (d, w, _), v in values.items():
        by.setdefault((d, w), []).append(v)
    return [Cell(d, w, statistics.median(v), min(v), max(v), len(v), len(v))
            for (d, w), v in sorted(by.items())]


def law(values) -> dict:
    f = fit_power_law(cells(values))
    return {"alpha": f.alpha, "alpha_ci": f.alpha_ci, "a": f.a, "a_ci": f.a_ci, "b": f.b,
            "b_ci": f.b_ci, "p_a_eq_b": f.a_minus_b_p, "r2": f.r2}


def main() -> None:
    rows = read_table(HERE / "a-default.csv")
    trials = trials_of(HERE / "a-default.trials.jsonl")
    key = lambda r: (int(r["depth"]), int(r["width"]), int(r["seed"]))  # noqa: E731
    by_seed: dict[tuple[int, int, int], list[dict]] = {}
    for t in trials:
        by_seed.setdefault((t["depth"], t["width"], t["seed"]), []).append(t)
    ok = [r for r in rows if r["status"] == "ok"]
    star = {key(r): float(r["lr_star"]) for r in ok}
    # the largest success of any trial of the seed (path, edge or speculative)
    top = {k: max(t["lr"] for t in by_seed[k] if t["success"]) for k in star}
    per_cell: dict[tuple[int, int], dict] = {}
    for r in rows:
        d, w, s = key(r)
        c = per_cell.setdefault((d, w), {"seeds": 0, "with_band": 0, "edge_trained": 0,
                                         "edge_steps": 0, "steps": 0})
        ts = by_seed.get((d, w, s), [])
        c["seeds"] += 1
        c["with_band"] += int(r["edge_trained"] or 0) > 0
        c["edge_trained"] += int(r["edge_trained"] or 0)
        c["edge_steps"] += sum(t["steps"] for t in ts if t.get("role") == "edge")
        c["steps"] += sum(t["steps"] for t in ts)
    old = {key(r): float(r["lr_star"]) for r in read_table(OLD) if r["status"] == "ok"}
    ratios = sorted(star[k] / old[k] for k in star if k in old)
    out = {
        "rows": len(rows), "ok": len(ok),
        "statuses": sorted({r["status"] for r in rows}),
        "seeds_with_band": sum(c["with_band"] for c in per_cell.values()),
        "edge_rates_trained": sum(c["edge_trained"] for c in per_cell.values()),
        "edge_rates_tried": sum(int(r["edge_probes"]) for r in ok),
        "edge_share_of_member_steps": sum(c["edge_steps"] for c in per_cell.values())
        / sum(c["steps"] for c in per_cell.values()),
        "edge_member_steps_per_seed": statistics.median(
            sum(t["steps"] for t in by_seed[k] if t.get("role") == "edge") for k in star),
        "member_steps_per_seed": statistics.median(
            sum(t["steps"] for t in by_seed[k]) for k in star),
        "law_eta_star": law(star),
        "law_largest_success": law(top),
        "law_milr_0_1": law(old),
        "eta_star_over_milr_0_1": {"median": statistics.median(ratios),
                                   "range": [ratios[0], ratios[-1]]},
        "cells": {f"{d},{w}": c for (d, w), c in sorted(per_cell.items())},
    }
    (HERE / "summary.json").write_text(json.dumps(out, indent=1) + "\n")
    (HERE / "summary.md").write_text(render(out))
    print(render(out))


def fmt_law(f: dict) -> str:
    return (f"α {f['alpha']:.2f} [{f['alpha_ci'][0]:.2f}, {f['alpha_ci'][1]:.2f}], "
            f"a {f['a']:.2f} [{f['a_ci'][0]:.2f}, {f['a_ci'][1]:.2f}], "
            f"b {f['b']:.2f} [{f['b_ci'][0]:.2f}, {f['b_ci'][1]:.2f}], "
            f"p(a = b) {f['p_a_eq_b']:.2g}, R² {f['r2']:.2f}")


def render(o: dict) -> str:
    lines = [
        "# Edge study: summary (written by analyse.py)", "",
        f"- rows {o['rows']}, ok {o['ok']}, statuses {', '.join(o['statuses'])}",
        f"- seeds with a success above hi: {o['seeds_with_band']} of {o['ok']}; edge rates "
        f"that trained: {o['edge_rates_trained']} of {o['edge_rates_tried']}",
        f"- edge probes' share of all member-steps: {o['edge_share_of_member_steps']:.1%}; per "
        f"seed (median) {o['edge_member_steps_per_seed']:.0f} of "
        f"{o['member_steps_per_seed']:.0f} member-steps",
        f"- η* / milr 0.1's η* of the same seed: median "
        f"{o['eta_star_over_milr_0_1']['median']:.3f}, range "
        f"{o['eta_star_over_milr_0_1']['range'][0]:.3f}–"
        f"{o['eta_star_over_milr_0_1']['range'][1]:.3f}", "",
        "| η* taken as | law |", "|---|---|",
        f"| the bracket's midpoint (milr 0.3) | {fmt_law(o['law_eta_star'])} |",
        f"| the largest success found | {fmt_law(o['law_largest_success'])} |",
        f"| milr 0.1's bracket (sweeps/protocols/a-default.csv) | {fmt_law(o['law_milr_0_1'])} |",
        "", "| depth | width | seeds with a band | edge rates trained | edge share of steps |",
        "|---|---|---|---|---|"]
    for cell, c in o["cells"].items():
        d, w = cell.split(",")
        lines.append(f"| {d} | {w} | {c['with_band']} of {c['seeds']} | {c['edge_trained']} | "
                     f"{c['edge_steps'] / max(c['steps'], 1):.1%} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
