"""The η* search: per seed, find a learning rate that verifiably trains, then refine the upper edge.

Trainability is not monotone in η under a finite budget: small rates are too slow, large ones
diverge. Plain bisection from a wide bracket returns the lower end when its first midpoint is too
slow. So each seed first scans a coarse log grid *from the top down* (large rates diverge within a
few steps, so this part is cheap) until some rate succeeds, widening above `lr_max` if the top
itself trains.
Then it refines between `lo`, the largest rate that succeeded, and `hi`, the smallest failure
above it, at the split of least expected cost (a failure by divergence costs a few steps, a
success hundreds) until hi / lo - 1 <= rtol.

The search *is* that sequential procedure, one probe at a time (`SeedSearch._budget`: a generator
that yields a rate and receives its verdict). Several probes per round (a GPU's small cells) and a
warm start (`lr_start`) only run parts of its decision tree in advance: a round's probes are the
next nodes of the tree under every verdict the pending ones may get (`speculate`), and the seed's
bracket, status and η* are read off the one path its real verdicts take (`walk`). So they are the
one-probe search's, whatever the probe count, the other seeds of the run or lr_start; the
speculative trials off that path are kept in the trials log and change nothing.

After the bracket has converged, `edge_probes` rates spread over (hi, edge_factor·hi] are tried in
one round: near the edge of stability verdicts can be chaotic, and how many of them train says
how wide that band is (`edge_trained`; each success also counts in `nonmonotone`); with
`edge_below`, as many over [lo / edge_factor, lo), where failures count (`edge_failed_below`).
η* stays the
boundary the search reached; the band above it is reported beside it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, replace
from typing import Protocol

from ..base.config import EstimateConfig
from ..base.results import Outcome, SeedResult, Trial, bracket, sandwiched

# Above this many bracket cells the weighted split is planned on this many and scaled: the
# dynamic programme is quadratic in the cells, and its split fraction has long settled by then.
PLAN_CELLS = 256
# Hypotheses a round's speculation may examine per probe it returns (a bound on planning work).
SPECULATION_WORK = 64


@dataclass(frozen=True)
class Verdict:
    """What the search reads of a trial: its verdict, what it cost (None: a hypothesis of the
    speculation, whose cost nobody knows) and its verdict at also_steps."""

    success: bool
    diverged: bool
    cost: float | None = None
    also: bool | None = None


# The verdicts a pending trial may get, in the order speculation explores them.
HYPOTHESES = {"accuracy": (Verdict(True, False), Verdict(False, True), Verdict(False, False)),
              "stable": (Verdict(True, False), Verdict(False, True))}

Procedure = Callable[[], Generator[float, Verdict, str]]


class _Unknown(Exception):
    """A decision needs the cost of a hypothetical trial: the tree cannot be seen past it yet."""


@dataclass(frozen=True)
class Walk:
    """A sequential procedure replayed over the verdicts known: the rates on its decision path,
    and either the next rate it needs (`frontier`) or how it ended (`status`); neither when a
    hypothesis left it unknown."""

    path: tuple[float, ...]
    frontier: float | None
    status: str | None


def walk(procedure: Procedure, known: dict[float, Verdict], limit: int) -> Walk:
    """Replay `procedure` from its start, answering each rate it asks for from `known`, until it
    asks for one that is not known or ends. More than `limit` rates on the path: unfinished."""
    gen, path = procedure(), []
    try:
        lr = next(gen)
        while True:
            if len(path) >= limit:
                return Walk(tuple(path), None, "unfinished")
            if lr not in known:
                return Walk(tuple(path), lr, None)
            path.append(lr)
            lr = gen.send(known[lr])
    except StopIteration as end:
        return Walk(tuple(path), None, end.value)
    except _Unknown:
        return Walk(tuple(path), None, None)


def speculate(procedure: Procedure, known: dict[float, Verdict], k: int, limit: int,
              hypotheses: tuple[Verdict, ...]) -> list[float]:
    """Up to k rates to try next: the frontier of `walk`, then the frontiers the procedure reaches
    under every hypothesis on the verdicts of those before, breadth first (with two outcomes per
    node, 2^j - 1 probes cover j levels of the one-probe search). Which rates are chosen changes
    only the work done, never the result: that is read off the real verdicts' path."""
    chosen: list[float] = []
    queue: deque[dict[float, Verdict]] = deque([{}])
    work = 0
    while queue and len(chosen) < k and work < SPECULATION_WORK * k:
        assumed = queue.popleft()
        w = walk(procedure, {**known, **assumed}, limit)
        work += 1
        if w.frontier is None or w.frontier in chosen and assumed:
            continue
        if w.frontier not in chosen:
            chosen.append(w.frontier)
        queue.extend({**assumed, w.frontier: v} for v in hypotheses)
    return chosen


