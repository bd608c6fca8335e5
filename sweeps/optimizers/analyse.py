"""The optimizer study's summary: the power law of η* per optimizer and parametrisation, from milr's
own fit, and the gain of warm-up per cell.

    python sweeps/optimizers/analyse.py     # writes summary.md and fit-*.json beside it

Plain SGD is sweeps/protocols/a-default.csv (milr 0.1, the same protocol and grid). Files that
are still being swept are summarised over the cells they hold, and say so.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from milr.analysis.fit import fit_power_law
from milr.analysis.table import cells_from_rows, read_table

HERE = Path(__file__).parent
GRID_CELLS = 16
RUNS = [("sgd", HERE.parent / "protocols" / "a-default.csv"),
        ("momentum 0.9", HERE / "momentum.csv"),
        ("adam", HERE / "adam.csv"),
        ("adam, 100 warm-up steps", HERE / "adam-warmup.csv"),
        ("sgd, μP (base 32)", HERE / "sgd-mup.csv"),
        ("adam, μP (base 32)", HERE / "adam-mup.csv"),
        ("adam, ntk", HERE / "adam-ntk.csv")]


def medians(rows: list[dict]) -> dict[tuple[int, int], float]:
    cells: dict[tuple[int, int], list[float]] = {}
    for r in rows:
        if r["status"] == "ok":
            cells.setdefault((int(r["depth"]), int(r["width"])), []).append(float(r["lr_star"]))
    return {k: statistics.median(v) for k, v in cells.items()}


def summarise(label: str, path: Path) -> dict | None:
    if not path.exists():
        return None
    rows = read_table(path)
    cells, _ = cells_from_rows(rows)
    out = {"run": label, "file": path.name, "rows": len(rows), "cells": len(cells),
           "not_ok": sorted({r["status"] for r in rows} - {"ok"}),
           "median_eta": statistics.median(c.value for c in cells) if cells else None}
    if len(cells) >= 4 and len({c.depth for c in cells}) >= 2 \
            and len({c.width for c in cells}) >= 2:
        law = fit_power_law(cells)
        out |= {"alpha": law.alpha, "alpha_ci95": law.alpha_ci, "r2": law.r2, "a": law.a,
                "a_ci95": law.a_ci, "b": law.b, "b_ci95": law.b_ci,
                "p_a_equals_b": law.a_minus_b_p}
    return out


def fmt(s: dict) -> str:
    part = "" if s["cells"] == GRID_CELLS else f" (partial: {s['cells']} of {GRID_CELLS})"
    if "alpha" not in s:
        eta = "–" if s["median_eta"] is None else f"{s['median_eta']:.3g}"
        return f"| {s['run']} | {s['cells']}{part} | {eta} | – | | | | |"
    return (f"| {s['run']} | {s['cells']}{part} | {s['median_eta']:.3g} | {s['alpha']:.2f} "
            f"[{s['alpha_ci95'][0]:.2f}, {s['alpha_ci95'][1]:.2f}] | {s['r2']:.2f} | "
            f"{s['a']:.2f} [{s['a_ci95'][0]:.2f}, {s['a_ci95'][1]:.2f}] | "
            f"{s['b']:.2f} [{s['b_ci95'][0]:.2f}, {s['b_ci95'][1]:.2f}] | "
            f"{s['p_a_equals_b']:.2g} |")


def warmup_gain() -> list[str]:
    """η* with warm-up over η* without, per cell (medians over seeds), against d, w and d·w."""
    base, warm = HERE / "adam.csv", HERE / "adam-warmup.csv"
    if not (base.exists() and warm.exists()):
        return []
    a, b = medians(read_table(base)), medians(read_table(warm))
    both = sorted(set(a) & set(b))
    if not both:
        return []
    lines = ["", "| depth | width | d·w | η* adam | η* adam + warm-up | gain |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {d} | {w} | {d * w} | {a[(d, w)]:.3g} | {b[(d, w)]:.3g} | "
              f"{b[(d, w)] / a[(d, w)]:.2f} |" for d, w in both]
    return lines


def smallest_failures(path: Path) -> dict | None:
    """What stopped each seed just above its η*: the kind of its smallest failing trial above
    its largest success (too slow or diverged), whether any trial above it diverged, and that
    trial's best accuracy. Says which edge the exponents describe (issue 31)."""
    trials = path.with_suffix(".trials.jsonl")
    if not trials.exists():
        return None
    runs: dict[tuple, list[dict]] = {}
    for line in trials.read_text().splitlines():
        t = json.loads(line)
        if "lr" in t and not t.get("cancelled"):
            runs.setdefault((t["depth"], t["width"], t["seed"]), []).append(t)
    slow = diverged = any_diverged = 0
    peaks = []
    for ts in runs.values():
        wins = [t["lr"] for t in ts if t["success"]]
        above = [t for t in ts if not t["success"] and wins and t["lr"] > max(wins)]
        if not above:
            continue
        first = min(above, key=lambda t: t["lr"])
        diverged += first["diverged"]
        slow += not first["diverged"]
        any_diverged += any(t["diverged"] for t in above)
        if first["peak_acc"] is not None:
            peaks.append(first["peak_acc"])
    return {"seeds": slow + diverged, "too_slow": slow, "diverged": diverged,
            "any_diverged": any_diverged,
            "median_peak": statistics.median(peaks) if peaks else None}


def edge_table() -> list[str]:
    """One row per run: how the smallest failure above each seed's η* failed."""
    lines = ["", "| run | seeds | smallest failure above η*: too slow | diverged | seeds with "
                 "any divergence above η* | median best accuracy of that failure |",
             "|---|---|---|---|---|---|"]
    for label, path in RUNS:
        s = smallest_failures(path)
        if s:
            peak = "–" if s["median_peak"] is None else f"{s['median_peak']:.3f}"
            lines.append(f"| {label} | {s['seeds']} | {s['too_slow']} | {s['diverged']} | "
                         f"{s['any_diverged']} | {peak} |")
    return lines


def main() -> None:
    lines = ["| run | cells | median η* | α [95% CI] | R² | a (depth) | b (width) | p(a = b) |",
             "|---|---|---|---|---|---|---|---|"]
    for label, path in RUNS:
        s = summarise(label, path)
        if s is None:
            continue
        slug = path.stem
        (HERE / f"fit-{slug}.json").write_text(json.dumps(s, indent=2, allow_nan=False) + "\n")
        lines.append(fmt(s))
    lines += warmup_gain()
    lines += edge_table()
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
