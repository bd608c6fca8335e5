"""Where the time of one `estimate` goes: its trials and chunks, step cost against members.

    python benchmarks/profile_estimate.py --cells 4x256,8x1024      # Fashion-MNIST, 5 seeds
    python benchmarks/profile_estimate.py --kernels 8x1024          # plus a torch.profiler table
    python benchmarks/profile_estimate.py --cells 4x256 --criterion stable --kernels 4x256

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
from milr.base.config import ACCURACY_CEILINGS
from milr.base.device import resolve_device
from milr.data.lookup import load
from milr.engine.estimation import estimate
from milr.engine.model import Ensemble
from milr.engine.train import BatchedTrainer, train


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class TimedPool(BatchedTrainer):
    """A BatchedTrainer that logs the rows it trained in every chunk."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.log: list[int] = []

    def advance(self):
        self.log.append(len(self.members))
        return super().advance()


def trace(cfg: EstimateConfig, data, device: torch.device) -> None:
    """One estimate, searched exactly as `milr estimate` does it, with its chunk log."""
    pool = TimedPool(cfg, data, device)
    est = estimate(cfg, data, trainer=pool)
    print(f"## ({cfg.depth}, {cfg.width}): {est.wall_time:.2f} s, probes {est.probes}, "
          f"rounds {est.rounds}, {len(est.trials)} trials, {est.member_steps} member-steps, "
          f"{len(pool.log)} chunks of {statistics.fmean(pool.log):.1f} rows on average, "
          f"η* {[round(r.lr_star, 4) for r in est.seeds if r.lr_star]}")
    for seed in sorted({t.seed for t in est.trials}):
        print(f"seed {seed}:", " ".join(f"{t.round}/{t.lr:.3g}/{kind(t)}{t.steps}"
                                        for t in est.trials if t.seed == seed))


def kind(o) -> str:
    return "S" if o.success else "D" if o.diverged else "C" if o.cancelled else "F"


def step_costs(cfg: EstimateConfig, data, device: torch.device, members: list[int]) -> None:
    """Seconds per training step and per evaluation against the number of members."""
    steps = 100
    print("members | ms per step | ms per member-step | ms per evaluation | ms per member-eval")
    for k in members:
        c = EstimateConfig(**{**cfg.row(), "steps": steps, "eval_every": 50,
                              "criterion": "accuracy", "divergence_check": "eval",
                              "threshold": min(0.999, ACCURACY_CEILINGS.get(cfg.dataset, 1.0))})
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
    ap.add_argument("--criterion", default="accuracy", choices=("accuracy", "stable"))
    args = ap.parse_args()
    device = resolve_device(args.device)
    data = load(args.dataset).to(device)
    for cell in args.cells.split(","):
        depth, width = map(int, cell.split("x"))
        cfg = EstimateConfig(depth=depth, width=width, dataset=args.dataset, seeds=args.seeds,
                             device=device.type, precision=args.precision,
                             criterion=args.criterion)
        for p in [0] if args.probes == "auto" else map(int, args.probes.split(",")):
            trace(EstimateConfig(**{**cfg.row(), "probes": p}), data, device)
        step_costs(cfg, data, device, [int(m) for m in args.members.split(",")])
    if args.kernels:
        depth, width = map(int, args.kernels.split("x"))
        cfg = EstimateConfig(depth=depth, width=width, dataset=args.dataset, seeds=args.seeds,
                             device=device.type, precision=args.precision,
                             criterion=args.criterion)
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            estimate(cfg, data)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=20))


if __name__ == "__main__":
    main()