class SeedSearch:
    """The search state of one seed: every trial's verdict, which rates to try next, and when it
    is finished."""

    def __init__(self, seed: int, cfg: EstimateConfig, probes: int):
        self.seed, self.cfg, self.probes = seed, cfg, probes
        self.factor = 10 ** (1 / cfg.grid_per_decade)
        self.floor, self.ceiling = cfg.lr_min / cfg.widen, cfg.lr_max * cfg.widen
        self.known: dict[float, Verdict] = {}  # every trial of the search, on its path or not
        self.edge: dict[float, bool] = {}  # the edge probes above hi: lr -> success
        self.status: str | None = None
        self.path: tuple[float, ...] = ()  # the budget's decision path, once it has ended
        self.edge_rates: list[float] = []
        self.also_status: str | None = None
        self.also_path: tuple[float, ...] = ()
        self._warm_pending = cfg.lr_start is not None

    @property
    def finished(self) -> bool:
        return (self.status is not None and self._edge_done
                and (not self.cfg.also_steps or self.also_status is not None))

    @property
    def _edge_done(self) -> bool:
        """No edge round is due (the bracket did not converge, or edge_probes is 0), or it is
        over."""
        if self.status != "ok" or not self.cfg.edge_probes:
            return True
        return bool(self.edge_rates) and len(self.edge) == len(self.edge_rates)

    def grid(self, i: int) -> float:
        """Point i of the scan grid, counted down from lr_max (negative i: above lr_max)."""
        return self.cfg.lr_max / self.factor**i

    # --- what the next round tries ------------------------------------------------------------

    def next_probes(self) -> list[float]:
        """Learning rates for the next round; [] once finished (`finished` is then true).

        The budget's search first, then the edge probes above its bracket, then (with
        `also_steps`) the search at the shorter budget, which starts from the budget's path, so
        the budget's η* is the same with or without it."""
        cfg, limit = self.cfg, self.cfg.max_rounds
        if self.status is None:
            w = walk(self._budget, self.known, limit)
            if w.frontier is not None:
                return self._warm_round() or speculate(
                    self._budget, self.known, self.probes, limit, HYPOTHESES[cfg.criterion])
            self.status, self.path = w.status, w.path
        if self.status == "ok" and cfg.edge_probes and not self.edge_rates:
            lo, hi = bracket((lr, self.known[lr].success) for lr in self.path)
            steps = [cfg.edge_factor ** (j / cfg.edge_probes)
                     for j in range(1, cfg.edge_probes + 1)]
            self.edge_rates = [hi * f for f in steps] + ([lo / f for f in steps]
                                                         if cfg.edge_below else [])
            self.edge = {lr: self.known[lr].success for lr in self.edge_rates
                         if lr in self.known}  # tried already, speculatively
            probes = [lr for lr in self.edge_rates if lr not in self.edge]
            if probes:
                return probes
        if not cfg.also_steps or self.also_status is not None:
            return []
        w = walk(self._also, self.known, limit)
        if w.frontier is not None:
            hypotheses = tuple(replace(v, also=v.success) for v in HYPOTHESES[cfg.criterion])
            return speculate(self._also, self.known, self.probes, limit, hypotheses)
        self.also_status, self.also_path = w.status, w.path
        return []

    def _warm_round(self) -> list[float]:
        """A warm start's first round: the cold scan's path if the window lies at lr_start (every
        grid point from lr_max down to it, and the one below), all in one round."""
        if not self._warm_pending:
            return []
        self._warm_pending = False
        start = self._start_index()
        if start <= 0:
            return []
        return [lr for lr in (self.grid(i) for i in range(start + 2))
                if lr >= self.floor * 0.999]

    def _start_index(self) -> int:
        """The grid point nearest lr_start, within the widened bracket."""
        top = math.ceil(self._grid_position(self.ceiling * 1.001))  # the scan's own limits
        bottom = math.floor(self._grid_position(self.floor * 0.999))
        return min(bottom, max(top, round(self._grid_position(self.cfg.lr_start))))

    # --- the sequential procedures ------------------------------------------------------------

    def _budget(self) -> Generator[float, Verdict, str]:
        """The search at the full budget, one probe at a time; returns its status.

        Down the grid from lr_max until a rate trains, then up from it until one fails (above
        lr_max too, to the widened ceiling), then the refinement. The ends of the widened
        bracket are tried themselves, so `below_range` always means that lr_min / widen failed,
        `above_range` that lr_max · widen trained. (A top that failed by being too slow rather
        than diverging may lie below the window: the status's advice then says to raise lr_max;
        scanning up by itself would take full-budget runs at rates where the dynamics are
        chaotic.)"""
        seen: dict[float, Verdict] = {}
        if not (yield from self._ask(seen, self.grid(0))).success:
            for lr in self._ladder(self.grid(0), up=False):
                if (yield from self._ask(seen, lr)).success:
                    break
            else:
                return "below_range"
        lo, hi = bracket((lr, w.success) for lr, w in seen.items())
        if hi is None:
            for lr in self._ladder(lo, up=True):
                v = yield from self._ask(seen, lr)
                if not v.success:
                    hi = lr
                    break
                lo = lr
            else:
                return "above_range"
        return (yield from self._refine(seen, lo, hi))

    def _refine(self, seen: dict[float, Verdict], lo: float, hi: float
                ) -> Generator[float, Verdict, str]:
        """Split [lo, hi] until hi / lo - 1 <= rtol: a success moves lo up, a failure hi down.
        The weighted split's cost ratio is that of the bracket's two ends, fixed when the
        refinement begins, so that every split point is known from the bracket alone."""
        ratio = self._cost_ratio(seen[lo], seen[hi]) if self.cfg.midpoint == "weighted" else 1.0
        while not self.converged(lo, hi):
            p = self._split(lo, hi, ratio)
            v = yield from self._ask(seen, p)
            lo, hi = (p, hi) if v.success else (lo, p)
        return "ok"

    def _also(self) -> Generator[float, Verdict, str]:
        """The search at also_steps, on the verdicts at that budget: it starts from the budget's
        decision path (those trials' verdicts at also_steps are known), scans down the grid below
        every rate of it while nothing succeeds, or up above while everything does, then bisects
        in log η, taking lo and hi from all its verdicts (a ragged boundary moves lo up)."""
        verdicts = {lr: self.known[lr].also for lr in self.path}
        seen: dict[float, Verdict] = {}

        def current() -> tuple[float | None, float | None]:
            return bracket([*verdicts.items(), *((lr, v.also) for lr, v in seen.items())])

        lo, hi = current()
        if lo is None:
            for lr in self._ladder(min(verdicts), up=False):
                if (yield from self._ask(seen, lr)).also:
                    break
            else:
                return "below_range"
        elif hi is None:
            for lr in self._ladder(max(verdicts), up=True):
                if not (yield from self._ask(seen, lr)).also:
                    break
            else:
                return "above_range"
        lo, hi = current()
        while not self.converged(lo, hi):
            yield from self._ask(seen, math.sqrt(lo * hi))
            lo, hi = current()
        return "ok"

    @staticmethod
    def _ask(seen: dict[float, Verdict], lr: float) -> Generator[float, Verdict, Verdict]:
        v = yield lr
        seen[lr] = v
        return v

    def _ladder(self, start: float, up: bool):
        """The scan grid's points strictly beyond `start` (above it, or below), within the
        widened bracket, and then that bracket's end itself where the grid does not land on it."""
        pos = self._grid_position(start)
        i = math.ceil(pos - 1e-9) - 1 if up else math.floor(pos + 1e-9) + 1
        end = self.ceiling if up else self.floor
        last = start
        while True:
            lr = self.grid(i)
            if lr > self.ceiling * 1.001 or lr < self.floor * 0.999:
                break
            yield lr
            last, i = lr, i - 1 if up else i + 1
        if abs(math.log(end / last)) > 1e-3 and (end > last if up else end < last):
            yield end

    def _split(self, lo: float, hi: float, ratio: float) -> float:
        """The one probe inside (lo, hi), by cfg.midpoint."""
        if self.cfg.midpoint == "weighted":
            # Cells of relative width rtol left in the bracket; at least two, so that the probe
            # lies strictly inside it even when hi / lo - 1 is just above rtol.
            n = max(2, math.ceil(math.log(hi / lo) / math.log1p(self.cfg.rtol) - 1e-9))
            return lo * (hi / lo) ** (_cheapest_split(n, ratio) / n)
        if self.cfg.midpoint == "geometric":
            return math.sqrt(lo * hi)
        return (lo + hi) / 2

    @staticmethod
    def _cost_ratio(ok: Verdict, bad: Verdict) -> float:
        """What the failure at the bracket's top cost over what the success at its bottom did."""
        if ok.cost is None or bad.cost is None:
            raise _Unknown
        if ok.cost <= 0 or bad.cost <= 0:
            return 1.0
        return round(min(100.0, max(0.01, bad.cost / ok.cost)), 2)

    def converged(self, lo: float, hi: float) -> bool:
        return hi / lo - 1 <= self.cfg.rtol

    def _grid_position(self, lr: float) -> float:
        return math.log(self.cfg.lr_max / lr) / math.log(self.factor)

    # --- trials in, result out ----------------------------------------------------------------

    def record(self, lr: float, out: Outcome, cost: float = 1.0) -> None:
        """A trial's outcome: an edge probe's, or a verdict for the searches."""
        if lr in self.edge_rates and lr not in self.edge:
            self.edge[lr] = out.success
            return
        also = getattr(out, "also_success", None)  # a peer's record may not have it
        if also is None and self.cfg.also_steps:
            if self.cfg.criterion == "stable":  # where it diverged is the trainer's to say
                raise ValueError("under criterion stable with also_steps, a trainer must report "
                                 "each run's also_success")
            also = out.success and out.steps <= self.cfg.also_steps  # stops at a success
        self.known[lr] = Verdict(out.success, out.diverged, cost, also)

    def role(self, lr: float) -> str:
        """What a trial was to this seed's result: on the budget's decision path, an edge probe,
        on the shorter budget's path, or speculative (off every path: it changed nothing)."""
        if lr in self.path:
            return "path"
        if lr in self.edge_rates:
            return "edge"
        return "also" if lr in self.also_path else "speculative"

    def _star(self, lo: float, hi: float) -> float:
        return (lo + hi) / 2 if self.cfg.midpoint == "arithmetic" else math.sqrt(lo * hi)

    def result(self, trials: int) -> SeedResult:
        path = [(lr, self.known[lr].success) for lr in self.path]
        lo, hi = bracket(path)
        star = self._star(lo, hi) if self.status == "ok" else None
        above = [self.edge[lr] for lr in self.edge_rates[:self.cfg.edge_probes]]
        below = [self.edge[lr] for lr in self.edge_rates[self.cfg.edge_probes:]]
        edge_trained = sum(above) if above else None
        failed_below = len(below) - sum(below) if below else None
        also = {}
        if self.cfg.also_steps:
            verdicts = [(lr, self.known[lr].also) for lr in (*self.path, *self.also_path)]
            a_lo, a_hi = bracket(verdicts)
            a_status = self.also_status or "unfinished"
            also = dict(also_status=a_status, also_lo=a_lo, also_hi=a_hi,
                        also_lr_star=self._star(a_lo, a_hi) if a_status == "ok" else None)
        return SeedResult(self.seed, self.status or "unfinished", star, lo, hi, trials,
                          sandwiched(path) + (edge_trained or 0) + (failed_below or 0),
                          edge_trained=edge_trained, edge_failed_below=failed_below, **also)


