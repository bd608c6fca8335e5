"""A scan's analysis (docs/protocol.md §11): from every (rate, seed) run's final numbers to the
three rates of one configuration, the optimum η_opt, the accuracy edge η* and the stability edge.

Pure functions of arrays indexed [rate, seed] (rates ascending), and the records they fill; no
torch, so a sweep, a fit or a figure can read a scan's results without training anything.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

import numpy as np

from ..base.results import bracket, sandwiched

# The percentile interval of η_opt: this many resamples of the seeds (with replacement, the same
# seeds at every rate), drawn from this seed, and its two-sided coverage.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
COVERAGE = 0.95
MIN_RATES = 3  # a parabola needs the optimum and two neighbours
# The fewest seeds whose resamples can spread: one seed resampled is that seed every time, so its
# "interval" would be a point posing as one; below this η_opt has no interval (lo, hi None).
MIN_INTERVAL_SEEDS = 2
MAX_RATES = 1000  # far beyond any useful grid: a typo in points_per_octave fails at once

# What η_opt's status can be. Only "ok" carries a number.
OPT_STATUSES = {
    "ok": "an interior minimum, refined by a parabola in log-rate, with its bootstrap interval "
          f"(none with fewer than {MIN_INTERVAL_SEEDS} seeds)",
    "flat": "no interior minimum resolved: the best median lies at an end of the grid, the "
            "three points around it are level, or resampling the seeds puts the minimum at an "
            "end of the grid (the 95% interval, before any widening to a diverged neighbour, "
            "reaches it)",
    "all_diverged": "every run of the grid diverged",
}
# A seed's stability edge: ok, or where the grid does not bracket its first divergence.
EDGE_STATUSES = {
    "ok": "the largest rate of the grid below which (inclusive) the seed never diverged",
    "above_range": "it never diverged on the grid: the edge is at least the top rate",
    "below_range": "it diverged at the grid's smallest rate: no edge on the grid",
}
# A scan's status of an edge over its seeds: what a results row records beside eta_star_median
# (`seeds_status`) and stability_edge (`lowest_status`), and what `milr fit` keeps (ok only).
SEEDS_STATUSES = {
    "ok": "every seed's edge lies inside the grid",
    "above_range": "a seed's edge lies at or above the grid's top rate (a lower bound only)",
    "below_range": "a seed's edge lies below the grid's smallest rate",
}
LOWEST_STATUSES = {
    "ok": "some seed diverged inside the grid and none at its smallest rate: the lowest seed's "
          "edge is known",
    "above_range": "no seed diverged on the grid: the edge is at least the top rate",
    "below_range": "a seed diverged at the grid's smallest rate: no edge on the grid",
}


def scan_grid(lr_min: float, lr_max: float, points_per_octave: int) -> list[float]:
    """The scan's rates: lr_min · 2^(i / points_per_octave) for i = 0, 1, ... up to lr_max
    (included where it lies on the grid, to a relative 1e-9)."""
    span = points_per_octave * math.log2(lr_max / lr_min)
    n = math.floor(span + 1e-9) + 1
    if n < MIN_RATES:
        raise ValueError(f"the scan's grid from lr_min {lr_min:g} to lr_max {lr_max:g} at "
                         f"{points_per_octave} point(s) per octave has {n} rate(s); it needs "
                         f"at least {MIN_RATES}: widen the range or raise points_per_octave")
    if n > MAX_RATES:
        raise ValueError(f"the scan's grid from lr_min {lr_min:g} to lr_max {lr_max:g} at "
                         f"{points_per_octave} point(s) per octave has {n} rates, more than "
                         f"{MAX_RATES}")
    return [lr_min * 2 ** (i / points_per_octave) for i in range(n)]


def costs(values: np.ndarray, diverged: np.ndarray, objective: str) -> np.ndarray:
    """The objective as a cost to minimise: the loss, or 1 − accuracy, a diverged run (or a
    value missing or not finite) at its worst (`worst_filled`)."""
    accuracy = objective == "val-accuracy"
    v = worst_filled(values, diverged, accuracy)
    return 1.0 - v if accuracy else v


def worst_filled(values: np.ndarray, diverged: np.ndarray, accuracy: bool) -> np.ndarray:
    """A quantity with every diverged or non-finite run at its worst (+inf loss, accuracy 0):
    what the per-rate medians and the objective are taken of."""
    v = np.asarray(values, dtype=float)
    bad = np.asarray(diverged, dtype=bool) | ~np.isfinite(v)
    return np.where(bad, 0.0 if accuracy else math.inf, v)


def parabola_vertex(x: tuple[float, float, float], y: tuple[float, float, float]
                    ) -> float | None:
    """The vertex of the parabola through three points (x ascending), clamped to [x0, x2];
    None where it is not convex (no minimum) or a value is not finite."""
    if not all(math.isfinite(v) for v in (*x, *y)):
        return None
    d1 = (y[1] - y[0]) / (x[1] - x[0])
    d2 = (y[2] - y[1]) / (x[2] - x[1])
    curvature = (d2 - d1) / (x[2] - x[0])  # the quadratic coefficient
    if not curvature > 0:
        return None
    vertex = (x[0] + x[1]) / 2 - d1 / (2 * curvature)
    return min(max(vertex, x[0]), x[2])


def refine(x: np.ndarray, curve: np.ndarray) -> tuple[int, float | None]:
    """The grid index of the curve's minimum (the smallest rate among ties) and the refined
    log-rate of the minimum: the parabola's vertex through it and its two neighbours; the grid
    point itself where a neighbour is infinite (diverged: nothing to fit); None where the
    minimum lies at an end, ties a neighbour (a plateau) or the three points are not convex."""
    k = int(np.argmin(curve))
    if k in (0, len(curve) - 1):
        return k, None
    y = tuple(float(v) for v in curve[k - 1:k + 2])
    if math.isfinite(y[1]) and not all(map(math.isfinite, y)):
        return k, float(x[k])
    if y[1] in (y[0], y[2]):  # level with a neighbour: a plateau of unknown extent, no vertex
        return k, None
    return k, parabola_vertex(tuple(float(v) for v in x[k - 1:k + 2]), y)


def bootstrap_vertices(x: np.ndarray, cost: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """The refined log-rate of the minimum of the median curve of each resample of the seeds
    (the columns of cost, drawn with replacement); a resample whose minimum lies at an end is
    that end, one whose three points are not convex their middle point."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, cost.shape[1], size=(resamples, cost.shape[1]))
    curves = np.median(cost[:, picks], axis=2)  # (rates, resamples)
    out = np.empty(resamples)
    for b in range(resamples):
        k, vertex = refine(x, curves[:, b])
        out[b] = x[k] if vertex is None else vertex
    return out


