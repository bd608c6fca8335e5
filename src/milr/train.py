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


class _Steps:
    """The SGD steps of the present rows, eagerly or as one replayed CUDA graph per interval.

    A small cell is launch-bound on a GPU (~60 kernels a step); a CUDA graph of a whole
    evaluation interval replays them without Python or launch overhead. A graph is tied to the
    number of rows, so finished members are only compacted away once they make up a quarter of
    the rows (until then their learning rate is set to zero and their results are ignored).
    """

    def __init__(self, cfg: EstimateConfig, data: Dataset, net: Ensemble, sched: torch.Tensor,
                 which: torch.Tensor, lr: torch.Tensor, graphs: bool):
        self.cfg, self.data, self.net, self.sched, self.which = cfg, data, net, sched, which
        scales = [cfg.input_lr_scale] + [1.0] * cfg.depth
        self.lrs = [lr * s for s in scales]  # (K, 1, 1) per layer, updated in place
        self.t = torch.zeros(1, dtype=torch.long, device=sched.device)  # step counter
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
        return loss

    def run(self, n: int) -> torch.Tensor:
        """Run n steps; returns the loss (K,) of the last one, before its update."""
        if self.limit is None:  # first step eagerly: it fixes the divergence limit
            self.loss = self._step()
            self.limit = self.cfg.divergence_factor * self.loss.clamp(
                min=math.log(self.data.classes))
            n -= 1
        if n and self.graphs and n == self.cfg.eval_every and self.t.item() > 1:
            if self.graph is None:
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    for _ in range(n):
                        self.loss = self._step()
            self.graph.replay()
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

    rows = list(range(k))  # original member index of each row present
    results: list[Outcome | None] = [None] * k
    peak = [0.0] * k
    done_steps = 0
    with _precision(cfg.precision):
        while done_steps < cfg.steps:
            n = min(cfg.eval_every - done_steps % cfg.eval_every, cfg.steps - done_steps)
            loss = steps.run(n)
            done_steps += n
            # Diverged: a non-finite loss at any step, or a loss still above the limit now (a
            # transient spike that has recovered by the evaluation is not divergence).
            bad_l = (steps.bad | ~(loss <= steps.limit)).tolist()
            loss_l = loss.tolist()
            acc = _accuracy(steps.net, data, [results[i] is None and not bad_l[r]
                                              for r, i in enumerate(rows)])
            for row, i in enumerate(rows):
                if results[i] is not None:
                    continue
                peak[i] = max(peak[i], acc[row] or 0.0)
                ok = not bad_l[row] and acc[row] >= cfg.threshold
                if bad_l[row] or ok or done_steps == cfg.steps:
                    results[i] = Outcome(lrs[i], seeds[i], ok, bad_l[row], done_steps,
                                         acc[row], peak[i], loss_l[row])
            if cancel_dominated:
                best = {}  # seed -> largest rate that has succeeded so far
                for o in results:
                    if o is not None and o.success:
                        best[o.seed] = max(best.get(o.seed, 0.0), o.lr)
                for row, i in enumerate(rows):
                    if results[i] is None and lrs[i] < best.get(seeds[i], 0.0):
                        results[i] = Outcome(lrs[i], seeds[i], False, False, done_steps,
                                             acc[row], peak[i], loss_l[row], cancelled=True)
            live = [r for r, i in enumerate(rows) if results[i] is None]
            if on_eval is not None:
                on_eval(done_steps, len(live))
            if not live:
                break
            if len(live) < len(rows):
                if not steps.graphs or len(rows) - len(live) >= max(1, len(rows) // 4):
                    steps.keep(live)
                    rows = [rows[r] for r in live]
                else:
                    steps.retire([r for r, i in enumerate(rows) if results[i] is not None])
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]
