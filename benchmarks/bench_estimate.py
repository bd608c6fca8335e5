"""milr against two peers on the same cells in one process: the sequential textbook reference and
a torch.func ensemble, with their verdicts compared on identical (learning rate, seed) trials.

    python benchmarks/bench_estimate.py                 # the issue's cells, Fashion-MNIST, 5 seeds
    python benchmarks/bench_estimate.py --quick         # a CPU-sized smoke version (CI runs it)

Per cell it runs reference, torch.func peer and milr in turn, `--repeats` times, and prints the
median wall time of each, milr's speed-up over both and the three η* medians. The peer runs
milr's own search (`estimate(..., trainer=FuncTrainer)`), so its timing differs from milr's by
the engine alone; the reference runs its own sequential scan and log bisection.

Agreement (the check that can fail): every (lr, seed) that any of the three trained is trained
by the others too (outside the timings), and milr's outcome on each is compared with each
peer's: verdict (success, diverged or budget) and stopping step. Some runs are chaotic, and
float-level differences (autograd against milr's hand-written backward) flip them; a
disagreement is *marginal* when the trial is near the edge (its rate within a factor 1 + EDGE
of the span of its seed's three η*, extended down to the lowest failure above a success where
the seed's boundary is ragged) or near the threshold (one side succeeded and the other's peak
validation accuracy came within ACC_MARGIN of the threshold) or chaotic (milr's own verdict
changes when the rate moves by a factor 1 ± CHAOS: the run's fate is decided by its last bits,
so no two implementations can be expected to agree on it). The run fails (exit 1) when any
other disagreement occurs, or when marginal ones exceed MARGINAL_ALLOWED of the trials
compared with a peer, over all cells. It then measures raw engine throughput on the largest
cell.

milr runs twice per repeat: as by default (an evaluation stops once its verdict is certain,
docs/protocol.md §4) and with `full_eval` (every example every time). The two searches must
train the same trials to the same verdicts, stopping steps and η* (else exit 1); the
comparison with the peers uses the full-evaluation run, whose accuracies are full ones.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from funcpeer import COMPILE_MODES, FuncTrainer, train_func  # noqa: E402
from reference import reference_estimate, run_one  # noqa: E402

from milr import EstimateConfig, estimate  # noqa: E402
from milr.base.config import ACCURACY_CEILINGS  # noqa: E402
from milr.base.cost import flops_per_member_step  # noqa: E402
from milr.data.lookup import load  # noqa: E402
from milr.engine.train import BatchedTrainer, train  # noqa: E402

FULL_CELLS = [(2, 64), (4, 256), (8, 1024), (16, 512)]
QUICK_CELLS = [(1, 32), (2, 64)]
# Dense peaks in TFLOP/s (vendor data sheets, SXM parts): fp32 on CUDA cores, tf32 on tensor cores.
PEAKS = {"H100": {"fp32": 67.0, "tf32": 494.7}, "H200": {"fp32": 67.0, "tf32": 494.7}}
EDGE = 0.25  # near the edge: lr within a factor 1.25 of the seed's η* (5 x the default rtol)
ACC_MARGIN = 0.01  # near the threshold: the side that did not succeed peaked this close below
MARGINAL_ALLOWED = 0.35  # marginal disagreements tolerated per peer, as a share of its trials
CHAOS = 1e-4  # chaotic: milr's verdict at lr · (1 ± CHAOS) is not its verdict at lr
IMPLS = ("reference", "torch.func", "milr")


def resolve(name: str) -> torch.device:
    """auto, cpu or cuda."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def kind(o) -> tuple[str, int]:
    """What the comparison compares: verdict and stopping step."""
    return ("success" if o.success else "diverged" if o.diverged else "budget", o.steps)


def same_rate(lr: float) -> float:
    """One key for rates that differ in their last bits only (the reference reaches grid points
    by repeated division, milr by a power)."""
    return float(f"{lr:.10g}")


def warm_up(cfg: EstimateConfig, data, compile_mode: str) -> float:
    """First calls (and torch.compile's graphs, for one member and for several) outside the
    timings; returns the seconds it took."""
    c = EstimateConfig(**{**cfg.row(), "steps": 20, "eval_every": 20})
    t = time.perf_counter()
    for k in (1, 3):
        train(c, data, [1e-3] * k, list(range(k)))
        train_func(c, data, [1e-3] * k, list(range(k)), compile=compile_mode)
    run_one(c, data, 1e-3, 0, data.x_train.device)
    sync(data.x_train.device)
    return time.perf_counter() - t