@dataclass(frozen=True)
class Optimum:
    """η_opt of one scan: a number only where status is "ok" (OPT_STATUSES)."""

    status: str
    eta_opt: float | None  # the refined rate of the lowest median cost
    lo: float | None  # its bootstrap percentile interval (COVERAGE), under status ok with at
    hi: float | None  # least MIN_INTERVAL_SEEDS seeds (fewer: None, no spread to resample)
    grid_rate: float | None  # the grid rate of the lowest median cost (also when flat)
    refined: bool  # a parabola moved it off the grid (False: a diverged neighbour, or not ok)


def optimum(lrs: list[float], cost: np.ndarray, diverged: np.ndarray,
            resamples: int = BOOTSTRAP_RESAMPLES) -> Optimum:
    """η_opt from the cost matrix [rate, seed] (`costs`): the median curve's refined minimum,
    flat where OPT_STATUSES says, all_diverged where every run diverged; its interval only
    from MIN_INTERVAL_SEEDS seeds on."""
    if np.asarray(diverged, dtype=bool).all():
        return Optimum("all_diverged", None, None, None, None, False)
    x = np.log(np.asarray(lrs, dtype=float))
    curve = np.median(cost, axis=1)
    k, vertex = refine(x, curve)
    if vertex is None:
        return Optimum("flat", None, None, None, lrs[k], False)
    lo = hi = None
    if cost.shape[1] >= MIN_INTERVAL_SEEDS:
        tail = (1 - COVERAGE) / 2
        lo, hi = np.quantile(bootstrap_vertices(x, cost, resamples), [tail, 1 - tail],
                             method="inverted_cdf")
        if lo <= x[0] or hi >= x[-1]:
            return Optimum("flat", None, None, None, lrs[k], False)
        lo, hi = beside_divergence(x, curve, k, lo, hi)
        lo, hi = math.exp(lo), math.exp(hi)
    return Optimum("ok", math.exp(vertex), lo, hi, lrs[k], bool(vertex != x[k]))


