"""The η* search: per seed, find a learning rate that verifiably trains, then refine the upper edge.

Trainability is not monotone in η under a finite budget: small rates are too slow, large ones
diverge. Plain bisection from a wide bracket returns the lower end when its first midpoint is too
slow. So each seed first scans a coarse log grid *from the top down* (large rates diverge within a
few steps, so this part is cheap) until some rate succeeds, widening above `lr_max` if the top
itself trains. Then it refines between `lo`, the largest rate that succeeded, and `hi`, the
smallest failure above it: with one probe per round at the split of least expected cost (a
failure by divergence costs a few steps, a success hundreds), with several (a GPU's small cells)
evenly spaced (multisection). All seeds' members train together in one `train.Pool`.

Ragged boundaries: after every round lo and hi are recomputed from *all* trials of the seed, so a
success above a failure always moves lo up (η* is the upper edge of the trainable set). Failures
that lie between two successes are counted per seed as `nonmonotone` and every trial is kept.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Protocol

import torch

from . import __version__
from .config import EstimateConfig
from .data import Dataset, load
from .train import Outcome, Pool, resolve_device

MAX_ROUNDS = 64


@dataclass(frozen=True)
class Trial:
    round: int
    lr: float
    seed: int
    success: bool
    diverged: bool
    steps: int
    final_acc: float | None  # None: not evaluated (diverged at that evaluation)
    peak_acc: float
    final_loss: float
    cancelled: bool  # stopped early because a larger rate of its seed succeeded: no verdict


@dataclass(frozen=True)
class SeedResult:
    seed: int
    status: str  # "ok", "above_range" (still trains at the top) or "below_range" (nothing trains)
    lr_star: float | None  # midpoint of [lo, hi] when status is "ok"
    lo: float | None  # largest learning rate that trained
    hi: float | None  # smallest learning rate above lo that failed
    trials: int  # training runs for this seed, cancelled ones included
    nonmonotone: int  # failures lying between two successes (a ragged boundary)


@dataclass
class Estimate:
    config: EstimateConfig
    seeds: list[SeedResult]
    trials: list[Trial]
    rounds: int
    probes: int  # learning rates per seed and round actually used
    wall_time: float
    member_steps: int  # SGD steps summed over all members: the work done
    device: str
    versions: dict = field(default_factory=dict)

    @property
    def values(self) -> list[float]:
        return [s.lr_star for s in self.seeds if s.status == "ok"]

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def spread(self) -> tuple[float, float] | None:
        """(min, max) of the per-seed η*."""
        return (min(self.values), max(self.values)) if self.values else None

    @property
    def log_std(self) -> float | None:
        """Standard deviation of log η* over seeds (0 for a single seed)."""
        v = [math.log(x) for x in self.values]
        return statistics.stdev(v) if len(v) > 1 else (0.0 if v else None)

    def to_dict(self) -> dict:
        return {
            "config": self.config.row(),
            "median": self.median,
            "spread": self.spread,
            "log_std": self.log_std,
            "seeds": [asdict(s) for s in self.seeds],
            "rounds": self.rounds,
            "probes": self.probes,
            "runs": len(self.trials),
            "member_steps": self.member_steps,
            "wall_time": self.wall_time,
            "device": self.device,
            "versions": self.versions,
            "trials": [asdict(t) for t in self.trials],
        }


class SeedSearch:
    """The search state of one seed: which rates to try next, and when it is finished."""

    def __init__(self, seed: int, cfg: EstimateConfig, probes: int):
        self.seed, self.cfg, self.probes = seed, cfg, probes
        self.factor = 10 ** (1 / cfg.grid_per_decade)
        self.floor, self.ceiling = cfg.lr_min / cfg.widen, cfg.lr_max * cfg.widen
        self.tried: dict[float, bool] = {}  # lr -> success
        self.status: str | None = None

    def lo(self) -> float | None:
        ok = [lr for lr, s in self.tried.items() if s]
        return max(ok) if ok else None

    def hi(self) -> float | None:
        lo = self.lo()
        bad = [lr for lr, s in self.tried.items() if not s and (lo is None or lr > lo)]
        return min(bad) if bad else None

    def grid(self, i: int) -> float:
        """Point i of the scan grid, counted down from lr_max (negative i: above lr_max)."""
        return self.cfg.lr_max / self.factor**i

    def next_probes(self, cost_ratio: float = 1.0) -> list[float]:
        """Learning rates for the next round; [] once finished (self.status is then set).

        `cost_ratio`: what a failure costs against a success (for `midpoint="weighted"`).
        """
        cfg, lo, hi = self.cfg, self.lo(), self.hi()
        k = self.probes
        if lo is None:  # nothing trains yet: continue down the grid
            i0 = self._grid_index(min(self.tried)) + 1 if self.tried else 0
            probes = [self.grid(i) for i in range(i0, i0 + k) if self.grid(i) >= self.floor * 0.999]
            if not probes:
                self.status = "below_range"
            return probes
        if hi is None:  # the largest rate tried trains: continue up the grid
            i0 = self._grid_index(max(self.tried)) - 1
            probes = [self.grid(i) for i in range(i0, i0 - k, -1)
                      if self.grid(i) <= self.ceiling * 1.001]
            if not probes:
                self.status = "above_range"
            return probes
        if self.converged(lo, hi):
            self.status = "ok"
            return []
        if cfg.midpoint == "weighted" and k == 1:
            # Several probes per round (a GPU's small cells, in lockstep rounds) stay evenly
            # spaced: there a round costs about the same whatever it holds, and placing them by
            # cost measured slower (benchmarks/README.md).
            n = math.ceil(math.log(hi / lo) / math.log1p(cfg.rtol) - 1e-9)  # cells left
            return [lo * (hi / lo) ** (_cheapest_split(n, round(cost_ratio, 2)) / n)]
        if cfg.midpoint in ("geometric", "weighted"):
            step = (hi / lo) ** (1 / (k + 1))
            return [lo * step**j for j in range(1, k + 1)]
        if cfg.midpoint == "arithmetic":
            return [lo + (hi - lo) * j / (k + 1) for j in range(1, k + 1)]
        raise ValueError(f"midpoint must be geometric or arithmetic, got {cfg.midpoint!r}")

    def converged(self, lo: float, hi: float) -> bool:
        return hi / lo - 1 <= self.cfg.rtol

    def _grid_index(self, lr: float) -> int:
        return round(math.log(self.cfg.lr_max / lr) / math.log(self.factor))

    def record(self, lr: float, success: bool) -> None:
        self.tried[lr] = success

    def result(self, trials: int) -> SeedResult:
        lo, hi = self.lo(), self.hi()
        star = None
        if self.status == "ok":
            star = (lo + hi) / 2 if self.cfg.midpoint == "arithmetic" else math.sqrt(lo * hi)
        ordered = sorted(self.tried.items())
        succ = [lr for lr, s in ordered if s]
        sandwiched = sum(
            1 for lr, s in ordered if not s and succ and succ[0] < lr < succ[-1]
        )
        return SeedResult(self.seed, self.status or "unfinished", star,
                          lo, hi, trials, sandwiched)


def _cheapest_split(n: int, cost_ratio: float) -> int:
    """How many of n equal log-cells of the bracket to put below the next (single) probe.

    η* is taken to lie in any cell alike. A probe below it succeeds (cost 1: a success takes
    hundreds of steps) and keeps the cells above the probe; one above it fails (cost
    `cost_ratio`: divergence is caught within a few steps) and keeps those below. The split is
    the one of least expected total cost (dynamic programming over bracket sizes): equal costs
    give bisection, cheap failures push the probe towards the top, trading a few cheap failures
    for fewer successes.
    """
    return _plan(n, cost_ratio)[1]


@lru_cache(maxsize=65536)
def _plan(n: int, cost_ratio: float) -> tuple[float, int]:
    """(expected cost, cells below the probe) for a bracket of n cells."""
    if n <= 1:
        return 0.0, 0
    return min(((low * (cost_ratio + _plan(low, cost_ratio)[0])
                 + (n - low) * (1 + _plan(n - low, cost_ratio)[0])) / n, low)
               for low in range(1, n))


def cost_ratio(trials: list[Trial], eval_cost: float, eval_every: int) -> float:
    """Mean cost of a failure over mean cost of a success so far, in training steps (an
    evaluation counts as `eval_cost` steps); 1 until both have been seen."""
    def cost(t: Trial) -> float:
        return t.steps + (t.steps // eval_every) * eval_cost

    ok = [cost(t) for t in trials if t.success]
    bad = [cost(t) for t in trials if not t.success and not t.cancelled]
    if not ok or not bad:
        return 1.0
    return min(100.0, max(0.01, statistics.fmean(bad) / statistics.fmean(ok)))


Oracle = Callable[[list[float], list[int]], list[Outcome]]


class Trainer(Protocol):
    """What the search trains with: `train.Pool`, or `Rounds` around a fake."""

    @property
    def live(self) -> int: ...

    def admit(self, lrs: list[float], seeds: list[int]) -> list[int]: ...

    def advance(self) -> list[tuple[int, Outcome]]: ...


class Rounds:
    """A Trainer over a synchronous `run(lrs, seeds) -> outcomes` (a fake trainer in tests):
    every member finishes in the `advance` after it joined, so seeds move in lockstep rounds."""

    def __init__(self, run: Oracle):
        self.run, self.done, self.keys = run, [], 0

    @property
    def live(self) -> int:
        return len(self.done)

    def admit(self, lrs: list[float], seeds: list[int]) -> list[int]:
        keys = list(range(self.keys, self.keys + len(lrs)))
        self.keys += len(lrs)
        self.done += zip(keys, self.run(lrs, seeds), strict=True)
        return keys

    def advance(self) -> list[tuple[int, Outcome]]:
        done, self.done = self.done, []
        return done


def search(cfg: EstimateConfig, trainer: Trainer | Oracle, probes: int = 1,
           on_round: Callable[[int, int, int], None] | None = None, eval_cost: float = 0.0,
           pipeline: bool = False) -> tuple[list[SeedResult], list[Trial], int]:
    """Run the search for every seed with `trainer` (a `train.Pool`, or a synchronous fake
    `run(lrs, seeds) -> outcomes`).

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
    if not hasattr(trainer, "admit"):
        trainer = Rounds(trainer)
    states = [SeedSearch(cfg.seed + i, cfg, probes) for i in range(cfg.seeds)]
    rounds = {st.seed: 0 for st in states}
    pending: dict[int, tuple[SeedSearch, float]] = {}  # trainer key -> (seed's state, lr)
    trials: list[Trial] = []
    while True:
        ratio = cost_ratio(trials, eval_cost, cfg.eval_every)
        batch = []
        for st in states:
            if pending and not (pipeline and probes == 1):
                break
            if st.status is not None or rounds[st.seed] >= MAX_ROUNDS:
                continue
            if any(owner is st for owner, _ in pending.values()):
                continue
            lrs = st.next_probes(ratio)
            rounds[st.seed] += bool(lrs)
            batch += [(st, lr) for lr in lrs]
        if batch:
            keys = trainer.admit([lr for _, lr in batch], [st.seed for st, _ in batch])
            pending.update(zip(keys, batch, strict=True))
            if on_round is not None:
                on_round(max(rounds.values()), len(batch), sum(st.status is None for st in states))
        if not pending:
            break
        for key, out in trainer.advance():
            st, lr = pending.pop(key)
            if not out.cancelled:
                st.record(lr, out.success)
            trials.append(Trial(rounds[st.seed], **asdict(out)))
    counts = {st.seed: sum(t.seed == st.seed for t in trials) for st in states}
    return [st.result(counts[st.seed]) for st in states], trials, max(rounds.values())