def timed_cell(cfg: EstimateConfig, data, device, repeats: int, compile_mode: str) -> dict:
    """Reference, torch.func peer, milr and milr with full evaluations in turn, `repeats` times;
    the last run of each."""
    times = {name: [] for name in (*IMPLS, "milr full")}
    for _ in range(repeats):
        ref = reference_estimate(cfg, data, device)
        times["reference"].append(ref["wall_time"])
        peer = FuncTrainer(cfg, data, device, compile=compile_mode)
        func = estimate(cfg, data, trainer=peer)
        times["torch.func"].append(func.wall_time)
        est = estimate(cfg, data, full_eval=False)  # the early exit, on CUDA too
        times["milr"].append(est.wall_time)
        full = estimate(cfg, data, full_eval=True)
        times["milr full"].append(full.wall_time)
    return {"times": {k: statistics.median(v) for k, v in times.items()},
            "early_exit_differs": early_exit_differs(est, full),
            "runs": {"reference": ref["trials"], "torch.func": func.trials, "milr": full.trials},
            "median": {"reference": ref["median"], "torch.func": func.median,
                       "milr": est.median},
            "stars": {"reference": ref["stars"],
                      "torch.func": {s.seed: s.lr_star for s in func.seeds if s.lr_star},
                      "milr": {s.seed: s.lr_star for s in est.seeds if s.lr_star}}}


def early_exit_differs(early, full) -> list[str]:
    """What the search with early exits did differently from the one with full evaluations:
    trials (rate, seed, verdict, stopping step) or per-seed results; nothing, when exact."""
    def trials(est):
        return sorted((t.seed, same_rate(t.lr), t.cancelled, *kind(t)) for t in est.trials)
    a, b = trials(early), trials(full)
    out = [f"trial {x} (early exit) against {y} (full)" for x, y in zip(a, b, strict=False)
           if x != y]
    if len(a) != len(b):
        out.append(f"{len(a)} trials (early exit) against {len(b)} (full)")
    out += [f"seed {x.seed}: {x} (early exit) against {y} (full)"
            for x, y in zip(early.seeds, full.seeds, strict=True) if x != y]
    return out


def all_outcomes(cfg: EstimateConfig, data, device, runs: dict, compile_mode: str) -> dict:
    """Every implementation's outcome on every (lr, seed) that any of them trained: its own
    runs where it has them, the rest trained now."""
    own = {name: {(same_rate(o.lr), o.seed): o for o in outs if not o.cancelled}
           for name, outs in runs.items()}
    keys = sorted(set().union(*own.values()))
    trainers = {
        "milr": lambda ks: train(cfg, data, [k[0] for k in ks], [k[1] for k in ks], device,
                                 full_eval=True),
        "torch.func": lambda ks: train_func(cfg, data, [k[0] for k in ks], [k[1] for k in ks],
                                            compile=compile_mode),
        "reference": lambda ks: [run_one(cfg, data, lr, s, device) for lr, s in ks],
    }
    for name, outcomes in own.items():
        missing = [k for k in keys if k not in outcomes]
        if missing:
            outcomes.update(zip(missing, trainers[name](missing), strict=True))
    return own


def edge_bands(stars: dict, outcomes: dict) -> dict:
    """Per seed, the rates around its edge: from the lowest η* of the three (or the lowest failure
    above a success, where a seed's boundary is ragged) to the highest, widened by 1 + EDGE."""
    bands = {}
    for seed in set().union(*(s.keys() for s in stars.values())):
        values = [s[seed] for s in stars.values() if seed in s]
        lo, hi = min(values), max(values)
        for outs in outcomes.values():
            mine = {lr: o.success for (lr, s), o in outs.items() if s == seed}
            ok = [lr for lr, good in mine.items() if good]
            ragged = [lr for lr, good in mine.items() if not good and ok and lr > min(ok)]
            lo = min([lo, *ragged])
        bands[seed] = (lo / (1 + EDGE), hi * (1 + EDGE))
    return bands


