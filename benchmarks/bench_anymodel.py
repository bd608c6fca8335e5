"""What `--model` costs: member-steps per second of the torch.func engine (engine/func.py)
against the built-in batched engine on the same MLP cell (examples/mlp.py: the same network
and initial weights), and of examples/cnn.py, on Fashion-MNIST-shaped random data.

    OMP_NUM_THREADS=1 python benchmarks/bench_anymodel.py --cell 4x256 --members 8

Every member trains the whole budget under criterion stable at a rate far below η* (nothing is
evaluated, nothing stops early), so what is timed is the steps. The variants run in turn,
`--repeats` times, interleaved so that a machine busy with other work slows them alike; the best
time of each is kept.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from milr import EstimateConfig
from milr.data.formats import Dataset
from milr.engine.func import FuncTrainer
from milr.engine.train import BatchedTrainer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def images(n: int = 4096) -> Dataset:
    """Random standardised 1 × 28 × 28 "images" with 10 labels (only the speed is measured)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 784, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    data = Dataset("random-images", x, y, x[:512], y[:512], 10)
    shaped = copy.copy(data)  # the shape a data set of images carries (its in_shape)
    object.__setattr__(shaped, "in_shape", (1, 28, 28))
    return shaped


def timed(make_trainer, members: int, steps: int) -> float:
    """Wall time of `members` members (4 per seed) trained together for the whole budget."""
    trainer = make_trainer()
    trainer.admit([1e-3] * members, [i // 4 for i in range(members)])
    start = time.perf_counter()
    while trainer.pending:
        for _, outcome in trainer.advance():
            assert outcome.steps == steps, "a member stopped early"
    return time.perf_counter() - start


def cnn(cell: str, common: dict, data: Dataset):
    """A maker of trainers of examples/cnn.py at `cell` (depth x width)."""
    depth, width = (int(v) for v in cell.split("x"))
    return lambda: FuncTrainer(EstimateConfig(depth=depth, width=width, **common,
                                              model=f"{EXAMPLES / 'cnn.py'}:make"), data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="4x256", help="the MLP's depth x width")
    ap.add_argument("--cnn", default="2x16,1x4",
                    help="the CNN's cells, depth x width (blocks x channels), comma-separated")
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = images()
    depth, width = (int(v) for v in args.cell.split("x"))
    common = dict(criterion="stable", steps=args.steps, device="cpu")
    mlp = dict(depth=depth, width=width, **common)
    variants = {
        f"built-in MLP {args.cell}": lambda: BatchedTrainer(
            EstimateConfig(**mlp, input_lr_scale=1.0), data),
        f"--model examples/mlp.py {args.cell}": lambda: FuncTrainer(
            EstimateConfig(**mlp, model=f"{EXAMPLES / 'mlp.py'}:make"), data),
    } | {f"--model examples/cnn.py {cell}": cnn(cell, common, data)
         for cell in args.cnn.split(",")}
    best = {name: float("inf") for name in variants}
    for make in variants.values():  # a warm-up of each, not timed
        timed(make, args.members, args.steps)
    for _ in range(args.repeats):
        for name, make in variants.items():
            best[name] = min(best[name], timed(make, args.members, args.steps))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{args.members} members x {args.steps} steps, best of {args.repeats}")
    for name, t in best.items():
        print(f"{name:36s} {args.members * args.steps / t:9.0f} member-steps/s")


if __name__ == "__main__":
    main()
