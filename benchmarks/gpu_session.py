"""One GPU session in one command (issue 33): a correctness pass, the benchmark, then the
paper-scale sweeps until a time budget, with the predicted time of every cell before and the
measured time beside it after.

    python benchmarks/gpu_session.py --out $OUT/session --data-dir data/fashion-mnist --budget-s 420
    python benchmarks/gpu_session.py --plan --assume-tflops 40     # the plan alone, no training

Stages, each under what is left of --budget-s (seconds since the start):
1. benchmarks/gpu_check.py (CUDA against the CPU, the early exit against full evaluations, CUDA
   graphs on and off): a failure stops the session (exit 1).
2. benchmarks/bench_estimate.py (reference, torch.func peer and milr, fp32), cut at --bench-s.
3. `milr sweep` over the grids (sweeps/paper-scale/ by default, in the order given), each grid's
   cells in order of predicted cost. A chunk of cells is a temporary copy of the grid that lists
   only them (and sets --device), run as a subprocess that appends row by row. A cell predicted
   not to fit in what is left ends its grid (its other cells cost more); a chunk still running
   when the budget ends gets SIGTERM: milr keeps every finished row, the cell in flight is lost.

Resuming: a grid's results start from --out/NAME.csv when it exists (a rerun of the session),
else from the NAME.csv committed beside the grid file. Under --out, at most 8 files (what the
device tool brings back): plan.json, timings.json, session.log, NAME.csv of each grid and
NAME.trials.jsonl of the first grids, as many as the limit leaves room for.

The cost model: a cell's matmul FLOPs (milr.base.cost: training steps, evaluations, λ1's
Hessian-vector products) over the batched-matmul rate measured here at the cell's width, plus a
subprocess start per chunk. Runs per seed come from the grid's own trials log once it holds
trials, else from committed logs (RUNS_PER_SEED); constants marked "assumed" are not measured.
After each chunk the ratio of measured to predicted time rescales what is left.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

GRIDS = [ROOT / "sweeps" / "paper-scale" / f"{name}.yaml"
         for name in ("g-stable-ce-input-lr-1", "a-default-4096", "agree-fashion-mnist")]
MAX_OUT_FILES = 8  # the device tool brings back at most 8 files from $OUT
FIXED_OUT = ("plan.json", "timings.json", "session.log")
# Full-budget runs (trained steps / steps) per seed's search, by criterion: the means over
# sweeps/mnist1d/g-stable-ce-input-lr-1.trials.jsonl (stable, 48 seeds) and
# sweeps/edge/a-default.trials.jsonl (accuracy with the edge probes, Fashion-MNIST, 9 seeds).
RUNS_PER_SEED = {"stable": 2.26, "accuracy": 10.32}
HVP_FLOPS = 12.0  # assumed: matmul FLOPs of a Hessian-vector product per weight and example
HVPS_PER_LAMBDA1 = 40  # assumed: Lanczos products until λ1 converges (max_hvps, 100, bounds it)
CHUNK_START_S = 10.0  # assumed: a sweep subprocess's start (imports, CUDA context, data)
CHECK_S = 60.0  # assumed: gpu_check.py on the device (the plan's figure; the run measures it)
CHECK_LIMIT_S = 180.0  # gpu_check.py is stopped after this (3x the assumed CHECK_S)
MEASURE_MEMBERS = 3  # members in the matmul-rate measurement (a grid's seeds)
WRAP_S = 5.0  # left at the end of the budget for the files
SCALE_LIMITS = (0.25, 8.0)  # bounds of the measured/predicted correction
LANCZOS_WARN_GIB = 100.0  # the plan names cells whose λ1 basis may need more than this


class Session:
    """The output folder, the log, the clock and timings.json, rewritten after every stage."""

    def __init__(self, out: Path, budget_s: float, grace_s: float, start: float):
        self.out, self.budget_s, self.start = out, budget_s, start  # the clock: from main()
        self.grace_s = grace_s  # what a subprocess gets after SIGTERM to exit
        self.log = out / "session.log"
        self.timings: dict = {"budget_s": budget_s, "started_at": stamp(), "chunks": [],
                              "cells": []}

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def say(self, line: str) -> None:
        """Print a line and keep it in session.log."""
        print(line, flush=True)
        with self.log.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def save(self) -> None:
        self.timings["elapsed_s"] = round(time.monotonic() - self.start, 2)
        write_json(self.out / "timings.json", self.timings)


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_json(path: Path, value) -> None:
    """Whole or not at all: a kill never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def fail(message: str) -> None:
    """Bad input: one line, exit 2."""
    print(f"gpu_session: {message}", file=sys.stderr)
    sys.exit(2)


