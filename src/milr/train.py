"""One batched training run: K (learning rate, seed) members of one (depth, width) -> K outcomes.

The data set stays on the device; minibatches are drawn by index from each member's own
permutations (from its seed), so no DataLoader is involved. Members stop at the first
evaluation that meets the threshold (success) or that sees a non-finite or exploded loss
(divergence), and are then dropped from the stacked tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from .config import EstimateConfig
from .data import Dataset
from .model import Ensemble, member_seed


@dataclass(frozen=True)
class Outcome:
    lr: float
    seed: int
    success: bool  # validation accuracy >= threshold at an evaluation, loss finite until then
    diverged: bool  # non-finite loss, or loss > divergence_factor * initial loss at an evaluation
    steps: int  # SGD steps run before the member stopped
    final_acc: float  # validation accuracy at the last evaluation
    peak_acc: float
    final_loss: float  # training loss of the last step run
    cancelled: bool = False  # stopped unfinished: a larger rate of the same seed had succeeded


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    if name in ("cpu", "cuda"):
        return torch.device(name)
    raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")


def batch_schedule(seed: int, n: int, steps: int, batch: int) -> torch.Tensor:
    """Indices of every minibatch of a run (steps, batch): consecutive epochs' permutations."""
    rng = np.random.default_rng(member_seed(seed, 1))
    epochs = math.ceil(steps * batch / n)
    order = np.concatenate([rng.permutation(n) for _ in range(epochs)])[: steps * batch]
    return torch.from_numpy(order.reshape(steps, batch))


@contextmanager
def _precision(name: str):
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def train(
    cfg: EstimateConfig,
    data: Dataset,
    lrs: list[float],
    seeds: list[int],
    device: torch.device | None = None,
    on_eval: Callable[[int, int], None] | None = None,
    cancel_dominated: bool = False,
) -> list[Outcome]:
    """Train one member per (lrs[k], seeds[k]) under cfg's protocol; data must be on `device`.

    With `cancel_dominated`, a success stops the unfinished members of the same seed with smaller
    rates (`cancelled=True`): η* is the upper edge, so their outcomes cannot change it, and the
    slowest members are exactly these.
    """
    assert len(lrs) == len(seeds) > 0
    device = device or data.x_train.device
    k = len(lrs)
    batch = min(cfg.batch_size, len(data.x_train))
    uniq = list(dict.fromkeys(seeds))
    sched = torch.stack([batch_schedule(s, len(data.x_train), cfg.steps, batch) for s in uniq])
    sched = sched.to(device)  # (S, T, B)
    which = torch.tensor([uniq.index(s) for s in seeds], device=device)  # member -> schedule row
    net = Ensemble.create(seeds, data.n_inputs, cfg.depth, cfg.width, data.classes, device)
    lr = torch.tensor(lrs, dtype=torch.float32, device=device).view(k, 1, 1)
    scales = [cfg.input_lr_scale] + [1.0] * cfg.depth

    alive = list(range(k))  # original index of each row still training
    results: list[Outcome | None] = [None] * k
    peak = [0.0] * k
    limit = None  # (K,) loss above which a member counts as diverged
    bad = torch.zeros(k, dtype=torch.bool, device=device)
    with _precision(cfg.precision):
        for t in range(cfg.steps):
            idx = sched[which, t]  # (K, B)
            loss = net.sgd_step(data.x_train[idx], data.y_train[idx], [lr * s for s in scales])
            if limit is None:
                limit = cfg.divergence_factor * loss.clamp(min=math.log(data.classes))
            bad |= ~torch.isfinite(loss)  # on the device: no host sync per step
            done_steps = t + 1
            if done_steps % cfg.eval_every and done_steps != cfg.steps:
                continue
            acc = net.accuracy(data.x_eval, data.y_eval).tolist()
            # Diverged: a non-finite loss at any step, or a loss still above the limit now (a
            # transient spike that has recovered by the evaluation is not divergence).
            bad_l = (bad | ~(loss <= limit)).tolist()
            loss_l = loss.tolist()
            keep = []
            for row, i in enumerate(alive):
                peak[i] = max(peak[i], acc[row])
                ok = not bad_l[row] and acc[row] >= cfg.threshold
                if bad_l[row] or ok or done_steps == cfg.steps:
                    results[i] = Outcome(lrs[i], seeds[i], ok, bad_l[row], done_steps,
                                         acc[row], peak[i], loss_l[row])
                else:
                    keep.append(row)
            if cancel_dominated:
                best = {}  # seed -> largest rate that has succeeded so far
                for o in results:
                    if o is not None and o.success:
                        best[o.seed] = max(best.get(o.seed, 0.0), o.lr)
                for row in [r for r in keep if lrs[alive[r]] < best.get(seeds[alive[r]], 0.0)]:
                    i = alive[row]
                    results[i] = Outcome(lrs[i], seeds[i], False, False, done_steps, acc[row],
                                         peak[i], loss_l[row], cancelled=True)
                    keep.remove(row)
            if on_eval is not None:
                on_eval(done_steps, len(keep))
            if not keep:
                break
            if len(keep) < len(alive):
                rows = torch.tensor(keep, device=device)
                net, which, lr, limit, bad = (
                    net.select(rows), which[rows], lr[rows], limit[rows], bad[rows]
                )
                alive = [alive[r] for r in keep]
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]