def beside_divergence(x: np.ndarray, curve: np.ndarray, k: int, lo: float, hi: float
                      ) -> tuple[float, float]:
    """The interval (log-rates) of a minimum beside a rate whose median diverged, reaching to
    that rate: no parabola places the optimum between them, so it may lie anywhere up to it."""
    if not math.isfinite(curve[k + 1]):
        hi = max(hi, float(x[k + 1]))
    if not math.isfinite(curve[k - 1]):
        lo = min(lo, float(x[k - 1]))
    return lo, hi


@dataclass(frozen=True)
class SeedEdges:
    """One seed's two edges on the grid."""

    seed: int
    stability_edge: float | None  # EDGE_STATUSES; None under below_range
    stability_status: str
    lo: float | None  # the accuracy edge's bracket: the largest rate that succeeded
    hi: float | None  # the smallest rate above lo that did not (None: lo is the top)
    status: str  # ok, above_range or below_range, as a search's (results.STATUSES)
    lr_star: float | None  # √(lo·hi) under status ok: the seed's η* on the grid
    nonmonotone: int  # failures between the smallest and the largest success


def stability_edge(lrs: list[float], diverged) -> tuple[float | None, str]:
    """The largest rate below which (inclusive) no run of `diverged` (per rate, ascending)
    diverged, and its EDGE_STATUSES status."""
    bad = [i for i, d in enumerate(diverged) if d]
    if not bad:
        return lrs[-1], "above_range"
    return (lrs[bad[0] - 1], "ok") if bad[0] else (None, "below_range")


def seed_edges(seed: int, lrs: list[float], diverged, success) -> SeedEdges:
    """A seed's stability edge, and its η* bracket from its verdicts on the grid."""
    edge, edge_status = stability_edge(lrs, diverged)
    verdicts = list(zip(lrs, (bool(s) for s in success), strict=True))
    lo, hi = bracket(verdicts)
    status = "below_range" if lo is None else "above_range" if hi is None else "ok"
    return SeedEdges(seed, edge, edge_status, lo, hi, status,
                     math.sqrt(lo * hi) if status == "ok" else None, sandwiched(verdicts))


def seeds_status(statuses) -> str:
    """An edge's status over a scan's seeds (SEEDS_STATUSES): ok only where every seed's is;
    else below_range where any seed's is, else above_range. Never more than every seed shows."""
    statuses = list(statuses)
    if all(s == "ok" for s in statuses):
        return "ok"
    return "below_range" if "below_range" in statuses else "above_range"


def lowest_status(statuses) -> str:
    """The status of the smallest of the seeds' edges (LOWEST_STATUSES): known where a seed's
    edge is, since an above_range seed's (at least the top rate) cannot be the smallest."""
    statuses = list(statuses)
    if "below_range" in statuses:
        return "below_range"
    return "ok" if "ok" in statuses else "above_range"


