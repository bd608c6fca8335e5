"""What a scan costs against a search of the same cell (issue 31, item 7).

    OMP_NUM_THREADS=1 python benchmarks/bench_scan.py                  # Fashion-MNIST (2, 64)
    OMP_NUM_THREADS=1 python benchmarks/bench_scan.py --dataset gaussians --steps 1000

One `milr.scan` of `--seeds` seeds × 25 rates (lr_min · 2^(i/4), i = 0..24: six octaves), every
run for the whole budget, against one `milr.estimate` of the same configuration (its default
bracket and rtol), both on the CPU in one process, the data loaded once beforehand. Work is
counted in member-steps (optimizer steps summed over every run) as well as wall time, since
member-steps do not depend on what else the machine is doing; a scan also evaluates every run in
full at every evaluation, which member-steps do not count. Both report η*: the scan's on its
grid (resolution 2^(1/4)), the search's to rtol.
"""

from __future__ import annotations

import argparse
import time

import torch

from milr import EstimateConfig, ScanConfig, estimate, scan
from milr.data.lookup import load


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--lr-min", type=float, default=0.05, help="the scan's lowest rate (SGD)")
    args = p.parse_args()
    cfg = EstimateConfig(depth=args.depth, width=args.width, dataset=args.dataset,
                         steps=args.steps, seeds=args.seeds, device="cpu")
    data = load(cfg.dataset, cfg.data_dir)
    grid = EstimateConfig(**{**cfg.row(), "lr_min": args.lr_min, "lr_max": args.lr_min * 64})
    start = time.perf_counter()
    searched = estimate(cfg, data)
    t_search = time.perf_counter() - start
    start = time.perf_counter()
    scanned = scan(grid, ScanConfig(points_per_octave=4), data)
    t_scan = time.perf_counter() - start
    print(f"cell: depth {cfg.depth} × width {cfg.width} on {cfg.dataset}, {cfg.steps} steps, "
          f"{cfg.seeds} seeds, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"search: {len(searched.trials)} runs, {searched.member_steps} member-steps, "
          f"{t_search:.1f} s; η* = {searched.median}")
    print(f"scan:   {len(scanned.runs)} runs ({len(scanned.grid)} rates), "
          f"{scanned.member_steps} member-steps, {t_scan:.1f} s; η* on the grid = "
          f"{scanned.eta_star_median}, η_opt = {scanned.optimum.eta_opt} "
          f"({scanned.optimum.status}), stability edge = {scanned.stability_edge}")
    print(f"scan / search: {t_scan / t_search:.2f}× the time, "
          f"{scanned.member_steps / searched.member_steps:.2f}× the member-steps")


if __name__ == "__main__":
    main()