def estimate(cfg: EstimateConfig, data: Dataset | None = None,
             on_round: Callable[[int, int, int], None] | None = None,
             pool: Pool | None = None) -> Estimate:
    """η* of one (depth, width) for cfg.seeds seeds: the library entry point of `milr estimate`.

    `pool`: the trainer to use (e.g. one instrumented by a benchmark); by default a fresh Pool
    with cancellation of dominated members.
    """
    device = resolve_device(cfg.device)
    data = (data or load(cfg.dataset, cfg.data_dir)).to(device)
    start = time.perf_counter()

    probes = cfg.probes_for(device.type, data.n_inputs, data.classes)
    # An evaluation is a forward pass over the validation set: a third of a step's FLOPs per row.
    eval_cost = len(data.x_eval) / (3 * min(cfg.batch_size, len(data.x_train)))
    pool = pool or Pool(cfg, data, device, cancel_dominated=True)
    seeds, trials, rounds = search(cfg, pool, probes, on_round, eval_cost,
                                   pipeline=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return Estimate(
        config=cfg,
        seeds=seeds,
        trials=trials,
        rounds=rounds,
        probes=probes,
        wall_time=time.perf_counter() - start,
        member_steps=sum(t.steps for t in trials),
        device=device_name(device),
        versions=versions(),
    )


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict:
    return {"milr": __version__, "torch": torch.__version__, "python": platform.python_version()}