def chaotic(cfg: EstimateConfig, data, device, lr: float, seed: int) -> bool:
    """Whether milr's verdict on (lr, seed) changes when the rate moves by a factor 1 ± CHAOS
    (far above η* some runs stall at chance or overflow depending on their last bits)."""
    outs = train(cfg, data, [lr * (1 - CHAOS), lr, lr * (1 + CHAOS)], [seed] * 3, device)
    return len({kind(o)[0] for o in outs}) > 1


def disagreements(outcomes: dict, bands: dict, threshold: float, peer: str,
                  is_chaotic=lambda lr, seed: False) -> tuple[list, list]:
    """(marginal, other) trials on which `peer` and milr differ in verdict or stopping step;
    `is_chaotic(lr, seed)` is asked only about those that are neither near the edge nor near
    the threshold."""
    marginal, other = [], []
    for key, mine in outcomes["milr"].items():
        theirs = outcomes[peer][key]
        if kind(theirs) == kind(mine):
            continue
        lr, seed = key
        near_edge = seed in bands and bands[seed][0] <= lr <= bands[seed][1]
        # One side succeeded and the other came within ACC_MARGIN of the threshold: the verdict
        # hinged on a validation example or two.
        near_threshold = (mine.success or theirs.success) and min(
            o.peak_acc or 0.0 for o in (mine, theirs)) >= threshold - ACC_MARGIN
        (marginal if near_edge or near_threshold or is_chaotic(lr, seed) else other).append(
            (lr, seed, kind(mine), kind(theirs)))
    return marginal, other


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small cells, 3 seeds, 300 steps")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32"])
    ap.add_argument("--optimizer", default="sgd", help="for all three (the reference's "
                                                       "torch.optim, the peer's own update)")
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--cells", default=None, help="e.g. 2x64,4x256")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's]")
    ap.add_argument("--matmuls-only", action="store_true",
                    help="only the engine against this machine's batched-matmul rate, per cell")
    ap.add_argument("--func-compile", default="auto", choices=("auto",) + COMPILE_MODES,
                    help="torch.compile mode of the torch.func peer; auto: off on the CPU "
                         "(measured slower there), default on CUDA")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick
    dataset = args.dataset or ("gaussians" if quick else "fashion-mnist")
    seeds = args.seeds or (3 if quick else 5)
    repeats = args.repeats or (1 if quick else 3)
    cells = ([tuple(map(int, c.split("x"))) for c in args.cells.split(",")] if args.cells
             else QUICK_CELLS if quick else FULL_CELLS)
    device = resolve(args.device)
    compile_mode = (args.func_compile if args.func_compile != "auto"
                    else "default" if device.type == "cuda" else "off")
    data = load(dataset).to(device)
    # The quick task's default threshold (0.80) sits within a few points of the Bayes accuracy
    # (~0.84), where a third of all trials hinge on one validation example; 0.75 does not.
    extra = dict(steps=300, threshold=0.75) if quick else {}
    extra.update(optimizer=args.optimizer, warmup_steps=args.warmup_steps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# device: {name} ({torch.get_num_threads()} CPU threads); torch {torch.__version__}; "
          f"dataset {dataset}; seeds {seeds}; median of {repeats}; precision {args.precision}; "
          f"torch.func compile {compile_mode}; {time.strftime('%Y-%m-%d %H:%M')}")
    first = EstimateConfig(depth=cells[0][0], width=cells[0][1], dataset=dataset,
                           device=device.type, **extra)
    if args.matmuls_only:
        report_against_matmuls(cells, dataset, seeds, args.precision, data, device, quick,
                               args.optimizer)
        return
    print(f"# warm-up (first calls{', compilation' if compile_mode != 'off' else ''}): "
          f"{warm_up(first, data, compile_mode):.1f} s, not timed")
    print("| cell (d, w) | reference s | torch.func s | milr s | milr full-eval s | "
          "vs reference | vs torch.func | η* reference | η* torch.func | η* milr | trials | "
          "differ from reference | differ from torch.func |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    tally = {peer: {"trials": 0, "marginal": 0, "other": 0} for peer in IMPLS[:2]}
    details, early_exit = [], []
    for depth, width in cells:
        cfg = EstimateConfig(depth=depth, width=width, dataset=dataset, seeds=seeds,
                             device=device.type, precision=args.precision, **extra)
        cell = timed_cell(cfg, data, device, repeats, compile_mode)
        early_exit += [f"({depth}, {width}) {d}" for d in cell["early_exit_differs"]]
        outcomes = all_outcomes(cfg, data, device, cell["runs"], compile_mode)
        counts, bands = [], edge_bands(cell["stars"], outcomes)
        # asked per peer: a trial both peers disagree on is retrained once
        is_chaotic = functools.cache(functools.partial(chaotic, cfg, data, device))
        for peer in IMPLS[:2]:
            marginal, other = disagreements(outcomes, bands, cfg.threshold, peer, is_chaotic)
            tally[peer]["trials"] += len(outcomes["milr"])
            tally[peer]["marginal"] += len(marginal)
            tally[peer]["other"] += len(other)
            counts.append(f"{len(marginal)} marginal, {len(other)} other")
            details += [(depth, width, peer, "marginal" if d in marginal else "OTHER", d)
                        for d in marginal + other]
        t, m = cell["times"], cell["median"]
        print(f"| ({depth}, {width}) | {t['reference']:.2f} | {t['torch.func']:.2f} | "
              f"{t['milr']:.2f} | {t['milr full']:.2f} | {t['reference'] / t['milr']:.1f}× | "
              f"{t['torch.func'] / t['milr']:.1f}× | {fmt(m['reference'])} | "
              f"{fmt(m['torch.func'])} | {fmt(m['milr'])} | {len(outcomes['milr'])} | "
              f"{' | '.join(counts)} |", flush=True)
    for depth, width, peer, where, (lr, seed, mine, theirs) in details:
        print(f"  ({depth}, {width}) lr={lr:.4g} seed={seed}: milr {mine}, {peer} {theirs} "
              f"({where})")

    report_against_matmuls(cells, dataset, seeds, args.precision, data, device, quick,
                           args.optimizer)
    report_throughput(cells, dataset, seeds, args.precision, data, device, name, quick,
                      args.optimizer)
    print(f"early exit against full evaluations: {len(early_exit)} difference(s) in trials, "
          f"verdicts, stopping steps or η*: {'FAIL' if early_exit else 'ok'}")
    for line in early_exit:
        print(f"  {line}")
    failed = bool(early_exit)
    for peer, n in tally.items():
        allowed = math.floor(MARGINAL_ALLOWED * n["trials"])
        bad = n["other"] > 0 or n["marginal"] > allowed
        failed |= bad
        print(f"agreement with {peer}: {n['trials']} trials, {n['marginal']} marginal "
              f"disagreements (allowed {allowed}), {n['other']} other (allowed 0): "
              f"{'FAIL' if bad else 'ok'}")
    if failed:
        sys.exit(1)


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def layer_shapes(depth: int, width: int, n_in: int, classes: int) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every layer of the engine's network."""
    return [(n_in, width)] + [(width, width)] * (depth - 1) + [(width, classes)]


def matmul_rate(members: int, rows: int, shapes: list[tuple[int, int]], device,
                repeats: int) -> float:
    """FLOP/s of this machine's fp32 batched matmuls at a step's shapes, in this process: per
    layer the forward (rows x fan_in @ fan_in x fan_out), the gradient of its input and that of
    its weights, as a training step runs them; the median of `repeats` timings."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device)

    ops = []
    for fi, fo in shapes:
        x, w, d = rand(members, rows, fi), rand(members, fi, fo), rand(members, rows, fo)
        ops.append((x, w, d, torch.empty(members, rows, fo, device=device),
                    torch.empty(members, rows, fi, device=device),
                    torch.empty(members, fi, fo, device=device)))
    flops = sum(6.0 * members * rows * fi * fo for fi, fo in shapes)
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        sync(device)
        t = time.perf_counter()
        for x, w, d, out, dx, dw in ops:
            torch.bmm(x, w, out=out)
            torch.bmm(d, w.transpose(1, 2), out=dx)
            torch.bmm(x.transpose(1, 2), d, out=dw)
        sync(device)
        times.append(time.perf_counter() - t)
    return flops / statistics.median(times[1:])


def report_against_matmuls(cells, dataset, seeds, precision, data, device, quick,
                           optimizer="sgd") -> None:
    """Cell by cell, the engine's training and evaluation FLOP/s (every member training the
    whole budget, no early exit) as a fraction of the batched-matmul rate measured here at the
    same shapes: what is left to gain on this machine."""
    steps = 50 if quick else 200
    print("\n| cell (d, w) | members | matmul rate GFLOP/s (same shapes) | engine training "
          "GFLOP/s | fraction | evaluation GFLOP/s | fraction |\n|---|---|---|---|---|---|---|")
    for depth, width in cells:
        cfg = EstimateConfig(depth=depth, width=width, dataset=dataset, seeds=seeds,
                             precision=precision, steps=steps, eval_every=steps,
                             threshold=min(0.999, ACCURACY_CEILINGS.get(dataset, 1.0)),
                             optimizer=optimizer)
        members = seeds * 2
        shapes = layer_shapes(depth, width, data.n_inputs, data.classes)
        peak = matmul_rate(members, cfg.batch_size, shapes, device, repeats=5)
        trainer = BatchedTrainer(cfg, data, device, full_eval=True)
        trainer.admit([cfg.lr_min / 10] * members, [i % seeds for i in range(members)])
        sync(device)
        t = time.perf_counter()
        while trainer.pending:
            trainer.advance()
        sync(device)
        dt = time.perf_counter() - t
        eval_flops = members * 2.0 * len(data.x_eval) * sum(fi * fo for fi, fo in shapes)
        net = BatchedTrainer(cfg, data, device)
        net.admit([1e-3] * members, [i % seeds for i in range(members)])
        net.net.evaluate(data.x_eval, data.y_eval)  # warm-up
        sync(device)
        t = time.perf_counter()
        net.net.evaluate(data.x_eval, data.y_eval)
        sync(device)
        de = time.perf_counter() - t
        # the timed training run evaluated once, at its end: take that evaluation out
        train_rate = members * steps * flops_per_member_step(cfg, data.n_inputs, data.classes) \
            / max(dt - de, 1e-9)
        eval_rate = eval_flops / de
        print(f"| ({depth}, {width}) | {members} | {peak / 1e9:.1f} | {train_rate / 1e9:.1f} | "
              f"{train_rate / peak:.2f} | {eval_rate / 1e9:.1f} | {eval_rate / peak:.2f} |",
              flush=True)
        assert math.isfinite(train_rate) and math.isfinite(eval_rate) and peak > 0


def report_throughput(cells, dataset, seeds, precision, data, device, name, quick,
                      optimizer="sgd") -> None:
    """Engine speed on the largest cell, every member training the whole budget."""
    depth, width = max(cells, key=lambda c: c[0] * c[1] ** 2)
    steps = 100 if quick else 500
    cfg = EstimateConfig(depth=depth, width=width, dataset=dataset, seeds=seeds,
                         precision=precision, steps=steps, eval_every=steps,
                         threshold=min(0.999, ACCURACY_CEILINGS.get(dataset, 1.0)),
                         optimizer=optimizer)
    members = seeds * 8
    # far below η* (a tenth of the bracket's bottom; 1e-4 under sgd): no member stops early
    lrs, member_seeds = [cfg.lr_min / 10] * members, [i % seeds for i in range(members)]
    sync(device)
    t = time.perf_counter()
    train(cfg, data, lrs, member_seeds, device, full_eval=True)
    sync(device)
    dt = time.perf_counter() - t
    step = flops_per_member_step(cfg, data.n_inputs, data.classes)
    evals = step * len(data.x_eval) / (3.0 * cfg.batch_size)  # forward only: 2 of 6 per weight
    tflops = members * (steps * step + evals) / dt / 1e12
    peak = next((p[precision] for k, p in PEAKS.items() if k in name), None)
    frac = f", {100 * tflops / peak:.0f}% of the {peak} TFLOP/s {precision} peak" if peak else ""
    print(f"\nengine on ({depth}, {width}), {members} members, no early exit: "
          f"{members * steps / dt:.0f} member-steps/s, {tflops:.2f} TFLOP/s{frac}")
    assert math.isfinite(tflops)


if __name__ == "__main__":
    main()
