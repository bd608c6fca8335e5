"""The records an η* measurement returns: every trial, every seed's verdict, and the estimate."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field, fields, make_dataclass

from .config import EstimateConfig

# What a seed's search can end in. Only "ok" carries an η*; the others are never shown as one.
STATUSES = {
    "ok": "η* found: a verified success lo and a verified failure hi with hi / lo - 1 <= rtol",
    "above_range": "trained at the widened top of the bracket (lr_max · widen, tried): lo is a "
                   "lower bound only",
    "below_range": "no rate tried trained, down to the widened bottom of the bracket "
                   "(lr_min / widen, tried and failed): lower --lr-min (its default depends on "
                   "--optimizer) or raise --steps; where the top was too slow rather than "
                   "diverging, raise --lr-max",
    "unfinished": "max_rounds reached before the bracket met rtol: no η*",
}


def json_safe(obj):
    """`obj` as strict JSON can hold it: a NaN or infinite number (a diverged run's final loss,
    an undefined R²) becomes null, which every JSON parser reads; Python's NaN token is not JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) or (hasattr(obj, "dtype") and getattr(obj, "ndim", 1) == 0
                                  and obj.dtype.kind == "f"):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def bracket(verdicts) -> tuple[float | None, float | None]:
    """The search's bracket over one seed's (learning rate, success) pairs: lo is the largest
    success, hi the smallest failure above it (None where there is none)."""
    verdicts = list(verdicts)
    ok = [lr for lr, s in verdicts if s]
    lo = max(ok) if ok else None
    bad = [lr for lr, s in verdicts if not s and (lo is None or lr > lo)]
    return lo, (min(bad) if bad else None)


def sandwiched(verdicts) -> int:
    """How many failures lie between the smallest and the largest success of one seed's
    (learning rate, success) pairs: trials that contradict a monotone boundary."""
    verdicts = list(verdicts)
    ok = [lr for lr, s in verdicts if s]
    return sum(1 for lr, s in verdicts if not s and ok and min(ok) < lr < max(ok))


@dataclass(frozen=True)
class Outcome:
    """One training run at (lr, seed) and how it ended: what the engine returns
    (`milr.engine.train.Outcome` is this class) and, with its round and role, a trial (`Trial`).
    At most one of success, diverged and cancelled holds; none: it failed (too slow). The field
    names are those of the trials logs on disk, so some say less than they mean: see each."""

    lr: float
    seed: int
    success: bool  # accuracy: the threshold met at an evaluation; stable: the whole budget run
    diverged: bool  # non-finite loss or outputs, or loss > divergence_factor * initial loss
    # The step of the check that stopped it: an evaluation, the end of the budget, or the
    # non-finite check (every nonfinite_every steps) that caught a bad step, which can come up
    # to nonfinite_every steps after it (first_bad_step says where); steps of any optimizer.
    steps: int
    # The accuracy at its last evaluation on the examples that evaluation saw (curve_seen; all
    # of them with full_eval): None where it diverged there or after it, or was never evaluated.
    final_acc: float | None
    # The largest accuracy of its evaluations, each on the examples it saw (under the early exit
    # not the largest full accuracy); None: never evaluated (criterion stable never is).
    peak_acc: float | None
    # The training loss of the step that stopped it (before its update); under stable, of a run
    # that reached the end without a bad step, the loss after the last update.
    final_loss: float
    cancelled: bool = False  # stopped unfinished: a larger rate of the same seed had succeeded
    # The curves: one point per evaluation (criterion stable evaluates nothing: one per check at
    # or after each multiple of eval_every, and the end of the budget), its step, the validation
    # accuracy there (None: not evaluated, as when diverged or under stable) and the training
    # loss of that step's batch (before its update). Empty in trials logs written before milr
    # recorded them.
    curve_steps: tuple[int, ...] = ()
    curve_acc: tuple[float | None, ...] = ()
    curve_loss: tuple[float, ...] = ()
    # How many validation examples each evaluation saw: all of them with full_eval, else those
    # until its verdict was certain; 0 where nothing was evaluated (stable; a loss that
    # diverged). Empty in trials logs written before milr recorded it (every evaluation saw all).
    curve_seen: tuple[int, ...] = ()
    eval_examples: int | None = None  # the validation set's size (None: stable, older logs)
    # criterion stable or divergence_check step (where any step's loss decides): the largest
    # training loss of any step run (a NaN counts as inf) and that step; None otherwise.
    max_loss: float | None = None
    max_loss_step: int | None = None
    # The first step whose loss was non-finite (or, with divergence_check "step", above the
    # limit), where it happened, whichever check caught it later; None: no such step.
    first_bad_step: int | None = None
    # With also_steps: whether a run of exactly also_steps steps would have succeeded (under
    # stable from the steps up to also_steps + 1 as that run checks them; under accuracy a
    # success by then); None otherwise.
    also_success: bool | None = None


