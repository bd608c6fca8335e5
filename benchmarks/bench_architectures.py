"""What a residual block costs the engine against an MLP layer: member-steps per second of milr's
batched engine for each architecture (and activation) at the same depth and width.

    python benchmarks/bench_architectures.py --cell 8x256

A residual block is the MLP layer's matmuls plus an addition (and a branch multiplier), so the
target is at least 0.9× the MLP's rate. The variants run in turn, `--repeats` times, interleaved
so that a machine busy with other work slows them alike; the best time of each is kept (the least
disturbed). Every member trains the whole budget under criterion stable at a rate far below η*
(no evaluation, no early stop), so what is timed is the steps.
"""

from __future__ import annotations

import argparse
import time

import torch

from milr import EstimateConfig
from milr.data.lookup import load
from milr.engine.train import train

VARIANTS = {
    "mlp relu": {},
    "residual relu, branch 1/√L": {"architecture": "residual", "branch_scale": "sqrt-depth"},
    "mlp tanh": {"activation": "tanh"},
    "residual tanh, branch 1/√L": {"architecture": "residual", "branch_scale": "sqrt-depth",
                                   "activation": "tanh"},
}


def timed(cfg: EstimateConfig, data, members: int) -> float:
    """Wall time of one training of `members` members (4 per seed) for the whole budget."""
    seeds = [i // 4 for i in range(members)]
    t = time.perf_counter()
    runs = train(cfg, data, [1e-3] * members, seeds)
    dt = time.perf_counter() - t
    assert all(r.steps == cfg.steps for r in runs), "a member stopped early"
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="8x256", help="depth x width")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's]")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    depth, width = (int(v) for v in args.cell.split("x"))
    data = load(args.dataset)
    cfgs = {name: EstimateConfig(depth=depth, width=width, dataset=args.dataset,
                                 criterion="stable", steps=args.steps, device="cpu", **kw)
            for name, kw in VARIANTS.items()}
    best = {name: float("inf") for name in cfgs}
    for cfg in cfgs.values():  # a warm-up of each, not timed
        timed(cfg, data, args.members)
    for _ in range(args.repeats):
        for name, cfg in cfgs.items():
            best[name] = min(best[name], timed(cfg, data, args.members))
    print(f"## ({depth}, {width}) on {args.dataset}, {args.members} members × {args.steps} "
          f"steps, {torch.get_num_threads()} thread(s), best of {args.repeats}")
    print("| variant | member-steps/s | × mlp relu |\n|---|---|---|")
    base = args.members * args.steps / best["mlp relu"]
    for name, dt in best.items():
        rate = args.members * args.steps / dt
        print(f"| {name} | {rate:.0f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
