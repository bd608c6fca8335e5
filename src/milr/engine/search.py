"""The η* search: per seed, find a learning rate that verifiably trains, then refine the upper edge.

Trainability is not monotone in η under a finite budget: small rates are too slow, large ones
diverge. Plain bisection from a wide bracket returns the lower end when its first midpoint is too
slow. So each seed first scans a coarse log grid *from the top down* (large rates diverge within a
few steps, so this part is cheap) until some rate succeeds, widening above `lr_max` if the top
itself trains. Then it refines between `lo`, the largest rate that succeeded, and `hi`, the
smallest failure above it: with one probe per round at the split of least expected cost (a
failure by divergence costs a few steps, a success hundreds), with several (a GPU's small cells)
evenly spaced (multisection). All seeds' members train together in one `Trainer`.

Ragged boundaries: after every round lo and hi are recomputed from *all* trials of the seed, so a
success above a failure always moves lo up (η* is the upper edge of the trainable set). Failures
that lie between two successes are counted per seed as `nonmonotone` and every trial is kept.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict
from typing import Protocol

from ..base.config import EstimateConfig
from ..base.results import SeedResult, Trial, bracket
from .train import Outcome

# Above this many bracket cells the weighted split is planned on this many and scaled: the
# dynamic programme is quadratic in the cells, and its split fraction has long settled by then.
PLAN_CELLS = 256


class SeedSearch:
    """The search state of one seed: which rates to try next, and when it is finished."""

    def __init__(self, seed: int, cfg: EstimateConfig, probes: int):
        self.seed, self.cfg, self.probes = seed, cfg, probes
        self.factor = 10 ** (1 / cfg.grid_per_decade)
        self.floor, self.ceiling = cfg.lr_min / cfg.widen, cfg.lr_max * cfg.widen
        self.tried: dict[float, bool] = {}  # lr -> success
        self.costs: dict[float, float] = {}  # lr -> what its trial cost, in training steps
        self.bracket: tuple[float, float] | None = None  # (lo, hi) when refinement began
        self.steps: dict[float, int] = {}  # lr -> the step its trial stopped at
        self.status: str | None = None
        # also_steps: the trials the budget's own search had made, and the shorter budget's end
        self.primary: dict[float, bool] | None = None
        self.also_status: str | None = None

    @property
    def finished(self) -> bool:
        return self.status is not None and (not self.cfg.also_steps
                                            or self.also_status is not None)

    def grid(self, i: int) -> float:
        """Point i of the scan grid, counted down from lr_max (negative i: above lr_max)."""
        return self.cfg.lr_max / self.factor**i

    def next_probes(self, cost_ratio: float | None = None) -> list[float]:
        """Learning rates for the next round; [] once finished (`finished` is then true).

        With `also_steps` the search at the shorter budget follows the budget's own once that
        has ended, so the budget's η* is the same with or without it.
        """
        if self.status is None:
            probes = self._budget_probes(cost_ratio)
            if probes or not self.cfg.also_steps:
                return probes
            self.primary = dict(self.tried)
        return [] if self.also_status is not None else self._also_probes()

    def _budget_probes(self, cost_ratio: float | None = None) -> list[float]:
        """The search at the full budget: learning rates for its next round; [] once it has
        ended (self.status is then set).

        `cost_ratio`: what a failure costs against a success (for `midpoint="weighted"`); by
        default this seed's own measurement (`cost_ratio()`), so that its probes depend on its
        configuration and seed alone.
        """
        cfg, (lo, hi) = self.cfg, bracket(self.tried.items())
        k = self.probes
        if lo is None and self.tried and self.cfg.lr_start is not None \
                and self.cfg.criterion == "accuracy":
            return self._cold_after_warm_failure(k)
        scan = self._scan(  # nothing trains yet: down the grid; all trains: up the grid
            lo, hi, lambda: (self._grid_index(min(self.tried)) + 1 if self.tried
                             else self._start_index()),
            lambda: self._grid_index(max(self.tried)) - 1)
        if scan is not None:
            probes, self.status = scan
            return probes
        if self.bracket is None:
            self.bracket = (lo, hi)
        used = midpoint_used(cfg.midpoint, k)
        if used == "weighted":
            if cost_ratio is None:
                cost_ratio = self.cost_ratio()
            # Cells of relative width rtol left in the bracket; at least two, so that the probe
            # lies strictly inside it even when hi / lo - 1 is just above rtol.
            n = max(2, math.ceil(math.log(hi / lo) / math.log1p(cfg.rtol) - 1e-9))
            return [lo * (hi / lo) ** (_cheapest_split(n, round(cost_ratio, 2)) / n)]
        if used == "geometric":
            step = (hi / lo) ** (1 / (k + 1))
            return [lo * step**j for j in range(1, k + 1)]
        return [lo + (hi - lo) * j / (k + 1) for j in range(1, k + 1)]

    def _down(self, i0: int) -> list[float]:
        """The next probes down the scan grid from point i0, not below its floor."""
        return [self.grid(i) for i in range(i0, i0 + self.probes)
                if self.grid(i) >= self.floor * 0.999]

    def _up(self, i0: int) -> list[float]:
        """The next probes up the scan grid from point i0, not above its ceiling."""
        return [self.grid(i) for i in range(i0, i0 - self.probes, -1)
                if self.grid(i) <= self.ceiling * 1.001]

    def _scan(self, lo: float | None, hi: float | None, down_from: Callable[[], int],
              up_from: Callable[[], int]) -> tuple[list[float], str | None] | None:
        """One step of a search before its bisection, given its bracket [lo, hi]: down the scan
        grid from point down_from() while nothing succeeds, up from up_from() while everything
        does. The probes and the search's status (None: not ended; below_range or above_range
        where the grid ends, ok once the bracket has converged); None when bisection is next."""
        if lo is None:
            probes = self._down(down_from())
            return probes, None if probes else "below_range"
        if hi is None:
            probes = self._up(up_from())
            return probes, None if probes else "above_range"
        return ([], "ok") if self.converged(lo, hi) else None

    def _cold_after_warm_failure(self, k: int) -> list[float]:
        """A warm start failed under `accuracy`: it may have been too slow (below the trainable
        window) or too large, and only a scan from the top tells which, so the cold scan runs,
        skipping the rates already tried. (Under `stable` every failure is a divergence and the
        scan simply goes on down.)"""
        probes = [self.grid(i) for i in range(self._grid_index(self.floor) + 1)
                  if self.grid(i) not in self.tried][:k]
        if not probes:
            self.status = "below_range"
        return probes

    def _start_index(self) -> int:
        """The grid point nearest lr_start (0: lr_max), within the widened bracket. From there
        the scan goes up from a success until a run fails; after a failure it goes down under
        `stable` (every failure is a divergence) and restarts from the top under `accuracy`
        (`_cold_after_warm_failure`). On a boundary that is monotone on each side it ends in the
        same grid cell whatever the start, so the bracket it then refines, and η*, do not depend
        on lr_start; only the work done does."""
        if self.cfg.lr_start is None:
            return 0
        top = math.ceil(self._grid_position(self.ceiling * 1.001))  # the scan's own limits
        bottom = math.floor(self._grid_position(self.floor * 0.999))
        return min(bottom, max(top, self._grid_index(self.cfg.lr_start)))

    def converged(self, lo: float, hi: float) -> bool:
        return hi / lo - 1 <= self.cfg.rtol

    def _grid_position(self, lr: float) -> float:
        return math.log(self.cfg.lr_max / lr) / math.log(self.factor)

    def _grid_index(self, lr: float) -> int:
        return round(self._grid_position(lr))

    def record(self, lr: float, success: bool, cost: float = 1.0, steps: int = 0) -> None:
        self.tried[lr] = success
        self.costs[lr] = cost
        self.steps[lr] = steps

    def also_verdicts(self) -> dict[float, bool]:
        """Every trial's verdict at the budget also_steps, exactly, from where it stopped: under
        accuracy a run stops at its first success, so it succeeds within also_steps iff it
        succeeded by then; under stable it fails within also_steps iff it diverged by then (the
        loss is checked at every step)."""
        b = self.cfg.also_steps
        if self.cfg.criterion == "stable":
            return {lr: ok or self.steps[lr] > b for lr, ok in self.tried.items()}
        return {lr: ok and self.steps[lr] <= b for lr, ok in self.tried.items()}

    def also_bracket(self) -> tuple[float | None, float | None]:
        return bracket(self.also_verdicts().items())

    def _also_probes(self) -> list[float]:
        """The search at also_steps, on the verdicts `also_verdicts` gives every trial: on down
        the scan grid below the lowest rate tried while nothing succeeds, up above the highest
        while everything does, then bisection in log η (several probes: evenly spaced)."""
        lo, hi = self.also_bracket()
        k = self.probes
        scan = self._scan(  # the grid points strictly below every rate tried, or strictly above
            lo, hi, lambda: math.floor(self._grid_position(min(self.tried)) + 1e-9) + 1,
            lambda: math.ceil(self._grid_position(max(self.tried)) - 1e-9) - 1)
        if scan is not None:
            probes, self.also_status = scan
            return probes
        step = (hi / lo) ** (1 / (k + 1))
        return [lo * step**j for j in range(1, k + 1)]

    def cost_ratio(self) -> float:
        """Mean cost of a failure over mean cost of a success, over this seed's trials inside
        the bracket refinement began with (its two ends included); 1 until both are seen.

        Only this seed's trials count, so its probes do not depend on which other seeds share
        the run. Only trials inside that first bracket count, so the scan that found it (cold
        from lr_max, or warm from lr_start) does not change the refinement: on a boundary that
        is monotone on each side both scans end in the same grid cell, with the same two trials
        at its ends, and from there every probe is the same.
        """
        if self.bracket is None:
            return 1.0
        b_lo, b_hi = self.bracket
        inside = [(lr, s) for lr, s in self.tried.items() if b_lo <= lr <= b_hi]
        ok = [self.costs[lr] for lr, s in inside if s]
        bad = [self.costs[lr] for lr, s in inside if not s]
        if not ok or not bad:
            return 1.0
        return min(100.0, max(0.01, statistics.fmean(bad) / statistics.fmean(ok)))

    def _star(self, lo: float, hi: float) -> float:
        return (lo + hi) / 2 if self.cfg.midpoint == "arithmetic" else math.sqrt(lo * hi)

    def result(self, trials: int) -> SeedResult:
        tried = self.primary if self.primary is not None else self.tried
        lo, hi = bracket(tried.items())
        star = self._star(lo, hi) if self.status == "ok" else None
        ordered = sorted(tried.items())
        succ = [lr for lr, s in ordered if s]
        sandwiched = sum(
            1 for lr, s in ordered if not s and succ and succ[0] < lr < succ[-1]
        )
        also = {}
        if self.cfg.also_steps:
            a_lo, a_hi = self.also_bracket()
            a_status = self.also_status or "unfinished"
            also = dict(also_status=a_status, also_lo=a_lo, also_hi=a_hi,
                        also_lr_star=self._star(a_lo, a_hi) if a_status == "ok" else None)
        return SeedResult(self.seed, self.status or "unfinished", star,
                          lo, hi, trials, sandwiched, **also)


def depends_on(cfg: EstimateConfig) -> str:
    """What a seed's η* is a function of, as results rows record it. Always its configuration
    and seed: never the other seeds, cells or workers of the run, nor their order. A warm start
    adds lr_start: it changes the scan, not the refinement, so η* equals the cold start's on a
    boundary that is monotone on each side of the cell the scans end in, and may differ on a
    ragged one."""
    return "config,seed" if cfg.lr_start is None else "config,seed,lr_start"


def midpoint_used(midpoint: str, probes: int) -> str:
    """The split that actually runs: several probes per round (a GPU's small cells, in lockstep
    rounds) stay evenly spaced in log η, since a round there costs about the same whatever it
    holds, so "weighted" means "geometric" with more than one probe."""
    if midpoint not in ("weighted", "geometric", "arithmetic"):
        raise ValueError(f"midpoint must be weighted, geometric or arithmetic, got {midpoint!r}")
    return "geometric" if midpoint == "weighted" and probes > 1 else midpoint


def _cheapest_split(n: int, cost_ratio: float) -> int:
    """How many of n equal log-cells of the bracket to put below the next (single) probe.

    η* is taken to lie in any cell alike. A probe below it succeeds (cost 1: a success takes
    hundreds of steps) and keeps the cells above the probe; one above it fails (cost
    `cost_ratio`: divergence is caught within a few steps) and keeps those below. The split is
    the one of least expected total cost (dynamic programming over bracket sizes): equal costs
    give bisection, cheap failures push the probe towards the top, trading a few cheap failures
    for fewer successes. Beyond PLAN_CELLS cells the split of PLAN_CELLS is scaled.
    """
    if n > PLAN_CELLS:
        return min(n - 1, max(1, round(_plan(PLAN_CELLS, cost_ratio)[1] * n / PLAN_CELLS)))
    return _plan(n, cost_ratio)[1]


_PLANS: dict[float, list[tuple[float, int]]] = {}


def _plan(n: int, cost_ratio: float) -> tuple[float, int]:
    """(expected cost, cells below the probe) for a bracket of n cells, built bottom-up (and
    kept per cost ratio) so that no bracket is too fine for it."""
    table = _PLANS.setdefault(cost_ratio, [(0.0, 0), (0.0, 0)])
    for m in range(len(table), n + 1):
        table.append(min(((low * (cost_ratio + table[low][0])
                           + (m - low) * (1 + table[m - low][0])) / m, low)
                         for low in range(1, m)))
    return table[max(n, 1)]


def trial_cost(steps: int, eval_cost: float, eval_every: int) -> float:
    """What a trial of `steps` training steps cost, in steps (an evaluation counts as
    `eval_cost` steps)."""
    return steps + (steps // eval_every) * eval_cost


class Trainer(Protocol):
    """What the search trains with: the engine (`train.BatchedTrainer`), a benchmark's peer, or
    `SyncTrainer` around a test's fake. Keys identify the members admitted; `pending` counts
    those whose outcome `advance` has not yet returned."""

    @property
    def pending(self) -> int: ...

    def admit(self, lrs: list[float], seeds: list[int]) -> list[int]: ...

    def advance(self) -> list[tuple[int, Outcome]]: ...


class SyncTrainer:
    """A Trainer over a synchronous `run(lrs, seeds) -> outcomes` (a fake, or a sequential
    implementation): every member finishes in the `advance` after it joined."""

    def __init__(self, run: Callable[[list[float], list[int]], list[Outcome]]):
        self.run, self.finished, self.next_key = run, [], 0

    @property
    def pending(self) -> int:
        return len(self.finished)

    def admit(self, lrs: list[float], seeds: list[int]) -> list[int]:
        keys = list(range(self.next_key, self.next_key + len(lrs)))
        self.next_key += len(lrs)
        self.finished += zip(keys, self.run(lrs, seeds), strict=True)
        return keys

    def advance(self) -> list[tuple[int, Outcome]]:
        finished, self.finished = self.finished, []
        return finished


def search(cfg: EstimateConfig, trainer: Trainer, probes: int = 1,
           on_round: Callable[[int, int, int], None] | None = None, eval_cost: float = 0.0,
           pipeline: bool = False) -> tuple[list[SeedResult], list[Trial], int]:
    """Run the search for every seed with `trainer`.

    By default seeds move in lockstep rounds: a seed's next probes join once every seed's round
    is over. That costs nothing where every member costs its full compute (a CPU), and on a
    GPU's small cells, with several probes, a round costs about the same whatever its size and
    all members joining at once need one new CUDA graph instead of one per seed. `eval_cost` is
    what one evaluation costs in training steps (for the weighted split).

    `pipeline` (with one probe per round: a GPU on its large cells): each seed goes at its own
    pace, its next probe joining as soon as its previous one has finished. A round would
    otherwise last as long as its slowest seed, and the weighted split makes seeds fall out of
    step (one descends in cheap failures while another trains a success).

    Returns per-seed results, every trial in the order it finished, and the largest number of
    rounds of any seed.
    """
    states = [SeedSearch(cfg.seed + i, cfg, probes) for i in range(cfg.seeds)]
    rounds = {st.seed: 0 for st in states}
    pending: dict[int, tuple[SeedSearch, float]] = {}  # trainer key -> (seed's state, lr)
    trials: list[Trial] = []
    while True:
        batch = []
        for st in states:
            if pending and not (pipeline and probes == 1):
                break
            if st.finished or rounds[st.seed] >= cfg.max_rounds:
                continue
            if any(owner is st for owner, _ in pending.values()):
                continue
            lrs = st.next_probes()
            rounds[st.seed] += bool(lrs)
            batch += [(st, lr) for lr in lrs]
        if batch:
            keys = trainer.admit([lr for _, lr in batch], [st.seed for st, _ in batch])
            pending.update(zip(keys, batch, strict=True))
            if on_round is not None:
                on_round(max(rounds.values()), len(batch), sum(not st.finished for st in states))
        if not pending:
            break
        for key, out in trainer.advance():
            st, lr = pending.pop(key)
            if not out.cancelled:
                st.record(lr, out.success, trial_cost(out.steps, eval_cost, cfg.eval_every),
                          out.steps)
            trials.append(Trial(rounds[st.seed], **asdict(out)))
    counts = {st.seed: sum(t.seed == st.seed for t in trials) for st in states}
    return [st.result(counts[st.seed]) for st in states], trials, max(rounds.values())
