"""What an optimizer costs the engine: member-steps per second of milr's batched engine, and of
the torch.func peer given the same optimizer, with every member training the whole budget.

    python benchmarks/bench_optimizers.py --cells 4x256,2x64 --optimizers sgd,adam

Per cell, the optimizers (and implementations) run in turn, `--repeats` times, interleaved so
that a machine busy with other work slows them alike; the medians are printed with each
optimizer's rate relative to the first one's. The members (`--seeds` seeds × `--per-seed`
rates, all small enough never to diverge) train `--steps` steps with the threshold out of reach
and one evaluation, at the end of the budget, on only `--eval-examples` validation examples (the
same for every optimizer, so what is timed is the steps): milr's engine and the peer then do the
same work.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from funcpeer import train_func  # noqa: E402

from milr import EstimateConfig  # noqa: E402
from milr.base.config import ACCURACY_CEILINGS  # noqa: E402
from milr.data.lookup import load  # noqa: E402
from milr.engine.train import train  # noqa: E402

# Rates far below each optimizer's η* on Fashion-MNIST: no member stops early.
SAFE_LR = {"sgd": 1e-3, "momentum": 1e-4, "nesterov": 1e-4, "adam": 1e-5, "adamw": 1e-5}


def timed(impl: str, cfg: EstimateConfig, data, lrs: list[float], seeds: list[int]) -> float:
    """Wall time of one training of all members by `impl`; every member must run the budget."""
    t = time.perf_counter()
    runs = (train if impl == "milr" else train_func)(cfg, data, lrs, seeds)
    dt = time.perf_counter() - t
    short = [r for r in runs if r.steps != cfg.steps]
    assert not short, f"{impl}: {len(short)} member(s) stopped early (lr {short[0].lr})"
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="4x256,2x64", help="e.g. 4x256,2x64")
    ap.add_argument("--optimizers", default="sgd,adam")
    ap.add_argument("--impls", default="milr,torch.func")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--per-seed", type=int, default=4, help="members per seed")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eval-examples", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's]")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load(args.dataset)
    data = dataclasses.replace(data, x_eval=data.x_eval[:args.eval_examples],
                               y_eval=data.y_eval[:args.eval_examples])
    optimizers, impls = args.optimizers.split(","), args.impls.split(",")
    print(f"# {args.dataset}, {args.seeds} seeds x {args.per_seed} members, {args.steps} steps, "
          f"{len(data.x_eval)} validation examples, {torch.get_num_threads()} CPU threads, "
          f"torch {torch.__version__}, medians of {args.repeats}")
    for cell in args.cells.split(","):
        depth, width = map(int, cell.split("x"))
        members = args.seeds * args.per_seed
        seeds = [i % args.seeds for i in range(members)]
        times: dict[tuple[str, str], list[float]] = {}
        cfgs = {o: EstimateConfig(depth=depth, width=width, dataset=args.dataset,
                                  seeds=args.seeds, steps=args.steps, eval_every=args.steps,
                                  optimizer=o, device="cpu",
                                  threshold=min(0.999, ACCURACY_CEILINGS.get(args.dataset, 1.0)))
                for o in optimizers}
        for o in optimizers:  # warm-up: first calls, initial weights drawn
            for impl in impls:
                small = EstimateConfig(**{**cfgs[o].row(), "steps": 2, "eval_every": 2})
                timed(impl, small, data, [SAFE_LR[o]], [0])
        for _ in range(args.repeats):
            for o in optimizers:
                for impl in impls:
                    lrs = [SAFE_LR[o] * (1 - 0.1 * (i // args.seeds)) for i in range(members)]
                    times.setdefault((impl, o), []).append(
                        timed(impl, cfgs[o], data, lrs, seeds))
        for impl in impls:
            base = None
            for o in optimizers:
                rate = members * args.steps / statistics.median(times[(impl, o)])
                base = base or rate
                print(f"({depth}, {width}) {impl:10s} {o:8s} {rate:8.0f} member-steps/s "
                      f"({rate / base:.2f}x {optimizers[0]}; runs "
                      f"{', '.join(f'{t:.1f}' for t in times[(impl, o)])} s)")


if __name__ == "__main__":
    main()