@dataclass(frozen=True)
class ScanRun(Outcome):
    """One run of a scan (`milr scan`): trained for the whole budget, stopped only where it
    diverged, evaluated in full at every eval_every steps and at the end.

    The Outcome fields read as for the whole budget, except `success` and `diverged`, which may
    both hold here: `success` is the verdict the search's run (which stops at its first success)
    gets, the threshold met at an evaluation before any divergence (`met_step`), and `diverged`
    says that the run diverged at some point of the budget, stopping at `steps`. `final_acc` is
    the full validation accuracy at the end (None: diverged)."""

    # The first evaluation that met the threshold (accuracy; under stable the budget, where the
    # run succeeded); None: never met, or diverged first.
    met_step: int | None = None
    # The mean training loss over the minibatches since the last evaluation (at the end: the
    # last eval interval's; where diverged, the interval it diverged in, which may be NaN).
    train_loss: float | None = None
    val_loss: float | None = None  # the full validation loss at the end (None: diverged)
    val_acc: float | None = None  # the full validation accuracy at the end (None: diverged)
    # At each evaluation of the budget (not diverged): its step, the mean training loss of the
    # interval before it, the validation loss and the validation accuracy.
    eval_steps: tuple[int, ...] = ()
    eval_train_loss: tuple[float, ...] = ()
    eval_val_loss: tuple[float, ...] = ()
    eval_val_acc: tuple[float, ...] = ()


def _trial_fields() -> list[tuple]:
    """Trial's fields: its round, then an Outcome's (declared once, above), then its role, in
    the order of the trials logs' records."""
    return [("round", int),
            *((f.name, f.type, field(default=f.default)) for f in fields(Outcome)),
            # What the trial was to its seed's result (`search.SeedSearch.role`): "path" (on
            # the budget's decision path), "edge", "also" or "speculative"; "" in older logs.
            ("role", str, field(default=""))]


Trial = make_dataclass(
    "Trial", _trial_fields(), frozen=True,
    namespace={"__doc__": "One trial of a search: the round of its seed's search it ran in, "
                          "its Outcome's fields, and its role.", "__module__": __name__})


@dataclass(frozen=True)
class SeedResult:
    seed: int
    status: str  # one of STATUSES
    lr_star: float | None  # midpoint of [lo, hi] when status is "ok"
    lo: float | None  # largest learning rate that trained
    hi: float | None  # smallest learning rate above lo that failed
    trials: int  # training runs for this seed, cancelled ones included
    # trials that contradict a monotone boundary: successes above hi (and, with edge_below,
    # failures below lo) among the edge probes, and failures between two successes on the
    # decision path
    nonmonotone: int
    # The same at the shorter budget also_steps (config), when asked for; None otherwise.
    also_status: str | None = None
    also_lr_star: float | None = None
    also_lo: float | None = None
    also_hi: float | None = None
    # of the edge_probes rates over (hi, edge_factor·hi], how many trained (None: not probed)
    edge_trained: int | None = None
    # with edge_below: of as many rates over [lo / edge_factor, lo), how many failed
    edge_failed_below: int | None = None


