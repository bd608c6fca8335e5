"""Batched training: (learning rate, seed) members of one (depth, width) -> their outcomes.

The data set stays on the device; minibatches are drawn by index from each member's own
permutations (from its seed), so no DataLoader is involved. Members stop at the first
evaluation that meets the threshold (success) or that sees an exploded loss (divergence), or
within `nonfinite_every` steps of their first non-finite loss, and are then dropped from the
stacked tensors. What a check saw of a run (`Check`) is judged in one place (`verdict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import NamedTuple

import torch

from ..base.config import EstimateConfig
from ..base.cost import flops_per_member_step
from ..base.device import matmul_precision
from ..base.results import Outcome, ScanRun
from ..base.seeding import batch_schedule
from ..data.formats import Dataset
from .model import Arch, Ensemble, Layout, Optim, Rates, loss_value, zero_output_loss

# How a check can end a run (`verdict`): it succeeded, diverged, or failed (too slow).
SUCCESS, DIVERGED, FAILED = "success", "diverged", "failed"


class Check(NamedTuple):
    """What one check saw of a training run: all that its `verdict` reads."""

    bad_step: bool  # some step's loss was non-finite (divergence_check "step": or over the limit)
    at_stop: bool  # an evaluation (accuracy) or the end of the budget
    end: bool  # the budget is spent
    over_limit: bool  # at a stop: this step's loss is above the limit (or NaN)
    finite: bool | None = None  # accuracy, evaluated: every validation output is finite
    met: bool | None = None  # accuracy, evaluated: the threshold is met
    after_ok: bool | None = None  # stable, at the end: loss after the last update finite, <= limit


def verdict(criterion: str, check: Check) -> str | None:
    """docs/protocol.md §4 for one run at one check: SUCCESS, DIVERGED or FAILED where the run
    ends here, None where it trains on."""
    if check.bad_step:  # a non-finite loss at any step (under "step" also one over the limit)
        return DIVERGED
    if not check.at_stop:  # between stops nothing else is judged
        return None
    if check.over_limit:  # the loss of the last step before an evaluation or the end
        return DIVERGED
    if criterion == "stable":  # the whole budget, and the loss after the last update too
        return SUCCESS if check.after_ok else DIVERGED
    if not check.finite:  # validation outputs that overflowed
        return DIVERGED
    if check.met:  # the first evaluation that meets the threshold
        return SUCCESS
    return FAILED if check.end else None  # neither by the end of the budget: too slow


@dataclass
class _Member:
    key: int
    lr: float
    seed: int
    steps_run: int = 0
    peak: float | None = None
    acc: float | None = None  # validation accuracy at its last evaluation
    outcome: Outcome | None = None
    # (step, accuracy, loss, validation examples seen) per curve point: see Outcome
    curve: list[tuple[int, float | None, float, int]] = field(default_factory=list)
    # full_budget: where the threshold was first met, and what each evaluation saw (ScanRun)
    met_step: int | None = None
    since: int = 0  # the step of the last evaluation: the mean training loss is taken since
    train_loss: float | None = None
    val_loss: float | None = None
    # (step, mean training loss since the last evaluation, validation loss, accuracy)
    points: list[tuple[int, float, float, float]] = field(default_factory=list)


# Validation examples per forward pass of an evaluation (benchmarks/README.md: the early exit
# against chunk size).
EVAL_CHUNK = 1024


class BatchedTrainer:
    """Members of one (depth, width) training together as one stacked ensemble, which may join
    between chunks of steps and leave as they finish.

    Each member runs on its own step count and schedule and is evaluated at its own multiples
    of `eval_every`, so its outcome does not depend on when it joined or on who trains beside
    it, and a search may add a seed's next learning rates as soon as that seed's previous ones
    are done (`search.search`'s `pipeline`). With `cancel_dominated`, a success stops the
    unfinished members of the same seed with smaller rates (`cancelled=True`): η* is the upper
    edge, so their outcomes cannot change it.

    It implements `search.Trainer` (`pending`, `admit`, `advance`), the one seam through which the
    search, the benchmarks and the tests' fakes train.

    `graphs` (default: on CUDA): the steps of a chunk replay as one CUDA graph (a small cell is
    launch-bound, ~60 kernels a step); `gpu_check.py` compares it with eager execution. A graph
    is tied to the rows present, so with `retire_in_place` (default: with graphs) finished
    members are compacted away only once they make up a quarter of the rows; until then their
    learning rate is zero and their results are ignored. A new graph is captured whenever
    members join. Neither option changes any outcome.

    `dtype`: of the weights, optimizer state and rates (float32; the tests run float64 against
    torch.optim, on data of that dtype).

    `full_eval` (default off): every evaluation sees the whole validation set. Off, an
    evaluation under criterion accuracy stops for a member as soon as its verdict (threshold
    met or not) is certain and its outputs are proven finite (`_evaluate`): no verdict and no
    stopping step changes, but the accuracy a curve records is then that of the validation
    examples seen, and `Outcome.curve_seen` says how many. `eval_chunk`: validation examples
    per forward pass of an evaluation (the granularity of the early exit).

    `full_budget` (a scan, `milr scan`): every member trains the whole budget whatever its
    verdicts; only a divergence (the same `verdict`) stops it. Every eval_every steps and at
    the end, under either criterion, it is evaluated in full (loss and accuracy), and its
    outcome is a `ScanRun`: what the search's run would have concluded (`met_step`) and the
    final training loss, validation loss and accuracy, with their curves.
    """

    def __init__(self, cfg: EstimateConfig, data: Dataset, device: torch.device | None = None,
                 cancel_dominated: bool = False, graphs: bool | None = None,
                 retire_in_place: bool | None = None, dtype: torch.dtype = torch.float32,
                 full_eval: bool = False, eval_chunk: int = EVAL_CHUNK,
                 full_budget: bool = False):
        if full_budget and cancel_dominated:
            raise ValueError("a full-budget run is never cancelled: cancel_dominated must be off")
        self.cfg, self.data, self.cancel, self.dtype = cfg, data, cancel_dominated, dtype
        self.full_budget = full_budget
        self.eval_chunk = eval_chunk
        self.device = device or data.x_train.device
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        if self.graphs and self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.retire_in_place = self.graphs if retire_in_place is None else retire_in_place
        if cfg.batch_size > len(data.x_train):
            raise ValueError(f"batch_size {cfg.batch_size} exceeds the {len(data.x_train)} "
                             f"training examples of {data.name}")
        self.batch = cfg.batch_size
        self.members: list[_Member] = []  # one per row of the stacked tensors
        self.best: dict[int, float] = {}  # seed -> largest rate that has succeeded
        self.schedule_row: dict[int, int] = {}  # seed -> its row of self.sched
        # One batch more than the budget: the loss after the last update is taken on it.
        self.sched = torch.empty(0, cfg.steps + 1, self.batch, dtype=torch.long,
                                 device=self.device)
        self.loss_floor = cfg.initial_loss_floor * zero_output_loss(cfg.loss, data.classes)
        self.layout = Layout.of(cfg, data.n_inputs)
        self.optim = Optim.of(cfg)
        self.decay = [cfg.weight_decay * s for pair in zip(self.layout.weight_wd,
                                                           self.layout.bias_wd, strict=True)
                      for s in pair]
        self.track_max = cfg.criterion == "stable" or cfg.divergence_check == "step"
        # full_budget evaluates under stable too, in full, where nothing can meet a threshold
        self.need, self.radius = len(data.x_eval) + 1, math.inf
        if cfg.criterion == "accuracy":
            self.need = needed(len(data.x_eval), cfg.threshold)
            # the largest 2-norm of a validation input (inf: no early exit)
            self.radius = math.inf if full_eval or full_budget or not len(data.x_eval) else float(
                torch.linalg.vector_norm(data.x_eval, dim=1, dtype=torch.float64).max())
        self.next_key = 0
        self.warm = False  # a first step has run eagerly (CUDA graphs need warmed-up libraries)
        self._empty()

    def _empty(self) -> None:
        dev = self.device
        self.net: Ensemble | None = None
        self.which = torch.empty(0, dtype=torch.long, device=dev)  # row -> schedule row
        self.t = torch.empty(0, dtype=torch.long, device=dev)  # row -> steps run
        # row -> diverged at a step: a non-finite loss, or with divergence_check "step" a loss
        # above the limit
        self.bad = torch.empty(0, dtype=torch.bool, device=dev)
        self.limit = torch.empty(0, device=dev)  # row -> divergence limit (inf before step 1)
        self.max_loss = torch.empty(0, device=dev)  # row -> largest loss (see Outcome.max_loss)
        self.max_step = torch.empty(0, dtype=torch.long, device=dev)  # row -> its step
        self.first_bad = torch.empty(0, dtype=torch.long, device=dev)  # row -> step (0: none)
        # row -> a run of exactly also_steps steps would have failed (stable; see _step)
        self.also_bad = torch.empty(0, dtype=torch.bool, device=dev)
        # full_budget: row -> the training losses summed since its last evaluation
        self.loss_sum = torch.empty(0, dtype=torch.float64, device=dev)
        self.lr = torch.empty(0, 1, 1, device=dev, dtype=self.dtype)
        self._rebuilt()

    def _rebuilt(self) -> None:
        """After the rows changed: the rates at the layout's scales anew (one tensor per
        distinct scale, which a CUDA graph reads in place), and no graph for them yet."""
        self.rates = self._rates(self.lr)
        self.graph: torch.cuda.CUDAGraph | None = None

    # What a network is (`func.FuncTrainer` trains a module of one's own through these three)
    FUSED = True  # plain SGD may update a layer without forming its gradient (`SgdUpdate`)

    def _rates(self, lr: torch.Tensor) -> Rates:
        """The rates of members at base rates lr (K, 1, 1): the layout's per-layer scales."""
        return Rates.of(self.layout, lr)

    def _members(self, seeds: list[int]) -> Ensemble:
        """New members, one per seed, at their initialisation with zero optimizer state."""
        cfg = self.cfg
        return Ensemble.create(seeds, self.data.n_inputs, cfg.depth, cfg.width,
                               self.data.classes, self.device, cfg.output_init, self.layout,
                               self.optim.slots, self.dtype, Arch.of(cfg))

    def step_flops(self, members: int) -> float:
        """The matmul FLOPs of one step of `members` members (`estimation.training_threads`)."""
        return members * flops_per_member_step(self.cfg, self.data.n_inputs, self.data.classes)

    @property
    def pending(self) -> int:
        return sum(m.outcome is None for m in self.members)

    def admit(self, lrs: list[float], seeds: list[int]) -> list[int]:
        """Add one member per (lrs[k], seeds[k]); returns their keys for `advance`'s results."""
        cfg, dev = self.cfg, self.device
        new = [_Member(self.next_key + j, float(lr), s)
               for j, (lr, s) in enumerate(zip(lrs, seeds, strict=True))]
        self.next_key += len(new)
        for s in dict.fromkeys(seeds):
            if s not in self.schedule_row:
                self.schedule_row[s] = len(self.sched)
                sched = batch_schedule(s, len(self.data.x_train), cfg.steps + 1, self.batch)
                self.sched = torch.cat([self.sched, sched.to(dev)[None]])
        net = self._members(list(seeds))
        k = len(new)
        self.net = net if self.net is None else type(net).cat([self.net, net])
        self.which = torch.cat([self.which, torch.tensor([self.schedule_row[s] for s in seeds],
                                                         device=dev)])
        self.t = torch.cat([self.t, torch.zeros(k, dtype=torch.long, device=dev)])
        self.bad = torch.cat([self.bad, torch.zeros(k, dtype=torch.bool, device=dev)])
        self.limit = torch.cat([self.limit, torch.full((k,), math.inf, device=dev)])
        self.max_loss = torch.cat([self.max_loss, torch.full((k,), -math.inf, device=dev)])
        self.max_step = torch.cat([self.max_step, torch.zeros(k, dtype=torch.long, device=dev)])
        self.first_bad = torch.cat([self.first_bad,
                                    torch.zeros(k, dtype=torch.long, device=dev)])
        self.also_bad = torch.cat([self.also_bad, torch.zeros(k, dtype=torch.bool, device=dev)])
        self.loss_sum = torch.cat([self.loss_sum, torch.zeros(k, dtype=torch.float64,
                                                              device=dev)])
        self.lr = torch.cat([self.lr, torch.tensor(lrs, dtype=self.dtype,
                                                   device=dev).view(k, 1, 1)])
        self.members += new
        self._rebuilt()
        return [m.key for m in new]

    def _step(self) -> torch.Tensor:
        cfg = self.cfg
        idx = self.sched[self.which, self.t.clamp(max=cfg.steps - 1)]  # (K, B)
        x, y, rates = self.data.x_train[idx], self.data.y_train[idx], self.rates
        if cfg.warmup_steps:  # step t = 1, 2, ... runs at lr · min(1, t / warmup_steps)
            warm = ((self.t + 1).to(self.lr.dtype) / cfg.warmup_steps).clamp_(max=1.0)
            rates = rates.times(warm.view(-1, 1, 1))
        loss = self.net.step(x, y, self.optim.rule(rates, self.t, self.decay, self.FUSED),
                             cfg.loss)
        # The first step's loss fixes each member's divergence limit; all on the device, no
        # host sync per step.
        first = cfg.divergence_factor * loss.clamp(min=self.loss_floor)
        self.limit.copy_(torch.where(self.t == 0, first, self.limit))
        bad = ~torch.isfinite(loss)  # an infinite first loss makes an infinite limit
        if cfg.divergence_check == "step":
            bad |= loss > self.limit
        self.first_bad.copy_(torch.where(bad & (self.first_bad == 0), self.t + 1,
                                         self.first_bad))
        self.bad |= bad
        if cfg.also_steps and cfg.criterion == "stable":
            self._also_check(loss, bad)
        if self.track_max:  # in place: a CUDA graph replays on these very tensors
            seen = torch.nan_to_num(loss, nan=math.inf, posinf=math.inf)
            higher = seen > self.max_loss
            self.max_loss.copy_(torch.where(higher, seen, self.max_loss))
            self.max_step.copy_(torch.where(higher, self.t + 1, self.max_step))
        if self.full_budget:
            self.loss_sum += loss
        self.t += 1
        return loss

    def _also_check(self, loss: torch.Tensor, bad: torch.Tensor) -> None:
        """What a run of exactly b = also_steps steps would have checked (`_check_stable` on a
        budget of b), from this step (t + 1) of the longer run, which shares its first b steps
        and its (b + 1)-th batch: a bad step up to b, the factor rule at step b, and the loss
        after the last update (step b + 1's, before its update) finite and within the limit."""
        b, step = self.cfg.also_steps, self.t + 1
        fails = (bad & (step <= b)) | ((step == b) & ~(loss <= self.limit)) \
            | ((step == b + 1) & ~(torch.isfinite(loss) & (loss <= self.limit)))
        self.also_bad |= fails

    def _run(self, n: int) -> torch.Tensor:
        """Run n steps of every row; returns the loss (K,) of the last, before its update."""
        if self.graphs and n == self.cfg.nonfinite_every and self.warm:
            if self.graph is None:
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    for _ in range(n):
                        self.loss = self._step()
            self.graph.replay()
            return self.loss
        for _ in range(n):
            loss = self._step()
            self.warm = True
        return loss

    def advance(self) -> list[tuple[int, Outcome]]:
        """Train every live member up to its next evaluation or `nonfinite_every` steps, whichever
        comes first; returns (key, outcome) of the members that finished."""
        cfg = self.cfg
        live = [m for m in self.members if m.outcome is None]
        assert live, "advance() with no member training"
        n = min(cfg.nonfinite_every, *(self._next_stop(m) - m.steps_run for m in live))
        with matmul_precision(cfg.precision):
            loss = self._run(n)
            for m in self.members:
                m.steps_run += n
            finished = self._check(loss)
        self._drop_finished()
        return [(m.key, m.outcome) for m in finished]

    def _next_stop(self, m: _Member) -> int:
        """The step of m's next verdict: its next evaluation (accuracy), or the end of the
        budget (stable: nothing is evaluated before it)."""
        cfg = self.cfg
        if cfg.criterion == "stable" and not self.full_budget:
            return cfg.steps
        return min(cfg.steps, (m.steps_run // cfg.eval_every + 1) * cfg.eval_every)

    def _at_stop(self, m: _Member) -> bool:
        cfg = self.cfg
        return m.steps_run >= cfg.steps or (cfg.criterion == "accuracy"
                                            and m.steps_run % cfg.eval_every == 0)

    def _loss_after_budget(self, wanted: list[bool]
                           ) -> tuple[list[float | None], list[bool | None]]:
        """The loss after the last update of the wanted rows, on the batch the next step would
        take (an overflow in the very last update must not pass as stable), and whether it is
        finite and within the row's limit; None for the other rows."""
        rows = [r for r, w in enumerate(wanted) if w]
        out: list[float | None] = [None] * len(wanted)
        ok: list[bool | None] = [None] * len(wanted)
        if rows:
            idx = torch.tensor(rows, device=self.device)
            batch = self.sched[self.which[idx], self.cfg.steps]  # (k, B)
            with torch.no_grad():
                logits = self.net.select(idx).forward(self.data.x_train[batch])
                values = loss_value(logits, self.data.y_train[batch], self.cfg.loss).tolist()
            limit = self.limit.tolist()
            for r, v in zip(rows, values, strict=True):
                out[r], ok[r] = v, math.isfinite(v) and v <= limit[r]
        return out, ok

    def _finish(self, m: _Member, loss: float, **verdict) -> None:
        record, extra = (ScanRun, self._scan_fields(m, verdict.get("diverged", False))
                         ) if self.full_budget else (Outcome, {})
        m.outcome = record(m.lr, m.seed, steps=m.steps_run, final_acc=m.acc, peak_acc=m.peak,
                            final_loss=loss, **{"success": False, "diverged": False, **verdict},
                            curve_steps=tuple(p[0] for p in m.curve),
                            curve_acc=tuple(p[1] for p in m.curve),
                            curve_loss=tuple(p[2] for p in m.curve),
                            curve_seen=tuple(p[3] for p in m.curve), eval_examples=(
                                len(self.data.x_eval) if self.cfg.criterion == "accuracy"
                                else None), **extra)

    @staticmethod
    def _scan_fields(m: _Member, diverged: bool) -> dict:
        """A full-budget member's ScanRun fields beyond Outcome's."""
        ends = not diverged and m.points and m.points[-1][0] == m.steps_run  # evaluated last
        return dict(met_step=m.met_step, train_loss=m.train_loss,
                    val_loss=m.points[-1][2] if ends else None,
                    val_acc=m.points[-1][3] if ends else None,
                    **{name: tuple(p[i] for p in m.points) for i, name in enumerate(
                        ("eval_steps", "eval_train_loss", "eval_val_loss", "eval_val_acc"))})

    def _point_due(self, m: _Member) -> bool:
        """Under stable (no evaluations): whether this check is m's first at or after its next
        multiple of eval_every, where its loss curve takes a point."""
        last = m.curve[-1][0] if m.curve else 0
        return m.steps_run // self.cfg.eval_every > last // self.cfg.eval_every

    def _check(self, loss: torch.Tensor) -> list[_Member]:
        """Each training member's `verdict` on what this check saw of it, its accuracy and curve
        point (`_observe`), and its outcome where the verdict ends it. Then, with
        `cancel_dominated`, the members a success has dominated stop, and the finished ones get
        their largest loss. Returns the members that finished here."""
        cfg, open_, n = self.cfg, self._open(), len(self.members)
        at_stop = [m.outcome is None and self._at_stop(m) for m in self.members]
        bad_step = self.bad.tolist()  # a non-finite loss (or, under "step", one too large)
        over = (~(loss <= self.limit)).tolist() if any(at_stop) else [False] * n
        # the evidence a verdict needs beyond the losses, for the rows at a stop that need it
        wanted = [e and not (b or o) for e, b, o in zip(at_stop, bad_step, over, strict=True)]
        # full_budget: every evaluation of the budget, under either criterion
        evaluated = [m.outcome is None and self._eval_due(m) and not (b or o) for m, b, o in
                     zip(self.members, bad_step, over, strict=True)] if self.full_budget \
            else wanted
        acc, met, finite, seen, vloss = [None] * n, [None] * n, [None] * n, [0] * n, [None] * n
        after, after_ok = [None] * n, [None] * n
        if cfg.criterion == "accuracy" or self.full_budget:
            acc, met, finite, seen, vloss = _evaluate(
                self.net, self.data, evaluated, self.need, self.radius, self.eval_chunk,
                cfg.loss if self.full_budget else None)
        if cfg.criterion == "stable":
            after, after_ok = self._loss_after_budget(wanted)
        loss_l = loss.tolist()
        sums = self.loss_sum.tolist() if self.full_budget else None
        for r, m in open_:
            seen_here = Check(bad_step[r], at_stop[r], m.steps_run >= cfg.steps, over[r],
                              finite[r], met[r], after_ok[r])
            ends = verdict(cfg.criterion, seen_here)
            self._observe(m, seen_here, ends, acc[r], loss_l[r], seen[r])
            success = ends == SUCCESS
            if self.full_budget:
                ends = self._through_budget(m, ends, evaluated[r], sums[r], vloss[r], acc[r])
                success = m.met_step is not None
            if ends is not None:
                self._finish(m, loss_l[r] if after[r] is None else after[r],
                             success=success, diverged=ends == DIVERGED)
        if self.full_budget and any(evaluated):  # each evaluation starts a new interval
            self.loss_sum.index_fill_(0, torch.tensor(
                [r for r, e in enumerate(evaluated) if e], device=self.device), 0.0)
        finished = [m for _, m in open_ if m.outcome is not None]
        for m in finished:
            if m.outcome.success:
                self.best[m.seed] = max(self.best.get(m.seed, 0.0), m.lr)
        if self.cancel:
            for r, m in enumerate(self.members):
                if m.outcome is None and m.lr < self.best.get(m.seed, 0.0):
                    self._finish(m, loss_l[r], cancelled=True)
                    finished.append(m)
        if finished:  # one transfer, only when someone finished
            self._record_tracked(finished)
        return finished

    def _eval_due(self, m: _Member) -> bool:
        """full_budget: whether m is evaluated here (every eval_every steps and at the end)."""
        return m.steps_run >= self.cfg.steps or m.steps_run % self.cfg.eval_every == 0

    def _through_budget(self, m: _Member, ends: str | None, evaluated: bool, since: float,
                        val_loss: float | None, acc: float | None) -> str | None:
        """full_budget: what m's verdict here means for a run that trains the whole budget
        (its first success is noted, `met_step`, and it trains on; a divergence or the end of
        the budget ends it), and its evaluation's point; `since`: its training losses summed
        since the last one. Returns how m ends here (None: it trains on)."""
        if ends == SUCCESS and m.met_step is None:
            m.met_step = m.steps_run
        if evaluated or ends == DIVERGED:
            m.train_loss = since / max(1, m.steps_run - m.since)
        if evaluated and ends != DIVERGED:  # (its outputs overflowed: no point)
            m.points.append((m.steps_run, m.train_loss, val_loss, acc))
            m.since = m.steps_run
        return ends if ends == DIVERGED or m.steps_run >= self.cfg.steps else None

    def _record_tracked(self, finished: list[_Member]) -> None:
        """What the device tracked of the finished members, in one transfer: the first bad step;
        with also_steps the verdict at that budget (under stable what `_also_check` saw, a run
        stopped before step b + 1 having diverged by then; under accuracy a success by step b,
        since a run stops at its first success at an evaluation and b is one of them); and,
        where tracked, the largest loss and its step."""
        b, stable = self.cfg.also_steps, self.cfg.criterion == "stable"
        first = self.first_bad.tolist()
        also_bad = self.also_bad.tolist() if b and stable else None
        top, at = (self.max_loss.tolist(), self.max_step.tolist()) if self.track_max else ((), ())
        row = {id(m): r for r, m in enumerate(self.members)}
        for m in finished:
            r, o = row[id(m)], m.outcome
            extra: dict = {"first_bad_step": first[r] or None}
            if b:
                extra["also_success"] = (m.steps_run > b and not also_bad[r] if stable
                                         else o.success and m.steps_run <= b)
            if self.track_max:
                extra |= {"max_loss": top[r], "max_loss_step": at[r]}
            m.outcome = replace(o, **extra)

    def _open(self):
        """(row, member) of the members still training."""
        return [(r, m) for r, m in enumerate(self.members) if m.outcome is None]

    def _observe(self, m: _Member, seen_here: Check, ends: str | None, acc: float | None,
                 loss: float, seen: int) -> None:
        """m's accuracy (None once diverged), peak and curve after this check: under accuracy a
        point at each evaluation; under stable a point at each check at or after a multiple of
        eval_every and at the end, while no step has diverged."""
        if ends == DIVERGED:
            m.acc = None
        elif seen_here.at_stop and acc is not None:
            m.acc, m.peak = acc, max(m.peak or 0.0, acc)
        if self.cfg.criterion == "accuracy":
            if seen_here.at_stop:
                m.curve.append((m.steps_run, m.acc, loss, seen))
        elif not seen_here.bad_step and (seen_here.at_stop or self._point_due(m)):
            m.curve.append((m.steps_run, None, loss, 0))

    def _drop_finished(self) -> None:
        """Compact the finished rows away, or on a graph only retire them until they make up a
        quarter of the rows (recapturing costs more than a few idle rows)."""
        keep = [r for r, m in enumerate(self.members) if m.outcome is None]
        gone = len(self.members) - len(keep)
        if not keep:
            self.members = []
            self._empty()
        elif not self.retire_in_place and gone or gone >= max(1, len(self.members) // 4):
            idx = torch.tensor(keep, device=self.device)
            self.net = self.net.select(idx)
            self.which, self.t, self.bad = self.which[idx], self.t[idx], self.bad[idx]
            self.limit, self.lr = self.limit[idx], self.lr[idx]
            self.max_loss, self.max_step = self.max_loss[idx], self.max_step[idx]
            self.first_bad, self.also_bad = self.first_bad[idx], self.also_bad[idx]
            self.loss_sum = self.loss_sum[idx]
            self.members = [self.members[r] for r in keep]
            self._rebuilt()
        elif gone:
            idx = torch.tensor([r for r, m in enumerate(self.members) if m.outcome is not None],
                               device=self.device)
            for lr in [self.lr, *self.rates.tensors.values()]:
                lr.index_fill_(0, idx, 0.0)


def _evaluate(net: Ensemble, data: Dataset, wanted: list[bool], need: int,
              radius: float = math.inf, chunk: int = 4096, loss: str | None = None
              ) -> tuple[list[float | None], list[bool | None], list[bool | None], list[int],
                         list[float | None]]:
    """Of the wanted rows (None for the others: diverged or finished rows need no evaluation, a
    third of the work on a CPU): the accuracy on the validation examples seen, whether the
    threshold is met (correct >= need), whether the outputs were all
    finite, how many examples were seen, and with `loss` (radius inf) the validation loss.

    A row stops being evaluated once its verdict is certain (`Ensemble.evaluate`) where its
    outputs are proven finite on inputs of 2-norm <= radius (`Ensemble.finite_bound`; radius
    inf: never, every wanted row sees every example): the verdict is the full evaluation's,
    the accuracy that of the examples seen."""
    rows = [r for r, w in enumerate(wanted) if w]
    acc: list[float | None] = [None] * len(wanted)
    met: list[bool | None] = [None] * len(wanted)
    finite: list[bool | None] = [None] * len(wanted)
    seen: list[int] = [0] * len(wanted)
    vloss: list[float | None] = [None] * len(wanted)
    if rows:
        sub = net if len(rows) == len(wanted) else net.select(
            torch.tensor(rows, device=data.x_eval.device))
        if math.isfinite(radius):
            c, s, f = sub.evaluate(data.x_eval, data.y_eval, chunk, need,
                                   sub.finite_bound(radius))
        elif loss is None:  # no early exit: neither the bound nor the per-chunk decisions
            c, s, f = sub.evaluate(data.x_eval, data.y_eval, chunk)
        else:  # full, with the loss
            c, s, f, v = sub.evaluate(data.x_eval, data.y_eval, chunk, loss=loss)
            for r, vr in zip(rows, v.tolist(), strict=True):
                vloss[r] = vr
        # a scan's accuracy (with the loss) as the exact fraction in float64
        dtype = torch.get_default_dtype() if loss is None else torch.float64
        a = c.to(dtype) / s.to(dtype)
        for r, ar, cr, sr, fr in zip(rows, a.tolist(), c.tolist(), s.tolist(), f.tolist(),
                                     strict=True):
            acc[r], finite[r], seen[r] = ar, fr, sr
            met[r] = cr >= need
    return acc, met, finite, seen, vloss


def needed(n: int, threshold: float) -> int:
    """The fewest correct answers out of n that meet the threshold, exactly: ⌈n · t⌉ in
    rationals, t the decimal the threshold reads as (its shortest repr, docs/protocol.md), so
    0.9 is 9/10 and 9000 of 10,000 meet it (in float32 9000 / 10000 < 0.9). More than n: none
    (an empty validation set meets nothing)."""
    return math.ceil(n * Fraction(repr(float(threshold)))) if n else 1


def train(
    cfg: EstimateConfig,
    data: Dataset,
    lrs: list[float],
    seeds: list[int],
    device: torch.device | None = None,
    cancel_dominated: bool = False,
    graphs: bool | None = None,
    retire_in_place: bool | None = None,
    full_eval: bool = False,
    eval_chunk: int | None = None,
    full_budget: bool = False,
    dtype: torch.dtype = torch.float32,
) -> list[Outcome]:
    """Train one member per (lrs[k], seeds[k]) under cfg's protocol, all together; data must be
    on `device`. The options are as for `BatchedTrainer` (full_budget: ScanRun outcomes)."""
    assert len(lrs) == len(seeds) > 0
    trainer = BatchedTrainer(cfg, data, device, cancel_dominated, graphs, retire_in_place,
                             dtype, full_eval, eval_chunk or EVAL_CHUNK, full_budget)
    keys = trainer.admit(lrs, seeds)
    out: dict[int, Outcome] = {}
    while trainer.pending:
        out.update(trainer.advance())
    return [out[k] for k in keys]