def log_median(values: list[float]) -> float:
    """The median of positive rates in log scale (between two middle ones: their geometric
    mean)."""
    return math.exp(statistics.median(math.log(v) for v in values))


@dataclass(frozen=True)
class RateRow:
    """One rate of the grid over seeds: counts, and (median, min, max) of each quantity with a
    diverged run at its worst (+inf loss, accuracy 0)."""

    lr: float
    seeds: int
    diverged: int  # seeds that diverged within the budget
    met: int  # seeds that met the threshold before any divergence (the search's success)
    train_loss: tuple[float, float, float]
    val_loss: tuple[float, float, float]
    val_acc: tuple[float, float, float]


def rate_rows(lrs: list[float], arrays: dict[str, np.ndarray]) -> list[RateRow]:
    """The per-rate table from the [rate, seed] arrays (`ScanArrays`)."""
    div = arrays["diverged"]
    stats = {name: worst_filled(arrays[name], div, name == "val_acc")
             for name in ("train_loss", "val_loss", "val_acc")}
    return [RateRow(lr, div.shape[1], int(div[i].sum()), int(arrays["success"][i].sum()),
                    **{n: (float(np.median(v[i])), float(v[i].min()), float(v[i].max()))
                       for n, v in stats.items()})
            for i, lr in enumerate(lrs)]


# The columns of `ScanResult.row()`, in order: a scan sweep's results file has them.
ROW_FIELDS = ("eta_opt", "eta_opt_lo", "eta_opt_hi", "eta_opt_status", "eta_opt_grid",
              "objective", "stability_edge", "stability_edge_median", "stability_edge_status",
              "eta_star_median", "eta_star_status", "eta_opt_over_eta_star",
              "eta_opt_over_stability_edge")

# The status columns that decide whether a results row's number counts (`milr fit` keeps a row
# only where each is ok), and what each status means.
STATUS_OF = {"eta_opt": ("eta_opt_status",), "eta_opt_grid": ("eta_opt_status",),
             "eta_opt_lo": ("eta_opt_status",),
             "eta_opt_hi": ("eta_opt_status",),
             "stability_edge": ("stability_edge_status",),
             "stability_edge_median": ("stability_edge_status",),
             "eta_star_median": ("eta_star_status",),
             "eta_opt_over_eta_star": ("eta_opt_status", "eta_star_status"),
             "eta_opt_over_stability_edge": ("eta_opt_status", "stability_edge_status")}
STATUS_MEANINGS = {"eta_opt_status": OPT_STATUSES, "stability_edge_status": LOWEST_STATUSES,
                   "eta_star_status": SEEDS_STATUSES}