@dataclass
class Estimate:
    config: EstimateConfig
    seeds: list[SeedResult]
    trials: list[Trial]
    rounds: int
    probes: int  # learning rates per seed and round actually used
    midpoint_used: str  # how brackets were split: "weighted" needs one probe per round
    wall_time: float
    member_steps: int  # SGD steps summed over all members: the work done
    device: str
    versions: dict = field(default_factory=dict)
    # seed -> λ1 at initialisation (None: not converged), when asked for (lambda1_samples)
    lambda1: dict[int, float | None] | None = None
    # per seed, (λ1, preconditioned λ1) as `sharpness.Sharpness` records, when asked for
    sharpness: list[tuple] = field(default_factory=list)
    # the SHA-256 of the source of each config field naming user code, a dataset's of its
    # source and arrays (`lookup.identities`: model_sha256, ...; None where it names none)
    code: dict = field(default_factory=dict)

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

    @property
    def lambda1_eff(self) -> dict[int, float | None] | None:
        """seed -> the preconditioned λ1 (of S^½HS^½, S the per-tensor rate scales), when
        measured (None: not converged)."""
        return {e.seed: e.lambda1 for _, e in self.sharpness} if self.sharpness else None

    @property
    def c(self) -> dict[int, float]:
        """The dimensionless c = η*·λ1 of every seed that has both (an η* and a converged λ1)."""
        return self._times_eta(self.lambda1)

    @property
    def c_eff(self) -> dict[int, float]:
        """c_eff = η*·λ1_eff likewise: what `stability_edge` is about."""
        return self._times_eta(self.lambda1_eff)

    def _times_eta(self, lam: dict[int, float | None] | None) -> dict[int, float]:
        lam = lam or {}
        return {s.seed: s.lr_star * lam[s.seed] for s in self.seeds
                if s.status == "ok" and lam.get(s.seed) is not None}

    @property
    def c_median(self) -> float | None:
        return statistics.median(self.c.values()) if self.c else None

    def to_dict(self) -> dict:
        return {
            "config": self.config.row(),
            **self.code,
            "median": self.median,
            "spread": self.spread,
            "log_std": self.log_std,
            "seeds": [asdict(s) for s in self.seeds],
            "rounds": self.rounds,
            "probes": self.probes,
            "midpoint_used": self.midpoint_used,
            "runs": len(self.trials),
            "member_steps": self.member_steps,
            "wall_time": self.wall_time,
            "device": self.device,
            "versions": self.versions,
            "lambda1": self.lambda1,
            "lambda1_eff": self.lambda1_eff,
            "c": self.c,
            "c_median": self.c_median,
            "trials": [asdict(t) for t in self.trials],
        }


def stability_edge(cfg: EstimateConfig) -> tuple[float | None, str]:
    """The c_eff = η*·λ1_eff at which cfg's optimizer is at its edge of stability on the
    quadratic model at initialisation, at full batch (θ ← θ − η·S·(step of H θ), S the
    per-tensor rate scales: stable iff η·λ1(S^½HS^½) is below it), and what it is; None where
    no such edge exists, with why."""
    if cfg.optimizer in ("adam", "adamw"):
        return None, (f"{cfg.optimizer} divides each step by its own √v, so its edge is of "
                      "the Hessian preconditioned by that, which is not measured here")
    if cfg.weight_decay:
        return None, "weight decay adds to the curvature that λ1 measures"
    b = cfg.momentum
    if cfg.optimizer == "momentum":
        return 2 * (1 + b), f"heavy-ball momentum: 2(1 + β), β = {b:g}"
    if cfg.optimizer == "nesterov":
        return 2 * (1 + b) / (1 + 2 * b), f"Nesterov momentum: 2(1 + β)/(1 + 2β), β = {b:g}"
    return 2.0, "gradient descent"


@dataclass(frozen=True)
class Cell:
    """One (depth, width) of a results table, its seeds' values aggregated."""

    depth: int
    width: int
    value: float  # aggregated over seeds (median by default)
    low: float  # smallest per-seed value (error bars)
    high: float  # largest per-seed value
    seeds: int  # seeds that contributed
    rows: int = 0  # rows of this cell in the table: seeds tried, usable or not