def depends_on(cfg: EstimateConfig, device_type: str = "cpu") -> str:
    """What a seed's η* is a function of, as results rows record it: its configuration and seed,
    never the other seeds, cells or workers of the run, their order, the probe count or a warm
    start (those change only which speculative trials run). On CUDA batched matmuls may round
    differently with the number of members beside a seed: "cuda-batch" says so. A model of one's
    own draws its random numbers (dropout) for all members of a round at once: "model-rng"."""
    return "config,seed" + (",cuda-batch" if device_type == "cuda" else "") + (
        ",model-rng" if getattr(cfg, "model", None) is not None else "")


def midpoint_used(midpoint: str, probes: int) -> str:
    """The split that runs: cfg.midpoint at every probe count (several probes evaluate the
    one-probe search's tree in advance, so they split where it does)."""
    if midpoint not in ("weighted", "geometric", "arithmetic"):
        raise ValueError(f"midpoint must be weighted, geometric or arithmetic, got {midpoint!r}")
    return midpoint


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

    Returns per-seed results, every trial in the order it finished (each with its `role`:
    `SeedSearch.role`), and the largest number of rounds of any seed.
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
            if st.finished:
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
                st.record(lr, out, trial_cost(out.steps, eval_cost, cfg.eval_every))
            trials.append(Trial(rounds[st.seed], **asdict(out)))
    by_seed = {st.seed: st for st in states}
    trials = [replace(t, role=by_seed[t.seed].role(t.lr)) for t in trials]
    counts = {st.seed: sum(t.seed == st.seed for t in trials) for st in states}
    return [st.result(counts[st.seed]) for st in states], trials, max(rounds.values())