@dataclass
class ScanResult:
    """Everything one scan measured and concluded (`milr.scan`): the follow-up's one record.
    `row()` is its results-file summary, `to_dict()` all of it (JSON)."""

    config: object  # the EstimateConfig
    scan: object  # the ScanConfig
    grid: list[float]
    runs: list  # every (rate, seed) ScanRun
    rates: list[RateRow]
    seeds: list[SeedEdges]
    optimum: Optimum
    wall_time: float = 0.0
    member_steps: int = 0  # optimizer steps summed over the runs: the work done
    device: str = ""
    versions: dict = field(default_factory=dict)
    code: dict = field(default_factory=dict)  # as `Estimate.code`: model_sha256, ...

    @property
    def stability_edge(self) -> float | None:
        """The largest grid rate below which (inclusive) no seed diverged; None: one diverged
        at the smallest rate."""
        edges = [s.stability_edge for s in self.seeds]
        return None if None in edges else min(edges)

    @property
    def stability_edge_median(self) -> float | None:
        """The median over seeds of their stability edges, only where the seeds determine it:
        None where a seed has none on the grid, or where above_range seeds (whose edges are
        at least the top rate) reach the middle."""
        if any(s.stability_edge is None for s in self.seeds):
            return None
        edges = [s.stability_edge if s.stability_status == "ok" else math.inf
                 for s in self.seeds]
        median = log_median(edges)
        return median if math.isfinite(median) else None

    @property
    def stability_edge_status(self) -> str:
        return lowest_status(s.stability_status for s in self.seeds)

    @property
    def eta_star_status(self) -> str:
        return seeds_status(s.status for s in self.seeds)

    @property
    def eta_star_median(self) -> float | None:
        """The median of the seeds' η* on the grid (those with status ok), as `Estimate.median`."""
        values = [s.lr_star for s in self.seeds if s.status == "ok"]
        return statistics.median(values) if values else None

    @property
    def eta_opt_over_eta_star(self) -> float | None:
        opt, star = self.optimum.eta_opt, self.eta_star_median
        if opt is None or star is None or self.eta_star_status != "ok":
            return None  # a median that leaves out seeds above or below the grid is biased
        return opt / star

    @property
    def eta_opt_over_stability_edge(self) -> float | None:
        """η_opt over the scan's stability edge (the lowest seed's), where that edge is known."""
        opt = self.optimum.eta_opt
        if opt is None or self.stability_edge_status != "ok":
            return None
        return opt / self.stability_edge

    def row(self) -> dict:
        """The scan's summary for a results row (beside the config's columns), in ROW_FIELDS'
        order: the optimum's fields, then the properties of the same names."""
        o = self.optimum
        own = {"eta_opt": o.eta_opt, "eta_opt_lo": o.lo, "eta_opt_hi": o.hi,
               "eta_opt_status": o.status, "eta_opt_grid": o.grid_rate,
               "objective": self.scan.objective}
        return {k: own[k] if k in own else getattr(self, k) for k in ROW_FIELDS}

    def to_dict(self) -> dict:
        return {"config": self.config.row(), **self.code, "scan": asdict(self.scan), **self.row(),
                "grid": self.grid, "optimum": asdict(self.optimum),
                "rates": [asdict(r) for r in self.rates],
                "seeds": [asdict(s) for s in self.seeds],
                "wall_time": self.wall_time, "member_steps": self.member_steps,
                "device": self.device, "versions": self.versions,
                "runs": [asdict(r) for r in self.runs]}


def scan_arrays(runs: list, lrs: list[float], seeds: list[int]) -> dict[str, np.ndarray]:
    """The runs' final numbers as [rate, seed] arrays: train_loss, val_loss, val_acc (NaN where
    missing), diverged and success."""
    where = {(r.lr, r.seed): r for r in runs}
    grid = [[where[(lr, s)] for s in seeds] for lr in lrs]

    def array(name: str, dtype=float) -> np.ndarray:
        return np.array([[math.nan if getattr(r, name) is None else getattr(r, name)
                          for r in row] for row in grid], dtype=dtype)

    return {"train_loss": array("train_loss"), "val_loss": array("val_loss"),
            "val_acc": array("val_acc"), "diverged": array("diverged", bool),
            "success": array("success", bool)}


# The ScanRun field each objective reads.
OBJECTIVE_FIELDS = {"val-loss": "val_loss", "train-loss": "train_loss", "val-accuracy": "val_acc"}


def analyse(cfg, scfg, runs: list, lrs: list[float], seeds: list[int], **extra) -> ScanResult:
    """The ScanResult of a finished grid of runs (`extra`: timing and where it ran)."""
    a = scan_arrays(runs, lrs, seeds)
    cost = costs(a[OBJECTIVE_FIELDS[scfg.objective]], a["diverged"], scfg.objective)
    return ScanResult(cfg, scfg, list(lrs), runs, rate_rows(lrs, a),
                      [seed_edges(s, lrs, a["diverged"][:, j], a["success"][:, j])
                       for j, s in enumerate(seeds)],
                      optimum(lrs, cost, a["diverged"]), **extra)