# --- the cost model ----------------------------------------------------------------------------


def runs_per_seed(trials: Path | None, criterion: str) -> tuple[float, str]:
    """Mean full-budget runs per (cell, seed) of a trials log that holds trials, else the
    committed figure for the criterion; and where the figure came from."""
    per: dict = defaultdict(float)
    if trials is not None and trials.is_file():
        lines = trials.read_text(encoding="utf-8").splitlines()
        steps = json.loads(lines[0])["protocol"]["steps"] if lines else 0
        for line in lines[1:]:
            t = json.loads(line)
            per[t["depth"], t["width"], t["seed"]] += t["steps"] / steps
    if per:
        return sum(per.values()) / len(per), f"{trials.name} ({len(per)} seeds)"
    return RUNS_PER_SEED[criterion], f"committed logs ({criterion})"


def predict(cfg, seeds: int, samples: int, data, rate: float, runs: float) -> dict:
    """A cell's predicted matmul work and seconds: `runs` full-budget runs per seed (evaluations
    included: none under stable), λ1 plain and preconditioned per seed, and the bound with
    RUNS_PER_SEED_BOUND runs."""
    from milr.base.config import SharpnessConfig
    from milr.base.cost import (
        RUNS_PER_SEED_BOUND,
        eval_cost_in_steps,
        flops_per_member_step,
        weight_count,
    )

    step = flops_per_member_step(cfg, data.n_inputs, data.classes)
    evals = 0 if cfg.criterion == "stable" else cfg.steps // cfg.eval_every
    run = step * (cfg.steps + evals * eval_cost_in_steps(cfg, len(data.x_train),
                                                         len(data.x_eval)))
    lam = 2 * HVPS_PER_LAMBDA1 * HVP_FLOPS * min(samples, len(data.x_train)) * weight_count(
        cfg, data.n_inputs, data.classes) if samples else 0.0
    work = seeds * (runs * run + lam)
    bound = seeds * (RUNS_PER_SEED_BOUND * run + lam)
    # Lanczos keeps every basis vector (max_hvps + 1 at most, one float per weight) and stacks
    # them into a copy at each iteration: memory that milr's λ1 check does not count
    basis = 2 * (SharpnessConfig().max_hvps + 1) * 4 * weight_count(
        cfg, data.n_inputs, data.classes) / 2**30 if samples else 0.0
    return {"tflop": work / 1e12, "predicted_s": work / rate, "bound_s": bound / rate,
            "lanczos_gib": basis}


def shapes_key(data, width: int) -> tuple[int, int, int]:
    return data.n_inputs, data.classes, width


def measure_rates(keys: set, batch: int, device: str) -> dict:
    """FLOP/s of fp32 batched matmuls at a two-hidden-layer step's shapes, per (inputs, classes,
    width): bench_estimate's measurement, a few seconds in all."""
    import torch
    from bench_estimate import layer_shapes, matmul_rate

    dev = torch.device(device)
    return {k: matmul_rate(MEASURE_MEMBERS, batch, layer_shapes(2, k[2], k[0], k[1]), dev, 3)
            for k in sorted(keys)}


