"""milr's batched engine against the straightforward reference, on the same cells, in one process.

    python benchmarks/bench_estimate.py                 # the issue's cells, Fashion-MNIST, 5 seeds
    python benchmarks/bench_estimate.py --quick         # a CPU-sized smoke version (CI runs it)

Per cell it alternates reference and milr `--repeats` times and prints both wall times, their
ratio, both η* medians and whether they agree within the seed spread. It then measures the
engine's raw throughput (member-steps/s) and achieved FLOP/s on the largest cell.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from reference import reference_estimate  # noqa: E402

from milr import EstimateConfig, estimate  # noqa: E402
from milr.data import load  # noqa: E402
from milr.train import resolve_device, train  # noqa: E402

FULL_CELLS = [(2, 64), (4, 256), (8, 1024), (16, 512)]
QUICK_CELLS = [(1, 32), (2, 64)]
# Dense peaks in TFLOP/s (vendor data sheets, SXM parts): fp32 on CUDA cores, tf32 on tensor cores.
PEAKS = {"H100": {"fp32": 67.0, "tf32": 494.7}, "H200": {"fp32": 67.0, "tf32": 494.7}}


def throughput(cfg: EstimateConfig, data, device, members: int, steps: int) -> dict:
    """Engine speed with every member training the whole budget (tiny lr, no early exit)."""
    c = EstimateConfig(**{**cfg.row(), "steps": steps, "eval_every": steps, "threshold": 0.999})
    lrs, seeds = [1e-4] * members, [i % cfg.seeds for i in range(members)]
    train(c, data, lrs[:2], seeds[:2], device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    train(c, data, lrs, seeds, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    step_flops = c.flops_per_member_step(data.n_inputs, data.classes)
    eval_flops = step_flops * len(data.x_eval) / (3.0 * c.batch_size)  # forward only: 2 of 6
    total = members * (steps * step_flops + eval_flops)
    return {"member_steps_per_s": members * steps / dt, "tflops": total / dt / 1e12, "seconds": dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small cells, 3 seeds, 300 steps")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32"])
    ap.add_argument("--cells", default=None, help="e.g. 2x64,4x256")
    args = ap.parse_args()

    quick = args.quick
    dataset = args.dataset or ("gaussians" if quick else "fashion-mnist")
    seeds = args.seeds or (3 if quick else 5)
    repeats = args.repeats or (1 if quick else 2)
    cells = ([tuple(map(int, c.split("x"))) for c in args.cells.split(",")] if args.cells
             else QUICK_CELLS if quick else FULL_CELLS)
    device = resolve_device(args.device)
    data = load(dataset).to(device)
    extra = dict(steps=300) if quick else {}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# device: {name}; torch {torch.__version__}; dataset {dataset}; seeds {seeds}; "
          f"repeats {repeats}; precision {args.precision}; {time.strftime('%Y-%m-%d')}")
    print("| cell (d, w) | reference s | milr s | speed-up | η* reference | η* milr | "
          "milr seed range | agree |")
    print("|---|---|---|---|---|---|---|---|")
    disagreements = 0
    for depth, width in cells:
        cfg = EstimateConfig(depth=depth, width=width, dataset=dataset, seeds=seeds,
                             device=device.type, precision=args.precision, **extra)
        ref_t, milr_t = [], []
        for _ in range(repeats):
            ref = reference_estimate(cfg, data, device)
            ref_t.append(ref["wall_time"])
            est = estimate(cfg, data)
            milr_t.append(est.wall_time)
        lo, hi = est.spread
        # Agreement: the medians differ by no more than the spread over the seeds of both
        # (max / min over all per-seed η*) plus the search tolerance. Near η* a run can be
        # chaotic, so float-level differences (autograd vs hand-written backward) may flip it.
        every = est.values + ref["values"]
        allowed = math.log(max(every) / min(every)) + math.log(1 + cfg.rtol)
        agree = ref["median"] is not None and abs(math.log(ref["median"] / est.median)) <= allowed
        disagreements += not agree
        r, m = statistics.median(ref_t), statistics.median(milr_t)
        print(f"| ({depth}, {width}) | {r:.2f} | {m:.2f} | {r / m:.1f}× | {ref['median']:.4g} | "
              f"{est.median:.4g} | {lo:.4g}–{hi:.4g} | {'yes' if agree else 'NO'} |", flush=True)

    depth, width = max(cells, key=lambda c: c[0] * c[1] ** 2)
    cfg = EstimateConfig(depth=depth, width=width, dataset=dataset, seeds=seeds,
                         precision=args.precision)
    members = seeds * 8
    tp = throughput(cfg, data, device, members, steps=100 if quick else 500)
    peak = next((p[args.precision] for k, p in PEAKS.items() if k in name), None)
    frac = f", {100 * tp['tflops'] / peak:.0f}% of the {peak} TFLOP/s {args.precision} peak" \
        if peak else ""
    print(f"\nengine on ({depth}, {width}), {members} members, no early exit: "
          f"{tp['member_steps_per_s']:.0f} member-steps/s, {tp['tflops']:.2f} TFLOP/s{frac}")
    if disagreements:
        print(f"{disagreements} cell(s) where the two η* disagree beyond the seed spread")
        sys.exit(1)
    assert math.isfinite(tp["tflops"])


if __name__ == "__main__":
    main()
