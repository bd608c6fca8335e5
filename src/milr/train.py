"""One batched training run: K (learning rate, seed) members of one (depth, width) -> K outcomes.

The data set stays on the device; minibatches are drawn by index from each member's own
permutations (from its seed), so no DataLoader is involved. Members stop at the first
evaluation that meets the threshold (success) or that sees an exploded loss (divergence), or
within DIVERGENCE_CHECK steps of their first non-finite loss, and are then dropped from the
stacked tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .config import EstimateConfig
from .data import Dataset
from .model import Ensemble, member_seed

# A non-finite loss can never come back, so such a member is a failure whatever follows: it is
# stopped at the next multiple of this many steps instead of at the next evaluation. Divergent
# learning rates overflow within ~5-15 steps, and most trials of a search are divergent, so this
# removes most of their cost. A fixed count (not per step on a CPU, per graph on a GPU) keeps the
# recorded `steps` the same on every device.
DIVERGENCE_CHECK = 10


@dataclass(frozen=True)
class Outcome:
    lr: float
    seed: int
    success: bool  # validation accuracy >= threshold at an evaluation, loss finite until then
    diverged: bool  # non-finite loss, or loss > divergence_factor * initial loss at an evaluation
    steps: int  # SGD steps run before the member stopped
    final_acc: float | None  # validation accuracy at the last evaluation (None: diverged there)
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


@lru_cache(maxsize=64)
def batch_schedule(seed: int, n: int, steps: int, batch: int) -> torch.Tensor:
    """Indices of every minibatch of a run (steps, batch): consecutive epochs' permutations.

    Cached (every round of a search asks again for the same seeds); callers must not modify it.
    """
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


class _Steps:
    """The SGD steps of the present rows, eagerly or as a replayed CUDA graph of DIVERGENCE_CHECK
    steps.

    A small cell is launch-bound on a GPU (~60 kernels a step); a CUDA graph replays them
    without Python or launch overhead. A graph is tied to the number of rows, so finished
    members are only compacted away once they make up a quarter of the rows (until then their
    learning rate is set to zero and their results are ignored).
    """

    def __init__(self, cfg: EstimateConfig, data: Dataset, net: Ensemble, sched: torch.Tensor,
                 which: torch.Tensor, lr: torch.Tensor, graphs: bool):
        self.cfg, self.data, self.net, self.sched, self.which = cfg, data, net, sched, which
        scales = [cfg.input_lr_scale] + [1.0] * cfg.depth
        self.lrs = [lr * s for s in scales]  # (K, 1, 1) per layer, updated in place
        self.t = torch.zeros(1, dtype=torch.long, device=sched.device)  # step counter
        self.done = 0  # the same count on the host, to avoid a sync
        self.bad = torch.zeros(len(which), dtype=torch.bool, device=sched.device)
        self.limit: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None
        self.graphs = graphs
        self.graph: torch.cuda.CUDAGraph | None = None

    def _step(self) -> torch.Tensor:
        idx = self.sched.index_select(1, self.t)[self.which, 0]  # (K, B)
        loss = self.net.sgd_step(self.data.x_train[idx], self.data.y_train[idx], self.lrs)
        self.bad |= ~torch.isfinite(loss)  # on the device: no host sync per step
        self.t += 1
        self.done += 1
        return loss

    def run(self, n: int) -> torch.Tensor:
        """Run n steps; returns the loss (K,) of the last one, before its update."""
        if self.limit is None:  # first step eagerly: it fixes the divergence limit
            self.loss = self._step()
            self.limit = self.cfg.divergence_factor * self.loss.clamp(
                min=math.log(self.data.classes))
            n -= 1
        if self.graphs and n == DIVERGENCE_CHECK and self.done > 1:
            if self.graph is None:
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    for _ in range(n):
                        self.loss = self._step()
                self.done -= n  # capturing ran nothing
            self.graph.replay()
            self.done += n
        else:
            for _ in range(n):
                self.loss = self._step()
        return self.loss

    def retire(self, rows: list[int]) -> None:
        """Stop updating these rows (their outcome is recorded already)."""
        idx = torch.tensor(rows, device=self.t.device)
        for lr in self.lrs:
            lr.index_fill_(0, idx, 0.0)

    def keep(self, rows: list[int]) -> None:
        """Compact to these rows; a new graph is captured for the new size."""
        idx = torch.tensor(rows, device=self.t.device)
        self.net = self.net.select(idx)
        self.which, self.bad, self.limit = self.which[idx], self.bad[idx], self.limit[idx]
        self.lrs = [lr[idx] for lr in self.lrs]
        self.graph = None


def _accuracy(net: Ensemble, data: Dataset, wanted: list[bool]) -> list[float | None]:
    """Validation accuracy of the wanted rows (None for the others: diverged or finished rows
    need no evaluation, which is a third of the work on a CPU)."""
    rows = [r for r, w in enumerate(wanted) if w]
    out: list[float | None] = [None] * len(wanted)
    if rows:
        sub = net if len(rows) == len(wanted) else net.select(
            torch.tensor(rows, device=data.x_eval.device))
        for r, a in zip(rows, sub.accuracy(data.x_eval, data.y_eval).tolist(), strict=True):
            out[r] = a
    return out


class _Book:
    """The outcomes of a run's members as they finish, and the rows of those still training."""

    def __init__(self, cfg: EstimateConfig, data: Dataset, steps: _Steps, lrs: list[float],
                 seeds: list[int]):
        self.cfg, self.data, self.steps, self.lrs, self.seeds = cfg, data, steps, lrs, seeds
        self.rows = list(range(len(lrs)))  # original member index of each row present
        self.results: list[Outcome | None] = [None] * len(lrs)
        self.peak = [0.0] * len(lrs)
        self.acc: list[float | None] = [None] * len(lrs)  # by row, at the last evaluation

    def _finish(self, row: int, done: int, loss: float, success=False, diverged=False,
                cancelled=False) -> None:
        i = self.rows[row]
        self.results[i] = Outcome(self.lrs[i], self.seeds[i], success, diverged, done,
                                  self.acc[row], self.peak[i], loss, cancelled)

    def nonfinite(self, loss: torch.Tensor, done: int) -> None:
        """Between evaluations only a non-finite loss ends a member (one small sync)."""
        bad = self.steps.bad.tolist()
        new = [r for r, i in enumerate(self.rows) if bad[r] and self.results[i] is None]
        if new:
            loss_l = loss.tolist()
            for row in new:
                self.acc[row] = None
                self._finish(row, done, loss_l[row], diverged=True)

    def evaluate(self, loss: torch.Tensor, done: int) -> None:
        """The check at an evaluation: record the members that succeeded, diverged or ran out.

        Diverged: a non-finite loss at any step, or a loss still above the limit now (a
        transient spike that has recovered by the evaluation is not divergence).
        """
        bad = (self.steps.bad | ~(loss <= self.steps.limit)).tolist()
        loss_l = loss.tolist()
        live = [self.results[i] is None for i in self.rows]
        self.acc = _accuracy(self.steps.net, self.data,
                             [w and not b for w, b in zip(live, bad, strict=True)])
        for row, i in enumerate(self.rows):
            if not live[row]:
                continue
            self.peak[i] = max(self.peak[i], self.acc[row] or 0.0)
            ok = not bad[row] and self.acc[row] >= self.cfg.threshold
            if bad[row] or ok or done == self.cfg.steps:
                self._finish(row, done, loss_l[row], success=ok, diverged=bad[row])
        self.loss_l = loss_l

    def cancel_dominated(self, done: int) -> None:
        """Stop the unfinished members below a success of their own seed (see `train`)."""
        best: dict[int, float] = {}  # seed -> largest rate that has succeeded so far
        for o in self.results:
            if o is not None and o.success:
                best[o.seed] = max(best.get(o.seed, 0.0), o.lr)
        for row, i in enumerate(self.rows):
            if self.results[i] is None and self.lrs[i] < best.get(self.seeds[i], 0.0):
                self._finish(row, done, self.loss_l[row], cancelled=True)

    def live(self) -> int:
        return sum(self.results[i] is None for i in self.rows)

    def drop_finished(self) -> None:
        """Compact the finished rows away, or on a graph only retire them until they make up a
        quarter of the rows (recapturing costs more than a few idle rows)."""
        live = [r for r, i in enumerate(self.rows) if self.results[i] is None]
        gone = len(self.rows) - len(live)
        if not gone:
            return
        if not self.steps.graphs or gone >= max(1, len(self.rows) // 4):
            self.steps.keep(live)
            self.rows = [self.rows[r] for r in live]
            self.acc = [self.acc[r] for r in live]
        else:
            self.steps.retire([r for r, i in enumerate(self.rows) if self.results[i] is not None])


def train(
    cfg: EstimateConfig,
    data: Dataset,
    lrs: list[float],
    seeds: list[int],
    device: torch.device | None = None,
    on_eval: Callable[[int, int], None] | None = None,
    cancel_dominated: bool = False,
    graphs: bool | None = None,
) -> list[Outcome]:
    """Train one member per (lrs[k], seeds[k]) under cfg's protocol; data must be on `device`.

    With `cancel_dominated`, a success stops the unfinished members of the same seed with smaller
    rates (`cancelled=True`): η* is the upper edge, so their outcomes cannot change it, and the
    slowest members are exactly these. `graphs` (default: on CUDA) replays CUDA graphs.
    """
    assert len(lrs) == len(seeds) > 0
    device = device or data.x_train.device
    k = len(lrs)
    batch = min(cfg.batch_size, len(data.x_train))
    uniq = list(dict.fromkeys(seeds))
    sched = torch.stack([batch_schedule(s, len(data.x_train), cfg.steps, batch) for s in uniq])
    which = torch.tensor([uniq.index(s) for s in seeds], device=device)  # member -> schedule row
    net = Ensemble.create(seeds, data.n_inputs, cfg.depth, cfg.width, data.classes, device)
    lr = torch.tensor(lrs, dtype=torch.float32, device=device).view(k, 1, 1)
    graphs = device.type == "cuda" if graphs is None else graphs
    steps = _Steps(cfg, data, net, sched.to(device), which, lr, graphs)
    book = _Book(cfg, data, steps, lrs, seeds)
    done = 0
    with _precision(cfg.precision):
        while done < cfg.steps:
            n = min(DIVERGENCE_CHECK, cfg.eval_every - done % cfg.eval_every, cfg.steps - done)
            loss = steps.run(n)
            done += n
            if done % cfg.eval_every and done < cfg.steps:
                book.nonfinite(loss, done)
            else:
                book.evaluate(loss, done)
                if cancel_dominated:
                    book.cancel_dominated(done)
                if on_eval is not None:
                    on_eval(done, book.live())
            if not book.live():
                break
            book.drop_finished()
    assert all(r is not None for r in book.results)
    return book.results  # type: ignore[return-value]