def grid_cells(g: dict) -> list[dict]:
    """The cells of a grid with seeds still missing from its results (milr's own resume
    plan)."""
    from milr.sweep.run import plan_sweep

    seeds: dict = defaultdict(int)
    try:
        tasks = plan_sweep(g["grid"], g["csv"], g["trials"]).tasks
    except ValueError as e:  # results or trials that are not this grid's: said of the originals
        fail(f"{e} (a copy of {', '.join(map(str, g['copied']))})")
    for task in tasks:
        seeds[task.depth, task.width] += task.count
    return [{"grid": g["name"], "depth": d, "width": w, "seeds": seeds[d, w]}
            for d, w in g["grid"].cells if seeds[d, w]]


def plan_cells(grids: list[dict], rates: dict | None, assumed: float | None) -> list[dict]:
    """Every pending cell with its prediction, each grid's cells by predicted cost, grids in
    order; `rates` measured per shapes_key, or one `assumed` FLOP/s for all."""
    from milr.data.lookup import load

    cells = []
    for g in grids:
        mine = []
        for cell in grid_cells(g):
            cfg = g["grid"].config(cell["depth"], cell["width"])
            data = load(cfg.dataset, cfg.data_dir)
            rate = assumed or rates[shapes_key(data, cfg.width)]
            mine.append({**cell, **predict(cfg, cell["seeds"], g["grid"].lambda1_samples, data,
                                           rate, g["runs"])})
        cells += sorted(mine, key=lambda c: c["predicted_s"])
    return cells


def next_chunk(cells: list[dict], left_s: float, scale: float, chunk_s: float) -> list[dict]:
    """The cheapest cells of one grid (`cells`, in order of cost) that fit in `left_s` with a
    subprocess start, at most `chunk_s` of predicted time unless one cell alone is more; []
    when even the first does not fit."""
    chunk, total = [], CHUNK_START_S * scale
    for c in cells:
        t = c["predicted_s"] * scale
        if total + t > left_s or (chunk and total + t > chunk_s):
            break
        chunk.append(c)
        total += t
    return chunk


def schedule(cells: list[dict], left_s: float, scale: float, chunk_s: float) -> list[list]:
    """The chunks a session would run in `left_s` if every prediction held."""
    chunks = []
    for name in dict.fromkeys(c["grid"] for c in cells):
        todo = [c for c in cells if c["grid"] == name]
        while todo and (chunk := next_chunk(todo, left_s, scale, chunk_s)):
            chunks.append(chunk)
            left_s -= scale * (CHUNK_START_S + sum(c["predicted_s"] for c in chunk))
            todo = todo[len(chunk):]
    return chunks


