"""GPU correctness: the CUDA engine against the CPU engine, a member alone against in a batch, the
early exit of evaluations against full evaluations, and CUDA graphs on against off.

    python benchmarks/gpu_check.py                     # needs a CUDA device
    python benchmarks/gpu_check.py --device cpu --quick --json check.json   # CPU smoke version

Exit status 0 when every check passes, 1 when one fails (each failure is printed), 2 on bad
input. On the CPU only the checks that need no CUDA run (early exit against full evaluations,
and a member alone against in a batch, which must be bit-identical there); the others are
recorded as skipped. `run()` is the same check for a caller (benchmarks/gpu_session.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from milr import EstimateConfig
from milr.data.lookup import load
from milr.engine.train import train

# Members whose verdict may differ between CUDA and the CPU, or between CUDA graphs and eager
# kernels, out of all checked: rates near a seed's η* are decided by their last bits (the H100
# run of 2026-11 saw 0 of 16 such flips on either comparison).
MAX_FLIPS = 2


def members(n: int) -> tuple[list[float], list[int]]:
    """n rates from far below to far above η* (factor 1.35 apart) over 4 seeds."""
    return [0.05 * 1.35**i for i in range(n)], [i % 4 for i in range(n)]


def verdict(o) -> tuple:
    """What an exact comparison compares: verdict and stopping step."""
    return o.success, o.diverged, o.steps


def settings(quick: bool, dataset: str | None) -> tuple[EstimateConfig, int, int | None]:
    """The checked cell, the number of members and the evaluation chunk: (3, 128), 16 and the
    engine's chunk on Fashion-MNIST, or a CPU-sized (2, 16), 8 and chunks of 256 on the
    Gaussian task (its 2000 validation examples in chunks of 1024 leave no room to stop early)."""
    if quick:
        return EstimateConfig(depth=2, width=16, dataset=dataset or "gaussians",
                              steps=200), 8, 256
    return EstimateConfig(depth=3, width=128, dataset=dataset or "fashion-mnist",
                          steps=600), 16, None


def compare_devices(cfg, data, lrs, seeds, on_cuda, chunk) -> dict:
    """CUDA against the CPU engine on the same members: verdicts, stopping steps, accuracies."""
    cpu = train(cfg, data, lrs, seeds, torch.device("cpu"), eval_chunk=chunk)
    both = list(zip(on_cuda, cpu, strict=True))
    together = [abs(g.final_acc - c.final_acc) for g, c in both
                if g.steps == c.steps and g.final_acc is not None and c.final_acc is not None]
    return {"same_success": sum(g.success == c.success for g, c in both),
            "same_steps": sum(g.steps == c.steps for g, c in both), "of": len(both),
            "max_acc_difference": max(together, default=0.0)}


def compare_alone(cfg, data, lrs, seeds, batch, device, chunk) -> dict:
    """A member trained alone against the same member inside the batch."""
    picked = (0, len(lrs) // 2, len(lrs) - 1)  # the lowest rate, one between, the highest
    pairs = [(train(cfg, data, [lrs[i]], [seeds[i]], device, eval_chunk=chunk)[0],
              batch[i]) for i in picked]
    return {"identical": sum(a == b for a, b in pairs),
            "same_success": sum(a.success == b.success for a, b in pairs), "of": len(pairs)}


def compare_early_exit(cfg, data, lrs, seeds, early, device, chunk) -> dict:
    """The early exit (the batch as trained) against every evaluation seeing every example: the
    same verdicts and stopping steps, exactly; and how many evaluations stopped early."""
    full = train(cfg, data, lrs, seeds, device, full_eval=True, eval_chunk=chunk)
    n = len(data.x_eval)
    return {"same": sum(verdict(a) == verdict(b) for a, b in zip(early, full, strict=True)),
            "of": len(full),
            "evaluations": sum(len(o.curve_seen) for o in early),
            "stopped_early": sum(s < n for o in early for s in o.curve_seen)}


def compare_graphs(cfg, data, lrs, seeds, with_graphs, device, chunk) -> dict:
    """CUDA graphs (the batch as trained) against eager kernels."""
    eager = train(cfg, data, lrs, seeds, device, graphs=False, eval_chunk=chunk)
    both = list(zip(with_graphs, eager, strict=True))
    return {"same_success": sum(g.success == e.success for g, e in both),
            "identical": sum(g == e for g, e in both), "of": len(both)}


def throughput(data, device) -> list[dict]:
    """Member-steps per second with and without CUDA graphs, 40 members far below η*."""
    out = []
    for depth, width in [(2, 64), (4, 256), (8, 1024)]:
        c = EstimateConfig(depth=depth, width=width, dataset=data.name, steps=500,
                           eval_every=50, threshold=0.999)
        for graphs in (False, True):
            train(c, data, [1e-4] * 2, [0, 1], graphs=graphs)
            torch.cuda.synchronize()
            t = time.perf_counter()
            train(c, data, [1e-4] * 40, [i % 5 for i in range(40)], graphs=graphs)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
            out.append({"cell": [depth, width], "graphs": graphs, "seconds": round(dt, 3),
                        "member_steps_per_s": round(40 * 500 / dt)})
    return out


def failures(s: dict, cuda: bool) -> list[str]:
    """The checks that failed, one line each."""
    bad = []
    e = s["early_exit_vs_full"]
    if e["same"] != e["of"]:
        bad.append(f"early_exit_vs_full: {e['of'] - e['same']} of {e['of']} "
                   "members differ in verdict or stopping step (it must be exact)")
    a = s["alone_vs_batch"]
    # bit-identical on the CPU; on CUDA cuBLAS picks other kernels for other batch counts
    if (a["identical"] if not cuda else a["same_success"]) != a["of"]:
        bad.append(f"alone_vs_batch: a member alone against in a batch: {a} (CPU: "
                   "bit-identical; CUDA: same success)")
    for key in ("cuda_vs_cpu", "graphs_vs_eager"):
        c = s.get(key)
        if isinstance(c, dict) and c["of"] - c["same_success"] > MAX_FLIPS:
            bad.append(f"{key}: {c['of'] - c['same_success']} of {c['of']} verdicts differ "
                       f"(allowed {MAX_FLIPS})")
    return bad


def run(device: str = "cuda", quick: bool = False, dataset: str | None = None,
        speed: bool = True) -> tuple[bool, dict]:
    """Every check that `device` allows: (passed, summary). `speed`: also time CUDA graphs."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    cfg, n, chunk = settings(quick, dataset)
    lrs, seeds = members(n)
    data = load(cfg.dataset).to(dev)
    batch = train(cfg, data, lrs, seeds, dev, eval_chunk=chunk)
    skipped = "skipped: needs CUDA"
    s = {"device": torch.cuda.get_device_name(dev) if cuda else "cpu", "dataset": cfg.dataset,
         "cell": [cfg.depth, cfg.width], "steps": cfg.steps, "members": n,
         "cuda_vs_cpu": compare_devices(cfg, load(cfg.dataset), lrs, seeds, batch, chunk)
         if cuda else skipped,
         "alone_vs_batch": compare_alone(cfg, data, lrs, seeds, batch, dev, chunk),
         "early_exit_vs_full": compare_early_exit(cfg, data, lrs, seeds, batch, dev, chunk),
         "graphs_vs_eager": compare_graphs(cfg, data, lrs, seeds, batch, dev, chunk) if cuda
         else skipped,
         "throughput": throughput(data, dev) if cuda and speed else skipped}
    s["failures"] = failures(s, cuda)
    s["passed"] = not s["failures"]
    return s["passed"], s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--quick", action="store_true", help="(2, 16) on the Gaussian task")
    ap.add_argument("--dataset", default=None, help="[fashion-mnist; gaussians with --quick]")
    ap.add_argument("--no-speed", action="store_true", help="skip the CUDA graphs timings")
    ap.add_argument("--json", default=None, help="also write the summary to this file")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda: no CUDA device here (use --device cpu)", file=sys.stderr)
        sys.exit(2)
    passed, summary = run(args.device, args.quick, args.dataset, not args.no_speed)
    for key, value in summary.items():
        if key not in ("failures", "passed"):
            print(f"{key}: {value}")
    for line in summary["failures"]:
        print(f"FAIL {line}")
    print(f"gpu_check: {'pass' if passed else 'FAIL'}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
