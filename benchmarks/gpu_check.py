"""GPU correctness: the CUDA engine against the CPU engine, and a member alone against in a batch.

    python benchmarks/gpu_check.py      # needs a CUDA device; prints agreement counts
"""

from __future__ import annotations

import torch

from milr import EstimateConfig
from milr.data import load
from milr.train import train


def main() -> None:
    assert torch.cuda.is_available(), "this check needs a CUDA device"
    data = load("fashion-mnist")
    cfg = EstimateConfig(depth=3, width=128, dataset="fashion-mnist", steps=600)
    lrs = [0.05 * 1.35**i for i in range(16)]
    seeds = [i % 4 for i in range(16)]
    gpu = train(cfg, data.to("cuda"), lrs, seeds, torch.device("cuda"))
    cpu = train(cfg, data, lrs, seeds, torch.device("cpu"))
    same = sum(g.success == c.success for g, c in zip(gpu, cpu, strict=True))
    steps = sum(g.steps == c.steps for g, c in zip(gpu, cpu, strict=True))
    dacc = max(abs(g.final_acc - c.final_acc) for g, c in zip(gpu, cpu, strict=True)
               if g.steps == c.steps and not g.diverged)
    print(f"cuda vs cpu: same success {same}/16, same stopping step {steps}/16, "
          f"max |acc difference| where both stopped together {dacc:.4f}")
    for g, c in zip(gpu, cpu, strict=True):
        print(f"  lr {g.lr:.4f} seed {g.seed}: cuda {g.success!s:5} {g.steps:4d} {g.final_acc:.4f}"
              f" | cpu {c.success!s:5} {c.steps:4d} {c.final_acc:.4f}")
    alone = [train(cfg, data.to("cuda"), [lrs[i]], [seeds[i]])[0] for i in (0, 7, 15)]
    match = sum(a == gpu[i] for a, i in zip(alone, (0, 7, 15), strict=True))
    print(f"cuda: member alone == member in a batch of 16, exactly: {match}/3")


if __name__ == "__main__":
    main()