def plan_text(cells: list[dict], chunks: list[list], rate_note: str, left_s: float) -> str:
    """The plan as a table: every cell, its prediction, and whether it fits."""
    fits = {(c["grid"], c["depth"], c["width"]) for chunk in chunks for c in chunk}
    lines = [f"# predicted device time per cell ({rate_note}); {left_s:.0f} s left for sweeps",
             "| grid | depth | width | seeds | TFLOP | predicted s | bound s | fits |",
             "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        fit = "yes" if (c["grid"], c["depth"], c["width"]) in fits else "no"
        lines.append(f"| {c['grid']} | {c['depth']} | {c['width']} | {c['seeds']} | "
                     f"{c['tflop']:.3g} | {c['predicted_s']:.1f} | {c['bound_s']:.1f} | {fit} |")
    for name in dict.fromkeys(c["grid"] for c in cells):
        mine = [c for c in cells if c["grid"] == name]
        lines.append(f"# {name}: {len(mine)} cells, predicted "
                     f"{sum(c['predicted_s'] for c in mine):.0f} s (bound "
                     f"{sum(c['bound_s'] for c in mine):.0f} s)")
    lines.append(f"# all: {len(cells)} cells, predicted "
                 f"{sum(c['predicted_s'] for c in cells):.0f} s plus {CHUNK_START_S:.0f} s per "
                 f"chunk; {len(fits)} cells in {len(chunks)} chunks fit")
    lines += [f"# note: λ1 of {c['grid']} ({c['depth']}, {c['width']}) may hold up to "
              f"{c['lanczos_gib']:.0f} GiB of Lanczos vectors" for c in cells
              if c["lanczos_gib"] > LANCZOS_WARN_GIB]
    return "\n".join(lines)


# --- running -----------------------------------------------------------------------------------


def env_for(data_dir: Path | None, device: str) -> dict:
    """The subprocesses' environment: this tree's milr first, the data directory as MILR_DATA,
    and on the CPU one thread unless OMP_NUM_THREADS says otherwise (as sweeps/run.sh: on a
    shared machine several threads per process ran the CPU check 3x slower)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    if data_dir is not None:
        env["MILR_DATA"] = str(data_dir)
    return env


def run_capped(s: Session, cmd: list[str], env: dict, limit_s: float) -> dict:
    """Run `cmd` with its output in session.log; SIGTERM at `limit_s`, then SIGKILL after
    --grace-s. Returns its exit code, seconds and whether it was stopped."""
    s.say(f"$ {shlex.join(cmd)}  (at most {limit_s:.0f} s)")
    t = time.monotonic()
    with s.log.open("a", encoding="utf-8") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        stopped = False
        try:
            rc = p.wait(timeout=max(limit_s, 0.1))
        except subprocess.TimeoutExpired:
            stopped = True
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(timeout=s.grace_s)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
        except KeyboardInterrupt:
            p.wait(timeout=s.grace_s)  # it got the same Ctrl-C: let it keep its rows
            raise
    return {"rc": rc, "seconds": round(time.monotonic() - t, 2), "stopped_at_limit": stopped}


def check_stage(s: Session, args, env: dict, work: Path) -> bool:
    """gpu_check.py; False (the session stops) when it fails or cannot finish."""
    summary = work / "check.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", args.device,
           "--json", str(summary)] + (["--quick"] if args.quick_check else [])
    result = run_capped(s, cmd, env, min(CHECK_LIMIT_S, s.left() - WRAP_S))
    if summary.is_file():
        result["summary"] = json.loads(summary.read_text(encoding="utf-8"))
    s.timings["check"] = result
    s.save()
    passed = result["rc"] == 0
    verdict = "pass" if passed else "did not finish in time" if result["stopped_at_limit"] \
        else "FAIL"
    s.say(f"check: {verdict} ({result['seconds']} s); details in session.log and timings.json")
    return passed


def bench_stage(s: Session, args, env: dict) -> None:
    """bench_estimate.py, cut at --bench-s (its table so far stays in session.log)."""
    limit = min(args.bench_s, s.left() - WRAP_S)
    if limit <= 0:
        s.timings["bench"] = "skipped: --bench-s 0 or no time left"
        return
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_estimate.py"), "--device",
           args.device, *shlex.split(args.bench_args)]
    s.timings["bench"] = run_capped(s, cmd, env, limit)
    s.save()
    b = s.timings["bench"]
    s.say(f"bench: exit {b['rc']}{', cut at --bench-s' if b['stopped_at_limit'] else ''} "
          f"({b['seconds']} s)")


def chunk_text(grid_path: Path, cells: list[dict], device: str) -> str:
    """The grid file listing only `cells`, on `device`; every other setting as it is."""
    doc = yaml.safe_load(grid_path.read_text(encoding="utf-8"))
    keep = {(c["depth"], c["width"]) for c in cells}
    depths = sorted({d for d, _ in keep})
    widths = sorted({w for _, w in keep})
    doc.pop("where", None)
    doc.update(depths=depths, widths=widths, device=device,
               exclude=[[d, w] for d in depths for w in widths if (d, w) not in keep])
    if str(doc.get("dataset", "")).endswith(".npz"):  # relative to the grid's own folder
        doc["dataset"] = str((grid_path.parent / doc["dataset"]).resolve())
    return yaml.safe_dump(doc, sort_keys=False)


def copy_back(g: dict, out: Path) -> None:
    """The grid's results (and trials) into --out, each file whole."""
    for src in (g["csv"], g["trials"]):
        if src is not None and src.is_file():
            tmp = out / (src.name + ".tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, out / src.name)


def new_rows(csv: Path, before: int) -> list[dict]:
    from milr.sweep.store import ResultStore

    return ResultStore(csv).rows()[before:] if csv.is_file() else []


def row_count(csv: Path) -> int:
    return len(new_rows(csv, 0))


def sweep_chunk(s: Session, g: dict, chunk: list[dict], args, env: dict, scale: float) -> dict:
    """One chunk as a `milr sweep` subprocess, stopped at the budget; its record."""
    grid_file = g["work"] / f"{g['name']}.chunk.yaml"
    grid_file.write_text(chunk_text(g["path"], chunk, args.device), encoding="utf-8")
    cmd = [sys.executable, "-m", "milr", "sweep", str(grid_file), "--out", str(g["csv"])]
    if g["trials"] is not None:
        cmd += ["--trials", str(g["trials"])]
    before = row_count(g["csv"])
    result = run_capped(s, cmd, env, s.left() - WRAP_S - s.grace_s)
    copy_back(g, s.out)
    wall: dict = {}
    for row in new_rows(g["csv"], before):
        key = int(row["depth"]), int(row["width"])
        wall[key] = max(wall.get(key, 0.0), float(row["cell_wall_time"] or 0))
    for c in chunk:
        key = c["depth"], c["width"]
        s.timings["cells"].append({k: c[k] for k in ("grid", "depth", "width", "seeds")} | {
            "predicted_s": round(c["predicted_s"], 2), "corrected_s": round(
                c["predicted_s"] * scale, 2), "measured_s": wall.get(key),
            "done": key in wall})
    predicted = CHUNK_START_S + sum(c["predicted_s"] for c in chunk)
    record = {"grid": g["name"], "cells": [[c["depth"], c["width"]] for c in chunk],
              "predicted_s": round(predicted, 2), **result}
    s.timings["chunks"].append(record)
    s.save()
    s.say(f"{g['name']}: {len(chunk)} cell(s), predicted {predicted * scale:.0f} s, took "
          f"{result['seconds']:.0f} s, exit {result['rc']}"
          f"{', stopped at the budget' if result['stopped_at_limit'] else ''}")
    return record


def sweep_stage(s: Session, grids: list[dict], cells: list[dict], args, env: dict) -> str:
    """Chunks until the budget; why it stopped. A chunk that fails (a cell refused for its
    memory, say) ends its grid, recorded in timings.json's sweep_failures; the next grid runs."""
    scale, spent = 1.0, [0.0, 0.0]  # measured/predicted, over the chunks that ran whole
    failures = s.timings.setdefault("sweep_failures", [])
    for g in grids:
        todo = [c for c in cells if c["grid"] == g["name"]]
        while todo:
            chunk = next_chunk(todo, s.left() - WRAP_S - s.grace_s, scale, args.chunk_s)
            if not chunk:
                s.say(f"{g['name']}: {len(todo)} cell(s) left, the next predicted "
                      f"{todo[0]['predicted_s'] * scale:.0f} s: not enough time")
                break
            record = sweep_chunk(s, g, chunk, args, env, scale)
            if record["stopped_at_limit"]:
                return "budget: the last chunk was stopped (its cell in flight is lost)"
            if record["rc"] != 0:
                failures.append(f"{g['name']}: milr sweep exited {record['rc']} (see "
                                "session.log); its other cells were not run")
                s.say(failures[-1])
                break
            spent[0] += record["seconds"]
            spent[1] += record["predicted_s"]
            scale = min(max(spent[0] / spent[1], SCALE_LIMITS[0]), SCALE_LIMITS[1])
            s.timings["scale"] = round(scale, 3)
            todo = todo[len(chunk):]
    if all(c["done"] for c in s.timings["cells"]) and len(s.timings["cells"]) == len(cells):
        return "every cell done"
    return "cells left: a sweep failed" if failures else "budget: cells left that do not fit"


# --- setup -------------------------------------------------------------------------------------


def prepare(args, out: Path | None, work: Path) -> list[dict]:
    """Each grid: its name, parsed grid, work copies of the results to resume from, and the
    runs per seed its predictions use."""
    from milr.sweep.grid import GridError, load_grid

    if len(args.grids) > MAX_OUT_FILES - len(FIXED_OUT):
        fail(f"--grids: {len(args.grids)} grids; at most {MAX_OUT_FILES - len(FIXED_OUT)} fit "
             f"the {MAX_OUT_FILES} files the device brings back")
    names = [Path(p).stem for p in args.grids]
    if len(set(names)) < len(names):
        fail(f"--grids: two grids share a name: {' '.join(map(str, args.grids))}")
    room = MAX_OUT_FILES - len(FIXED_OUT) - len(names)  # trials logs for the first grids
    grids = []
    for k, (name, path) in enumerate(zip(names, map(Path, args.grids), strict=True)):
        try:
            grid = load_grid(path)
        except GridError as e:
            fail(str(e))
        g = {"name": name, "path": path, "grid": grid, "work": work,
             "csv": work / f"{name}.csv",
             "trials": work / f"{name}.trials.jsonl" if k < room else None, "copied": []}
        for kept in (g["csv"], g["trials"]):
            if kept is None:
                continue
            source = out / kept.name if out and (out / kept.name).is_file() else \
                path.parent / kept.name
            if source.is_file():
                shutil.copyfile(source, kept)
                g["copied"].append(source)
        criterion = grid.config(*grid.cells[0]).criterion
        g["runs"], g["runs_from"] = runs_per_seed(g["trials"], criterion)
        grids.append(g)
    return grids


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder for everything written (created)")
    ap.add_argument("--data-dir", help="Fashion-MNIST's four IDX files (set as MILR_DATA)")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="seconds for the whole session, from its start [420]")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--grids", nargs="+", default=[str(p) for p in GRIDS],
                    help="grid files, run in this order [sweeps/paper-scale/'s three]")
    ap.add_argument("--plan", action="store_true", help="print the plan and exit")
    ap.add_argument("--assume-tflops", type=float, default=None,
                    help="predict with this fp32 rate instead of measuring one (labelled "
                         "assumed)")
    ap.add_argument("--chunk-s", type=float, default=60.0,
                    help="predicted seconds per sweep subprocess, one cell aside [60]")
    ap.add_argument("--bench-s", type=float, default=150.0,
                    help="seconds for bench_estimate.py at most; 0 skips it [150]")
    ap.add_argument("--bench-args", default="--cells 8x1024 --repeats 1 --precision fp32",
                    help="bench_estimate.py's arguments besides --device")
    ap.add_argument("--grace-s", type=float, default=20.0,
                    help="seconds a subprocess gets to exit after SIGTERM, kept free at the "
                         "end of the budget [20]")
    ap.add_argument("--quick-check", action="store_true", help="gpu_check.py --quick (CPU)")
    args = ap.parse_args(argv)
    if not args.plan and not args.out:
        fail("--out is required (a folder for the session's files)")
    for name in ("budget_s", "chunk_s", "bench_s", "grace_s"):
        value = getattr(args, name)
        if not 0 <= value < float("inf") or (value == 0 and name in ("budget_s", "chunk_s")):
            fail(f"--{name.replace('_', '-')} {value}: must be a finite number of seconds"
                 f"{' above 0' if name in ('budget_s', 'chunk_s') else ', 0 or more'}")
    if args.assume_tflops is not None and not args.assume_tflops > 0:
        fail(f"--assume-tflops must be positive, got {args.assume_tflops}")
    return args