@dataclass(frozen=True)
class CellValue:
    """One seed's value of a column in its cell (`table.Usable` adds where it was read)."""

    depth: int
    width: int
    value: float


def ok_values(rows: list[dict], column: str = "lr_star") -> list[CellValue]:
    """The values of `column` in the rows whose seed ended ok (a results file's rows, as read or
    as a task returns them)."""
    return [CellValue(int(r["depth"]), int(r["width"]), float(r[column])) for r in rows
            if r.get("status") == "ok" and r.get(column) not in ("", None)]


def aggregate(values: list, rows: list[dict], how: str = "median") -> list[Cell]:
    """One Cell per (depth, width) with a value (`values`: CellValue or table.Usable), in order
    of depth and width; `rows` gives each cell's count of seeds tried."""
    groups: dict[tuple[int, int], list[float]] = {}
    for u in values:
        groups.setdefault((u.depth, u.width), []).append(u.value)
    tried: dict[tuple[int, int], int] = {}
    for r in rows:
        key = (int(r["depth"]), int(r["width"]))
        tried[key] = tried.get(key, 0) + 1
    agg = statistics.median if how == "median" else statistics.fmean
    return [Cell(d, w, agg(v), min(v), max(v), len(v), tried.get((d, w), len(v)))
            for (d, w), v in sorted(groups.items())]


# --- words the CLI's tables and the figures share -------------------------------------------


def protocol_line(c) -> str:
    """The protocol an η* was measured under, in a few words (every field is in --json)."""
    what = (f"accuracy ≥ {c.threshold}" if c.criterion == "accuracy"
            else "stable for the whole budget")
    network = (f"{c.output_init} output layer, input lr × {c.input_lr_scale:g}"
               if getattr(c, "model", None) is None
               else f"model {c.model} (its own initialisation, one rate for every tensor)")
    return (f"{c.loss} loss, {what}, {c.steps} steps, divergence checked at every "
            f"{'step' if c.divergence_check == 'step' else 'evaluation'}, "
            f"{network}{training_words(c)}")


def training_words(c) -> str:
    """The network, optimizer, warm-up and parametrisation where they are not the defaults."""
    words = network_words(c)
    if c.optimizer in ("momentum", "nesterov"):
        words.append(f"{c.optimizer} {c.momentum:g}")
    elif c.optimizer != "sgd":
        words.append(f"{c.optimizer} (β {c.beta1:g}, {c.beta2:g}, ε {c.eps:g})")
    if c.weight_decay:
        words.append(f"weight decay {c.weight_decay:g}")
    if c.warmup_steps:
        words.append(f"{c.warmup_steps} warm-up steps")
    if c.output_lr_scale != 1:
        words.append(f"output lr × {c.output_lr_scale:g}")
    if c.parametrization != "sp":
        words.append(c.parametrization + (f" (base width {c.base_width})"
                                          if c.parametrization == "mup" else ""))
    return "".join(", " + w for w in words)


BRANCH_WORDS = {"sqrt-depth": "1/√depth", "depth": "1/depth"}


def network_words(c) -> list[str]:
    """A residual architecture (its branch scale and blocks' rate where set) and an activation
    other than relu."""
    words = []
    if c.architecture == "residual":
        more = ([f"branches × {BRANCH_WORDS[c.branch_scale]}"] if c.branch_scale != "none"
                else []) + ([f"blocks' lr × depth^{c.block_lr_depth_exponent:g}"]
                            if c.block_lr_depth_exponent else [])
        words.append("residual" + (f" ({', '.join(more)})" if more else ""))
    if c.activation != "relu":
        words.append(c.activation)
    return words


def power(exponent: float, digits: int = 4) -> str:
    """'^−0.7000' or '^1.0000': one sign, a true minus, never '^−-1.0'."""
    sign = "−" if exponent < 0 and round(abs(exponent), digits) else ""
    return f"^{sign}{abs(exponent):.{digits}f}"
