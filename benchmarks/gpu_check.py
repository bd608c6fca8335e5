"""GPU correctness: the CUDA engine against the CPU engine, and a member alone against in a batch.

    python benchmarks/gpu_check.py      # needs a CUDA device; prints agreement counts
"""

from __future__ import annotations

import time

import torch

from milr import EstimateConfig
from milr.data.lookup import load
from milr.engine.train import train


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
    def acc(o) -> str:
        return "diverged" if o.final_acc is None else f"{o.final_acc:.4f}"

    for g, c in zip(gpu, cpu, strict=True):
        print(f"  lr {g.lr:.4f} seed {g.seed}: cuda {g.success!s:5} {g.steps:4d} {acc(g)}"
              f" | cpu {c.success!s:5} {c.steps:4d} {acc(c)}")
    alone = [train(cfg, data.to("cuda"), [lrs[i]], [seeds[i]])[0] for i in (0, 7, 15)]
    match = sum(a == gpu[i] for a, i in zip(alone, (0, 7, 15), strict=True))
    print(f"cuda: member alone == member in a batch of 16, exactly: {match}/3")
    # the early exit: the same members with every evaluation seeing every example
    full = train(cfg, data.to("cuda"), lrs, seeds, torch.device("cuda"), full_eval=True)
    agree = sum((a.success, a.diverged, a.steps) == (b.success, b.diverged, b.steps)
                for a, b in zip(gpu, full, strict=True))
    print(f"cuda: early exit == full evaluations in verdict and step: {agree}/16")
    eager = train(cfg, data.to("cuda"), lrs, seeds, torch.device("cuda"), graphs=False)
    same = sum(g.success == e.success for g, e in zip(gpu, eager, strict=True))
    exact = sum(g == e for g, e in zip(gpu, eager, strict=True))
    print(f"cuda graphs vs eager: same success {same}/16, identical outcome {exact}/16")
    gdata = data.to("cuda")
    for depth, width in [(2, 64), (4, 256), (8, 1024)]:
        c = EstimateConfig(depth=depth, width=width, dataset="fashion-mnist", steps=500,
                           eval_every=50, threshold=0.999)
        for graphs in (False, True):
            train(c, gdata, [1e-4] * 2, [0, 1], graphs=graphs)
            torch.cuda.synchronize()
            t = time.perf_counter()
            train(c, gdata, [1e-4] * 40, [i % 5 for i in range(40)], graphs=graphs)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
            print(f"({depth}, {width}) 40 members x 500 steps, graphs={graphs}: {dt:.2f} s, "
                  f"{40 * 500 / dt:.0f} member-steps/s")


if __name__ == "__main__":
    main()