def make_plan(args, grids: list[dict], device: str, start: float) -> tuple[list[dict], dict]:
    """Every pending cell's prediction and the plan's record (plan.json)."""
    from milr.data.lookup import load

    rates, note = None, f"assumed {args.assume_tflops} TFLOP/s (not measured)"
    if args.assume_tflops is None:
        keys = set()
        for g in grids:
            for d, w in g["grid"].cells:
                cfg = g["grid"].config(d, w)
                keys.add(shapes_key(load(cfg.dataset, cfg.data_dir), w))
        rates = measure_rates(keys, grids[0]["grid"].config(*grids[0]["grid"].cells[0])
                              .batch_size, device)
        note = f"measured on {device_name(device)}: " + ", ".join(
            f"width {k[2]} {v / 1e12:.3g}" for k, v in rates.items()) + " TFLOP/s"
    cells = plan_cells(grids, rates, args.assume_tflops * 1e12 if args.assume_tflops else None)
    before = (0 if args.quick_check else CHECK_S) + args.bench_s
    left = args.budget_s - before - WRAP_S - args.grace_s - (time.monotonic() - start)
    chunks = schedule(cells, left, 1.0, args.chunk_s)
    record = {"rate": note, "budget_s": args.budget_s, "sweep_s": left,
              "assumed": {"HVP_FLOPS": HVP_FLOPS, "HVPS_PER_LAMBDA1": HVPS_PER_LAMBDA1,
                          "CHUNK_START_S": CHUNK_START_S, "CHECK_S": CHECK_S},
              "runs_per_seed": {g["name"]: [g["runs"], g["runs_from"]] for g in grids},
              "cells": cells, "chunks": [[[c["depth"], c["width"]] for c in ch]
                                         for ch in chunks]}
    record["text"] = plan_text(cells, chunks, note, left)
    print(record["text"], flush=True)
    return cells, record


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def main(argv=None) -> None:
    start = time.monotonic()
    args = parse_args(argv)
    data_dir = Path(args.data_dir).resolve() if args.data_dir else None
    if data_dir is not None and not data_dir.is_dir():
        fail(f"--data-dir {args.data_dir}: no such directory")
    if data_dir is not None:
        os.environ["MILR_DATA"] = str(data_dir)
    import torch

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        if not args.plan:
            fail("--device cuda: no CUDA device here (--device cpu runs on the CPU)")
        device = "cpu"  # a plan without a GPU: rates measured on the CPU, and said so
    out = Path(args.out) if args.out else None
    if out is not None:
        if out.exists() and not out.is_dir():
            fail(f"--out {out}: not a folder")
        out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="milr-gpu-session-") as tmp:
        grids = prepare(args, out, Path(tmp))
        cells, record = make_plan(args, grids, device, start)
        if args.plan:
            return
        s = Session(out, args.budget_s, args.grace_s, start)
        write_json(out / "plan.json", record)
        with s.log.open("a", encoding="utf-8") as f:
            f.write(record.pop("text") + "\n")
        s.timings.update(device=device_name(device), torch=torch.__version__,
                         rate=record["rate"])
        s.save()
        env = env_for(data_dir, args.device)
        try:
            if not check_stage(s, args, env, Path(tmp)):
                s.timings["stopped"] = "the correctness check failed"
                s.save()
                sys.exit(1)
            bench_stage(s, args, env)
            for g in grids:
                copy_back(g, out)
            s.timings["stopped"] = sweep_stage(s, grids, cells, args, env)
        except KeyboardInterrupt:
            s.timings["stopped"] = "interrupted"
            s.save()
            sys.exit(130)
        s.save()
        s.say(f"done: {s.timings['stopped']}; {s.timings['elapsed_s']} s of {args.budget_s}")
    bench = s.timings.get("bench")
    bench_failed = isinstance(bench, dict) and bench["rc"] != 0 and not bench["stopped_at_limit"]
    sys.exit(1 if bench_failed or s.timings["sweep_failures"] else 0)


if __name__ == "__main__":
    main()
