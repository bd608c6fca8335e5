"""What a warm-started sweep saves: the same grid run cold and warm, work and η* compared.

    python benchmarks/bench_warm_start.py                        # sweeps/tiny.yaml's grid
    python benchmarks/bench_warm_start.py --grid sweeps/protocols/a-default.yaml

Work is counted in member-steps (SGD steps summed over every training run, from the trials log)
as well as wall time, since member-steps do not depend on what else the machine is doing. Every
(cell, seed) must end with the same status and η* in both: a warm start may change the work,
never the bracket (on a boundary that is monotone on the scan grid), beyond the last bit of
floating point. Exit 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import yaml

from milr.sweep.grid import parse_grid
from milr.sweep.run import run_sweep


def sweep(text: str, warm: bool, folder: Path) -> tuple[dict, int, float]:
    doc = yaml.safe_load(text)
    doc["warm_start"] = warm
    tag = "warm" if warm else "cold"
    out, trials = folder / f"{tag}.csv", folder / f"{tag}.jsonl"
    start = time.perf_counter()
    run_sweep(parse_grid(yaml.safe_dump(doc)), out, trials_path=trials)
    wall = time.perf_counter() - start
    with open(out) as f:
        rows = {(r["depth"], r["width"], r["seed"]): (r["status"], r["lr_star"])
                for r in csv.DictReader(f)}
    steps = sum(json.loads(line).get("steps", 0)  # 0: the header (the protocol)
                for line in trials.read_text().splitlines())
    return rows, steps, wall


def same(a: tuple | None, b: tuple | None) -> bool:
    """The same status and η* (to 1e-9: a bracket end reached by another path of arithmetic can
    differ in its last bit)."""
    if a is None or b is None or a[0] != b[0]:
        return False
    return a[1] == b[1] or math.isclose(float(a[1]), float(b[1]), rel_tol=1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=str(Path(__file__).parents[1] / "sweeps" / "tiny.yaml"))
    args = ap.parse_args()
    text = Path(args.grid).read_text()
    with tempfile.TemporaryDirectory() as tmp:
        cold, cold_steps, cold_wall = sweep(text, False, Path(tmp))
        warm, warm_steps, warm_wall = sweep(text, True, Path(tmp))
    differ = [k for k in cold if not same(cold[k], warm.get(k))]
    print(f"# {args.grid}: {len(cold)} (cell, seed) rows; {time.strftime('%Y-%m-%d')}")
    print("| start | member-steps | wall s |")
    print("|---|---|---|")
    print(f"| cold | {cold_steps} | {cold_wall:.1f} |")
    print(f"| warm | {warm_steps} | {warm_wall:.1f} |")
    print(f"warm / cold: {warm_steps / cold_steps:.3f} of the member-steps, "
          f"{warm_wall / cold_wall:.3f} of the wall time; rows that differ: {len(differ)}")
    for k in differ:
        print(f"  depth {k[0]} width {k[1]} seed {k[2]}: cold {cold[k]}, warm {warm.get(k)}")
    if differ:
        sys.exit(1)


if __name__ == "__main__":
    main()
