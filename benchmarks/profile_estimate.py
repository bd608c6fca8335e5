"""Where the time of one `estimate` goes: per-round timings, trials, step cost against members.

    python benchmarks/profile_estimate.py --cells 4x256,8x1024      # Fashion-MNIST, 5 seeds
    python benchmarks/profile_estimate.py --kernels 8x1024          # plus a torch.profiler table

Per cell it prints the search's time, trials, member-steps and chunks (with the rows trained per
chunk), each seed's trials (round/lr/outcome and steps: S success, D diverged, F failed, C
cancelled), and the cost of a training step and of one evaluation against the number of members
trained together.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from milr import EstimateConfig
from milr.data import load
from milr.model import Ensemble
from milr.search import search
from milr.train import DIVERGENCE_CHECK, Pool, resolve_device, train


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class TimedPool(Pool):
    """A Pool that logs every chunk: rows trained, steps, seconds."""

    log: list[tuple[int, int, float]]

    def advance(self):
        sync(self.device)
        t, rows, before = time.perf_counter(), len(self.members), self.members[0].done
        out = super().advance()
        sync(self.device)
        steps = (self.members[0].done if self.members else before + DIVERGENCE_CHECK) - before
        self.log.append((rows, steps, time.perf_counter() - t))
        return out


def trace(cfg: EstimateConfig, data, device: torch.device, probes: int) -> None:
    pool = TimedPool(cfg, data, device, cancel_dominated=True)
    pool.log = []
    t = time.perf_counter()
    eval_cost = len(data.x_eval) / (3 * min(cfg.batch_size, len(data.x_train)))  # as estimate()
    results, trials, rounds = search(cfg, pool, probes, eval_cost=eval_cost,
                                     pipeline=device.type == "cuda")
    total = time.perf_counter() - t
    rows = [r for r, _, _ in pool.log]
    print(f"## ({cfg.depth}, {cfg.width}): {total:.2f} s, probes {probes}, rounds {rounds}, "
          f"{len(trials)} trials, {sum(t.steps for t in trials)} member-steps, "
          f"{len(pool.log)} chunks of {statistics.fmean(rows):.1f} rows on average, "
          f"η* {[round(r.lr_star, 4) for r in results if r.lr_star]}")
    for seed in sorted({t.seed for t in trials}):
        print(f"seed {seed}:", " ".join(f"{t.round}/{t.lr:.3g}/{kind(t)}{t.steps}"
                                        for t in trials if t.seed == seed))


def kind(o) -> str:
    return "S" if o.success else "D" if o.diverged else "C" if o.cancelled else "F"


def step_costs(cfg: EstimateConfig, data, device: torch.device, members: list[int]) -> None:
    """Seconds per training step and per evaluation against the number of members."""
    steps = 100
    print("members | ms per step | ms per member-step | ms per evaluation | ms per member-eval")
    for k in members:
        c = EstimateConfig(**{**cfg.row(), "steps": steps, "eval_every": 50, "threshold": 0.999})
        args = ([1e-4] * k, [i % cfg.seeds for i in range(k)], device)
        train(c, data, *args)  # warm-up (and graph capture)
        sync(device)
        t = time.perf_counter()
        train(c, data, *args)
        sync(device)
        total = time.perf_counter() - t
        net = Ensemble.create(args[1], data.n_inputs, cfg.depth, cfg.width, data.classes, device)
        net.accuracy(data.x_eval, data.y_eval)
        sync(device)
        t = time.perf_counter()
        for _ in range(3):
            net.accuracy(data.x_eval, data.y_eval)
        sync(device)
        ev = (time.perf_counter() - t) / 3
        per_step = (total - 2 * ev) / steps
        print(f"{k} | {1e3 * per_step:.3f} | {1e3 * per_step / k:.4f} | {1e3 * ev:.2f} | "
              f"{1e3 * ev / k:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="2x64,4x256,8x1024,16x512")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--probes", default="auto", help="auto, or a comma list tried in turn")
    ap.add_argument("--members", default="1,5,10,20,40")
    ap.add_argument("--kernels", default=None, help="a cell to run under torch.profiler")
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args()
    device = resolve_device(args.device)
    data = load(args.dataset).to(device)
    for cell in args.cells.split(","):
        depth, width = map(int, cell.split("x"))
        cfg = EstimateConfig(depth=depth, width=width, dataset=args.dataset, seeds=args.seeds,
                             device=device.type, precision=args.precision)
        auto = cfg.probes_for(device.type, data.n_inputs, data.classes)
        for p in ([auto] if args.probes == "auto" else map(int, args.probes.split(","))):
            trace(cfg, data, device, p)
        step_costs(cfg, data, device, [int(m) for m in args.members.split(",")])
    if args.kernels:
        depth, width = map(int, args.kernels.split("x"))
        cfg = EstimateConfig(depth=depth, width=width, dataset=args.dataset, seeds=args.seeds,
                             device=device.type, precision=args.precision)
        probes = cfg.probes_for(device.type, data.n_inputs, data.classes)
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            search(cfg, Pool(cfg, data, device, cancel_dominated=True), probes)
            sync(device)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=20))


if __name__ == "__main__":
    main()
