"""Figures (matplotlib is an optional extra: pip install 'milr[plot]')."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..base.results import bracket as results_bracket
from ..base.results import power, protocol_line, training_words
from ..engine.scan import OBJECTIVE_FIELDS
from .fit import PowerLaw


def plot_fit(law: PowerLaw, path: str, title: str = "") -> str:
    """Left: η* against d·w (log-log), one colour per depth, seed range as error bars, the fit
    and its 95% band. Right: log residuals against d·w. Returns the path actually written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'milr[plot]'") from None
    fig, (ax, rax) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    depths = sorted({c.depth for c in law.cells})
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(depths)))
    for d, colour in zip(depths, colours, strict=True):
        cs = [c for c in law.cells if c.depth == d]
        dw = np.array([c.depth * c.width for c in cs], dtype=float)
        v = np.array([c.value for c in cs])
        err = np.array([[c.value - c.low for c in cs], [c.high - c.value for c in cs]])
        ax.errorbar(dw, v, yerr=err, fmt="o", color=colour, capsize=3, label=f"depth {d}")
        res = [r for c, r in zip(law.cells, law.residuals, strict=True) if c.depth == d]
        rax.plot(dw, res, "o", color=colour)
    grid = np.geomspace(min(c.depth * c.width for c in law.cells),
                        max(c.depth * c.width for c in law.cells), 100)
    fit, lo, hi = law.band(grid)
    lab = (f"η* = {law.c:.3g} (d·w){power(-law.alpha, 3)}  [α 95% CI {law.alpha_ci[0]:.3f}–"
           f"{law.alpha_ci[1]:.3f}, R² {law.r2:.3f}]")
    ax.plot(grid, fit, "k-", label=lab)
    ax.fill_between(grid, lo, hi, color="k", alpha=0.12, label="95% confidence band")
    ax.set(xscale="log", yscale="log", xlabel="depth × width", ylabel="η* (median over seeds)",
           title=title or "maximal initial learning rate")
    ax.legend(fontsize=7, loc="lower left", framealpha=0.6)
    rax.axhline(0, color="k", lw=0.8)
    rax.set(xscale="log", xlabel="depth × width", ylabel="log(η* / fit)", title="residuals")
    fig.tight_layout()
    path = figure_path(path, "--plot")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- Searches and sweeps (milr estimate --plot, milr plot search, milr plot sweep) -----------

# Okabe–Ito: distinguishable under the common colour-vision deficiencies (yellow left out: it
# vanishes on white).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
# verdict -> (colour, marker, filled)
VERDICTS = {"success": ("#0072B2", "o", True), "diverged": ("#D55E00", "X", True),
            "too slow": ("#E69F00", "v", True), "cancelled": ("#777777", "s", False)}
INSTALL = "pip install 'milr[plot]'"
FONT = 12  # points: readable when a README shows the figure at about 900 pixels wide


class PlotError(ValueError):
    """Input that cannot be drawn; the message names the file, cell or path."""


def require_matplotlib(what: str = "--plot") -> None:
    """Fail in one line, before any work, when matplotlib is missing."""
    from importlib.util import find_spec

    if find_spec("matplotlib") is None:
        raise PlotError(f"{what} needs matplotlib: {INSTALL}")


def figure_path(path: str, what: str = "--out") -> str:
    """The file a figure will go to (every --plot and --out): no extension gives PNG (".png" is
    appended); a format matplotlib writes (png, svg, pdf, ...) is kept; any other extension, a
    missing directory, or a directory, device, pipe or socket as the file is refused."""
    require_matplotlib(what)
    from matplotlib.backend_bases import FigureCanvasBase

    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", "\\")):
        raise PlotError(f"{what} {path} is a directory; give a file name such as map.png")
    ext = p.suffix.lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext and ext not in formats:
        raise PlotError(f"{what} {path}: unknown extension .{ext} (use .png, .svg or .pdf)")
    if not p.resolve().parent.is_dir():
        raise PlotError(f"cannot write {what} {path}: directory {p.parent} does not exist")
    out = path if ext else f"{path}.png"
    for q in dict.fromkeys((path, out)):
        if os.path.exists(q) and not os.path.isfile(q):  # a device, pipe, socket or directory
            raise PlotError(f"{what} {path}: {q} is not a regular file; give a file name such "
                            "as map.png")
    return out


def _pyplot():
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": FONT, "axes.titlesize": FONT + 1, "legend.fontsize":
                         FONT - 1, "xtick.labelsize": FONT - 1, "ytick.labelsize": FONT - 1})
    return plt


def save(fig, path: str) -> str:
    """Write `fig` to `path` (see figure_path) and close it; returns the path written."""
    path = figure_path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def verdict(t: dict) -> str:
    """success, diverged, too slow (the budget ran out below the threshold) or cancelled."""
    if t.get("cancelled"):
        return "cancelled"
    return "success" if t["success"] else "diverged" if t["diverged"] else "too slow"


@dataclass
class SeedView:
    seed: int
    status: str | None = None  # None: not known (a trials log read without its results)
    lr_star: float | None = None
    lo: float | None = None  # largest success
    hi: float | None = None  # smallest failure above lo


@dataclass
class SearchView:
    """What a search figure shows: every trial (dicts as the trials log stores them), each
    seed's verdict where known, and the protocol's threshold where known."""

    title: str
    trials: list[dict]
    seeds: list[SeedView]
    threshold: float | None = None
    criterion: str | None = None
    notes: list[str] = field(default_factory=list)  # shown under the figure

    @property
    def known(self) -> bool:
        """Whether the seeds' statuses (and so their η*) are known."""
        return all(s.status is not None for s in self.seeds)


def off_path(t: dict) -> bool:
    """A trial that did not decide its seed's bracket (an edge probe, a speculative trial, one
    at the shorter budget); a log written before milr recorded roles has none."""
    return t.get("role", "") not in ("", "path")


def bracket(trials: list[dict]) -> tuple[float | None, float | None]:
    """The search's own rule over one seed's trials on its decision path (role "path"; every
    trial of a log written before milr recorded roles): lo is the largest success, hi the
    smallest failure above it (cancelled runs have no verdict). Speculative and edge trials
    never move the bracket."""
    return results_bracket((t["lr"], t["success"]) for t in trials
                           if not t.get("cancelled") and not off_path(t))


def search_view_of(est) -> SearchView:
    """The view of an `Estimate` (milr estimate --plot)."""
    from dataclasses import asdict

    c = est.config
    seeds = [SeedView(s.seed, s.status, s.lr_star, s.lo, s.hi) for s in est.seeds]
    return SearchView(f"η* search of depth {c.depth} × width {c.width} on {c.dataset}\n"
                      f"{protocol_line(c)}", [asdict(t) for t in est.trials], seeds,
                      c.threshold if c.criterion == "accuracy" else None, c.criterion)


TRIAL_KEYS = ("depth", "width", "seed", "lr", "success", "diverged", "steps")


def _number(v) -> bool:
    """A JSON number (NaN too: older logs wrote a diverged run's loss so)."""
    return type(v) in (int, float)


def _positive(v) -> bool:
    return _number(v) and v > 0


def _count(v) -> bool:
    return type(v) is int and v >= 0


def _listed(test):
    return lambda v: isinstance(v, list) and all(map(test, v))


def _or_null(test):
    return lambda v: v is None or test(v)


# field -> (what its value must be, the test); a field that is absent is an older log's
TRIAL_FIELDS = {
    "lr": ("a finite positive number", lambda v: _number(v) and 0 < v < float("inf")),
    **dict.fromkeys(("success", "diverged", "cancelled"),
                    ("true or false", lambda v: type(v) is bool)),
    "steps": ("a non-negative integer", _count),
    **dict.fromkeys(("final_acc", "peak_acc", "final_loss", "max_loss"),
                    ("a number or null", _or_null(_number))),
    **dict.fromkeys(("max_loss_step", "eval_examples"),
                    ("a non-negative integer or null", _or_null(_count))),
    **dict.fromkeys(("curve_steps", "curve_seen"),
                    ("a list of non-negative integers", _listed(_count))),
    **dict.fromkeys(("curve_acc", "curve_loss"),
                    ("a list of numbers or nulls", _listed(_or_null(_number)))),
}


def _check_trial(rec: dict, path: str, n: int) -> None:
    """Refuse, naming file, line and field, a trial record the figure cannot draw."""
    missing = [k for k in TRIAL_KEYS if k not in rec]
    if missing:
        raise PlotError(f"{path} line {n} is not a milr trial record (no "
                        f"{', '.join(missing)})")
    for name, (what, test) in TRIAL_FIELDS.items():
        if name in rec and not test(rec[name]):
            shown = repr(rec[name])
            shown = shown if len(shown) <= 40 else shown[:36] + " ..."
            raise PlotError(f"{path} line {n}: {name} must be {what}, got {shown}")
    for name in ("curve_acc", "curve_loss", "curve_seen"):
        if name in rec and len(rec[name]) != len(rec.get("curve_steps", [])):
            raise PlotError(f"{path} line {n}: {name} has {len(rec[name])} values but "
                            f"curve_steps has {len(rec.get('curve_steps', []))}")


def read_trials(path: str) -> tuple[list[dict], list[str], dict | None]:
    """The records of a trials log (old ones, without curves, too), notes, and the protocol its
    header records (None: an older log); a torn last line (no line end: being written) is left
    out with a note. Anything else that is not a trial fails, naming its line and field."""
    from ..base.files import check_regular
    from ..sweep.store import log_measure, parse_trials

    try:
        check_regular(path, "trials log")  # a FIFO would block the read forever
        raw = Path(path).read_bytes()
    except OSError as e:
        raise PlotError(f"cannot read trials log {path}: {e.strerror}") from None
    notes, cut = [], raw.rfind(b"\n") + 1
    if raw[cut:].strip():
        notes.append(f"{path}: last line has no line end (being written?): left out")
    header, numbered = parse_trials(raw[:cut].decode("utf-8", "replace"), Path(path))
    if log_measure(header, numbered) == "scan":
        raise PlotError(f"{path} is a scan sweep's log, not a search's: draw it with milr "
                        "plot scan")
    for n, rec in numbered:
        _check_trial(rec, path, n)
    if not numbered:
        raise PlotError(f"{path} holds no trial records")
    return [rec for _, rec in numbered], notes, header


def search_view_from_log(path: str, depth: int, width: int, results: str | None = None
                         ) -> SearchView:
    """The view of one cell of a sweep's trials log; with `results` (the sweep's CSV) each
    seed's status and η* and the threshold, without it only the brackets the trials show."""
    if depth < 1 or width < 1:
        raise PlotError(f"--cell needs a positive depth and width, got {depth} {width}")
    records, notes, logged_under = read_trials(path)
    trials = [t for t in records if int(t["depth"]) == depth and int(t["width"]) == width]
    if not trials:
        cells = sorted({(int(t["depth"]), int(t["width"])) for t in records})
        shown = ", ".join(f"{d} {w}" for d, w in cells[:8]) + (" ..." if len(cells) > 8 else "")
        raise PlotError(f"--cell {depth} {width}: no trials of that cell in {path} "
                        f"(cells there: {shown})")
    by_seed: dict[int, list[dict]] = {}
    for t in trials:
        by_seed.setdefault(int(t["seed"]), []).append(t)
    seeds = [SeedView(s, None, None, *bracket(ts)) for s, ts in sorted(by_seed.items())]
    threshold = criterion = None
    if results is not None:
        rows, every = _cell_rows(results, depth, width)
        _same_protocol(logged_under, rows[0], path, results)
        seeds = _seeds_of_rows(by_seed, rows, every, path, results, notes)
        criterion = rows[0].get("criterion") or None
        thr = rows[0].get("threshold")
        threshold = float(thr) if thr and criterion != "stable" else None
    else:
        notes.append("η* and threshold not shown: give --results (the sweep's CSV)")
    if not any(t.get("curve_steps") for t in trials):
        notes.append("no curves: this trials log was written before milr recorded them")
    protocol = ""
    if results is not None:
        r = rows[0]
        protocol = (f"\n{r.get('loss', '?')} loss, " + (
            f"accuracy ≥ {threshold:g}" if threshold is not None else "stable for the budget")
            + f", {r.get('steps', '?')} steps{training_words(_row_setting(r))}")
    return SearchView(f"η* search of depth {depth} × width {width} in {Path(path).name}"
                      f"{protocol}", trials, seeds,
                      threshold, criterion, notes)


def _row_setting(r: dict) -> SimpleNamespace:
    """The network, optimizer, warm-up and parametrisation of a results row, typed as a config
    holds them (a column an older milr did not write: a ReLU MLP, plain SGD, no warm-up, sp)."""
    def number(name: str, default: float = 0.0) -> float:
        try:
            return float(r.get(name) or default)
        except ValueError:
            return default

    return SimpleNamespace(architecture=r.get("architecture") or "mlp",
                           activation=r.get("activation") or "relu",
                           branch_scale=r.get("branch_scale") or "none",
                           block_lr_depth_exponent=number("block_lr_depth_exponent"),
                           optimizer=r.get("optimizer") or "sgd",
                           parametrization=r.get("parametrization") or "sp",
                           base_width=r.get("base_width"), warmup_steps=int(number("warmup_steps")),
                           output_lr_scale=number("output_lr_scale", 1.0),
                           **{k: number(k) for k in ("momentum", "beta1", "beta2", "eps",
                                                     "weight_decay")})


def _same_protocol(logged_under: dict | None, row: dict, path: str, results: str) -> None:
    """Refuse a log whose header records another protocol than the results' rows."""
    from ..sweep.store import protocol_conflicts, protocol_of

    wrong = protocol_conflicts(logged_under or {}, protocol_of(row))
    if wrong:
        raise PlotError(f"{path} holds trials of another protocol than {results} "
                        f"({'; '.join(wrong[:3])}): the log of another sweep")


def _seeds_of_rows(by_seed: dict[int, list[dict]], rows: list[dict], every: list[dict],
                   path: str, results: str, notes: list[str]) -> list[SeedView]:
    """Each seed's status and η* from its row, its trials counted against the row's count:
    more is another run's log (refused); fewer, a search logged in part (a kill), whose
    bracket is then the row's, with a note. Trials follow their rows, so none lacks one."""
    from ..sweep.store import key_text, logged_trials, row_key

    row_of = {int(r["seed"]): r for r in rows}
    counts = logged_trials(every)
    depth, width, _ = row_key(rows[0])
    seeds = []
    for seed in sorted(set(by_seed) | set(row_of)):
        ts, r, key = by_seed.get(seed, []), row_of.get(seed), (depth, width, seed)
        if r is None:
            raise PlotError(f"{path} holds {len(ts)} trials of {key_text(key)}, but {results} "
                            "has no row of it: the log of another results file")
        sv = SeedView(seed, r["status"], None, *bracket(ts))
        sv.lr_star = float(r["lr_star"]) if r["status"] == "ok" and r["lr_star"] else None
        want, line = counts.get(key, (len(ts), 0))
        if len(ts) > want:
            raise PlotError(f"{path} holds {len(ts)} trials of {key_text(key)}, but {results} line "
                            f"{line} records {want}: the log of another results file")
        if len(ts) < want:
            sv.lo, sv.hi = _float(r.get("lo")), _float(r.get("hi"))
            notes.append(f"seed {seed}: only {len(ts)} of its {want} trials are in {path} "
                         f"(lost in a kill, or run without this log): its bracket is "
                         f"{results}'s, not drawn from its trials")
        seeds.append(sv)
    return seeds


def _float(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _cell_rows(results: str, depth: int, width: int) -> tuple[list[dict], list[dict]]:
    """The rows of one cell that count (one per seed), and all of them (superseded too)."""
    from .table import one_protocol, read_table

    rows = read_table(results)
    one_protocol(rows, results)
    need = [c for c in ("depth", "width", "seed", "status", "lr_star") if c not in rows[0]]
    if need:
        raise PlotError(f"{results}: missing column{'s' * (len(need) > 1)} "
                        f"{', '.join(need)} (a milr sweep results file has them)")
    mine = [r for r in rows if _int(r["depth"]) == depth and _int(r["width"]) == width]
    if not mine:
        raise PlotError(f"--cell {depth} {width}: no rows of that cell in {results}")
    every = [r for r in rows.every if _int(r["depth"]) == depth and _int(r["width"]) == width]
    return mine, every


def _int(text) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def search_figure(view: SearchView):
    """Top: every trial of every seed on a log-η axis by verdict, each seed's bracket and η*,
    and the median with the seed range (left: the whole range searched; right: around the
    brackets). Bottom: loss and accuracy curves of the trials that decided each seed's
    bracket (its largest success, solid; the smallest failure above it, dashed), with the
    threshold. Artists carry gids ("verdict:<name>", "eta-star", "eta-median", "bracket",
    "curve:<seed>:<lo|hi>", "threshold") so that tests read the plotted data back."""
    plt = _pyplot()
    fig = plt.figure(figsize=(12, 9.5))
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.1], hspace=0.42, wspace=0.25)
    full, zoom = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    loss_ax, acc_ax = fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
    seeds = view.seeds
    rows = {s.seed: len(seeds) - i for i, s in enumerate(seeds)}  # top to bottom; median at 0
    for ax in (full, zoom):
        _trials_panel(ax, view, rows)
    full.set_title("every trial")
    edges = [x for s in seeds for x in (s.lo, s.hi) if x is not None]
    if edges:
        zoom.set_xlim(min(edges) / 1.15, max(edges) * 1.15)
    zoom.set_title("around the brackets")
    zoom.set_yticklabels([])
    for ax in (full, zoom):
        _plain_log_ticks(ax.xaxis)
    handles = [plt.Line2D([], [], ls="", marker=m, ms=8, color=c, mfc=c if f else "none",
                          label=f"{v} ({sum(verdict(t) == v for t in view.trials)})")
               for v, (c, m, f) in VERDICTS.items()]
    handles += [plt.Line2D([], [], color="#bbbbbb", lw=6, label="bracket [lo, hi]")]
    off = sum(map(off_path, view.trials))
    if off:
        handles += [plt.Line2D([], [], ls="", marker="o", ms=6, color="#0072B2", alpha=0.4,
                               label=f"faded: off the decision path ({off})")]
    if view.known:
        handles += [plt.Line2D([], [], ls="", marker="|", ms=16, mew=2.5, color="k",
                               label="η* of a seed"),
                    plt.Line2D([], [], ls="-", marker="D", color="k", label="median η*, "
                               "seed range")]
    fig.legend(handles=handles, loc="upper center", ncol=4, bbox_to_anchor=(0.5, 0.995),
               frameon=False)
    _curves_panels(loss_ax, acc_ax, view, plt)
    notes = "".join(f"\n({n})" for n in view.notes)
    fig.suptitle(view.title + notes, y=1.04 + 0.02 * notes.count("\n"), fontsize=FONT + 1)
    return fig


def _trials_panel(ax, view: SearchView, rows: dict[int, int]) -> None:
    for s in view.seeds:
        if s.lo is not None and s.hi is not None:
            ax.plot([s.lo, s.hi], [rows[s.seed]] * 2, color="#bbbbbb", lw=8, zorder=1,
                    solid_capstyle="butt", gid="bracket")
    for v, (colour, marker, filled) in VERDICTS.items():
        ts = [t for t in view.trials if verdict(t) == v]
        for off in (False, True):  # off the decision path: faded, and never in the bracket
            these = [t for t in ts if off_path(t) == off]
            ax.scatter([t["lr"] for t in these], [rows[int(t["seed"])] for t in these],
                       s=30 if off else 46, marker=marker, c=colour if filled else "none",
                       edgecolors=colour, linewidths=1.4, zorder=3, alpha=0.4 if off else 1,
                       gid=f"verdict:{v}" + (":off-path" if off else ""))
    stars = [s for s in view.seeds if s.lr_star is not None]
    ax.scatter([s.lr_star for s in stars], [rows[s.seed] for s in stars], marker="|", s=400,
               linewidths=2.5, c="k", zorder=4, gid="eta-star")
    labels = [f"seed {s.seed}" + ("" if s.status in (None, "ok") else f"\n{s.status}")
              for s in view.seeds]
    values = [s.lr_star for s in stars]
    if values:
        import statistics

        med = statistics.median(values)
        ax.errorbar([med], [0], xerr=[[med - min(values)], [max(values) - med]], fmt="D",
                    color="k", capsize=5, zorder=4, gid="eta-median")
        ax.annotate(f"{med:.3g}", (med, 0), textcoords="offset points", xytext=(0, 9),
                    ha="center", fontsize=FONT - 1)
    ax.set_yticks([rows[s.seed] for s in view.seeds] + ([0] if values else []),
                  labels + ([f"median\n({len(values)} of {len(view.seeds)})"] if values else []))
    ax.set_ylim(-0.7 if values else 0.3, len(view.seeds) + 0.7)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate η (log scale)")
    ax.grid(axis="x", which="both", alpha=0.25)


def _deciding(view: SearchView) -> list[tuple[SeedView, str, dict]]:
    """Per seed its trial at lo (the largest success) and at hi (the smallest failure above)."""
    out = []
    for s in view.seeds:
        for end, lr in (("lo", s.lo), ("hi", s.hi)):
            t = next((t for t in view.trials if int(t["seed"]) == s.seed and t["lr"] == lr
                      and not t.get("cancelled")), None)
            if lr is not None and t is not None:
                out.append((s, end, t))
    return out


def _finite(x) -> bool:
    import math

    return x is not None and math.isfinite(x)


def _curves_panels(loss_ax, acc_ax, view: SearchView, plt) -> None:
    deciding = _deciding(view)
    colour = {s.seed: PALETTE[i % len(PALETTE)] for i, s in enumerate(view.seeds)}
    has_curves = any(t.get("curve_steps") for _, _, t in deciding)
    # the validation set's size where a trial records it, else as the fullest evaluation saw it
    fullest = max((n for _, _, t in deciding for n in t.get("curve_seen") or []), default=0)
    partial_drawn = False
    for s, end, t in deciding:
        steps = list(t.get("curve_steps") or [])
        loss = list(t.get("curve_loss") or [])
        if not steps or t["steps"] > steps[-1]:  # where it stopped, after its last point
            steps, loss = steps + [t["steps"]], loss + [t.get("final_loss")]
        pts = [(x, y) for x, y in zip(steps, loss, strict=True) if _finite(y)]
        style = dict(color=colour[s.seed], ls="-" if end == "lo" else "--",
                     marker="o" if end == "lo" else "x", ms=4, lw=1.6)
        label = f"seed {s.seed}, η {t['lr']:.3g}: {verdict(t)} at step {t['steps']}"
        if pts:
            loss_ax.plot(*zip(*pts, strict=True), **style, label=label,
                         gid=f"curve:{s.seed}:{end}")
        else:  # listed all the same: a legend that hides no trial
            loss_ax.plot([], [], **style, label=f"{label} (loss not finite: not drawn)")
        if _finite(t.get("max_loss")):
            loss_ax.plot([t["max_loss_step"]], [t["max_loss"]], marker="*", ms=14,
                         color=colour[s.seed], mfc=colour[s.seed] if end == "lo" else "white",
                         ls="", gid=f"max-loss:{s.seed}:{end}")
        acc = [(x, a) for x, a in zip(t.get("curve_steps") or [], t.get("curve_acc") or [],
                                      strict=True) if a is not None]
        if t.get("final_acc") is not None and (not acc or t["steps"] > acc[-1][0]):
            acc.append((t["steps"], t["final_acc"]))  # its last evaluation, in an old log
        if acc:
            acc_ax.plot(*zip(*acc, strict=True), **style, gid=f"accuracy:{s.seed}:{end}")
        part = [(x, a) for x, a, n in zip(t.get("curve_steps") or [], t.get("curve_acc") or [],
                                          t.get("curve_seen") or [], strict=False)
                if a is not None and 0 < n < (t.get("eval_examples") or fullest)]
        if part:  # an early exit: the accuracy of the examples it saw
            acc_ax.plot(*zip(*part, strict=True), ls="", marker="o", ms=7, mfc="white",
                        mec=colour[s.seed], gid=f"partial:{s.seed}:{end}")
            partial_drawn = True
    loss_ax.set(xlabel="training step", ylabel="training loss (log scale)", yscale="log",
                title="loss of the trials at each seed's bracket")
    if loss_ax.lines:
        _plain_log_ticks(loss_ax.yaxis)
    acc_ax.set(xlabel="training step", ylabel="validation accuracy",
               title="accuracy of the same trials")
    if view.threshold is not None:
        acc_ax.axhline(view.threshold, color="k", lw=1, ls=":", gid="threshold")
        acc_ax.annotate(f"threshold {view.threshold:g}", (0.01, view.threshold),
                        xycoords=("axes fraction", "data"), xytext=(0, 4),
                        textcoords="offset points", fontsize=FONT - 1)
    why = ("no curves recorded (an older trials log):\nonly where each trial stopped"
           if not has_curves
           else "criterion stable: no accuracy is evaluated" if view.criterion == "stable"
           else "")
    for ax in (loss_ax, acc_ax) if not has_curves else (acc_ax,) if why else ():
        ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center",
                color="#444444", wrap=True)
        if not ax.lines:
            ax.set_xticks([])
            ax.set_yticks([])
    if any(_finite(t.get("max_loss")) for _, _, t in deciding):
        loss_ax.plot([], [], marker="*", ms=14, ls="", color="#444444",
                     label="largest loss of a trial (hollow: hi)")
    if partial_drawn:  # in the shared legend below: a title this long ran into its neighbour's
        loss_ax.plot([], [], marker="o", ms=7, ls="", mfc="white", mec="#444444",
                     label="accuracy of an evaluation that stopped once its verdict was\n"
                           "certain, on the examples it saw (--full-eval sees all)")
    if loss_ax.lines:
        loss_ax.legend(loc="upper left", bbox_to_anchor=(0, -0.2), ncol=2, frameon=False,
                       title="solid: largest success (lo); dashed: smallest failure above (hi)")


# --- the sweep map ---------------------------------------------------------------------------

@dataclass
class SweepTable:
    """One results file as the sweep figure shows it."""

    label: str
    cells: list  # table.Cell: median η* and seed range of every cell with an η*
    missing: dict[tuple[int, int], dict[str, int]]  # cell -> status -> seeds without η*
    law: object | None  # fit.PowerLaw over the cells, None when it cannot be fitted
    why_no_fit: str = ""


def sweep_table(path: str, label: str | None = None) -> SweepTable:
    """Read a results CSV (depth, width, lr_star; status where present) for the sweep figure."""
    from .fit import fit_power_law
    from .table import FitError, cells_from_rows, read_table

    rows = read_table(path)
    need = [c for c in ("depth", "width", "lr_star") if c not in rows[0]]
    if need:
        raise PlotError(f"{path}: missing column{'s' * (len(need) > 1)} {', '.join(need)} "
                        f"(columns: {', '.join(rows[0])})")
    cells, excluded = cells_from_rows(rows, "lr_star", str(path))
    missing: dict[tuple[int, int], dict[str, int]] = {}
    for e in excluded:
        if isinstance(e["depth"], int):
            why = e["status"] or "no η*"
            per = missing.setdefault((e["depth"], e["width"]), {})
            per[why] = per.get(why, 0) + 1
    law, why = None, ""
    try:
        law = fit_power_law(cells)
    except FitError as e:
        why = str(e)
    return SweepTable(label or Path(path).stem, cells, missing, law, why)


def sweep_figure(main: SweepTable, compare: list[SweepTable] | None = None):
    """Left: η* over depth × width of `main` as an annotated heat map (cell median, seed range,
    seeds without η* counted; a cell where none has one hatched). Right: η* against d·w on log
    axes, one line per depth; with `compare`, every table's cell medians instead, each with its
    fitted line and α. Gids: "cell:<d>:<w>" (heat-map texts), "points:<label>",
    "depth:<d>", "fit:<label>"."""
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    compare = compare or []
    keys = {(c.depth, c.width) for c in main.cells} | set(main.missing)
    depths, widths = sorted({d for d, _ in keys}), sorted({w for _, w in keys})
    fig, (hax, lax) = plt.subplots(2, 1, figsize=(11, 5 + 0.75 * len(depths) + 5.5),
                                   gridspec_kw={"height_ratios": [0.75 * len(depths) + 0.5,
                                                                  5.5], "hspace": 0.3})
    values = np.full((len(depths), len(widths)), np.nan)
    for c in main.cells:
        values[depths.index(c.depth), widths.index(c.width)] = c.value
    finite = values[np.isfinite(values)]
    norm = LogNorm(vmin=finite.min(), vmax=max(finite.max(), finite.min() * 1.01))
    cmap = plt.get_cmap("cividis").with_extremes(bad="#e8e8e8")
    im = hax.imshow(values, cmap=cmap, norm=norm, aspect="auto")
    bar = fig.colorbar(im, ax=hax, fraction=0.04, pad=0.02)
    bar.set_label("η* (log scale)")
    _plain_log_ticks(bar.ax.yaxis)
    by_key = {(c.depth, c.width): c for c in main.cells}
    small = FONT - 1 if len(widths) > 5 else FONT
    for i, d in enumerate(depths):
        for j, w in enumerate(widths):
            c, miss = by_key.get((d, w)), main.missing.get((d, w), {})
            lost = sum(miss.values())
            if c is None:
                hax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//",
                                            edgecolor="#999999", lw=0))
                text = "no η*\n" + "\n".join(f"{s.replace('_', ' ')} ×{n}"
                                               for s, n in miss.items())
                ink = "k"
            else:
                text = f"{c.value:.3g}"
                if c.seeds > 1:
                    text += f"\n{c.low:.2g}–{c.high:.2g}"
                if lost:
                    text += f"\n{lost} of {c.seeds + lost} no η*"
                r, g, b, _ = cmap(norm(c.value))
                ink = "k" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "w"
            hax.text(j, i, text, ha="center", va="center", fontsize=small, color=ink,
                     gid=f"cell:{d}:{w}")
    hax.set_xticks(range(len(widths)), [str(w) for w in widths])
    hax.set_yticks(range(len(depths)), [str(d) for d in depths])
    hax.set(xlabel="width", ylabel="depth",
            title=f"{main.label}: η* per cell (median; seed range below)")
    tables = [main, *compare]
    if compare:
        for k, t in enumerate(tables):
            colour, marker = PALETTE[k % len(PALETTE)], "osD^vP*"[k % 7]
            dw = [c.depth * c.width for c in t.cells]
            lax.plot(dw, [c.value for c in t.cells], ls="", marker=marker, color=colour,
                     ms=6, alpha=0.85, gid=f"points:{t.label}",
                     label=_law_label(t))
            _fit_line(lax, t, colour)
    else:
        for k, d in enumerate(depths):
            cs = sorted((c for c in main.cells if c.depth == d), key=lambda c: c.width)
            if not cs:
                continue
            dw = [c.depth * c.width for c in cs]
            err = [[c.value - c.low for c in cs], [c.high - c.value for c in cs]]
            lax.errorbar(dw, [c.value for c in cs], yerr=err, marker="o", capsize=3,
                         color=PALETTE[k % len(PALETTE)], label=f"depth {d}", gid=f"depth:{d}")
        _fit_line(lax, main, "#444444", label=_law_label(main))
    lax.set(xscale="log", yscale="log", xlabel="depth × width (log scale)",
            ylabel="η* (median over seeds; log scale)",
            title="η* against d·w" + (": protocols compared" if compare else ""))
    lax.grid(which="both", alpha=0.25)
    _plain_log_ticks(lax.xaxis)
    _plain_log_ticks(lax.yaxis)
    lax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False,
               ncol=1 if compare else 3)
    return fig


def _plain_log_ticks(axis) -> None:
    """Log-axis labels as plain numbers (0.3, not 3×10⁻¹). Where the axis spans under two
    decades (few major ticks) minor ticks are labelled too: all of them under one decade,
    else those at 2 and 5."""
    import math

    from matplotlib.ticker import FuncFormatter

    axis.axes.autoscale_view()
    lo, hi = axis.get_view_interval()
    span = hi / lo if lo > 0 else math.inf

    def minor(v: float, _) -> str:
        if v <= 0:
            return ""
        mantissa = round(v / 10 ** math.floor(math.log10(v)), 6)
        return f"{v:g}" if span < 12 or (span < 120 and mantissa in (2, 5)) else ""

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(minor))


def _law_label(t: SweepTable) -> str:
    if t.law is None:
        return f"{t.label}: no fit ({t.why_no_fit})"
    lo, hi = t.law.alpha_ci
    return f"{t.label}: α = {t.law.alpha:.2f} [{lo:.2f}, {hi:.2f}], R² {t.law.r2:.2f}"


def _fit_line(ax, t: SweepTable, colour: str, label: str | None = None) -> None:
    if t.law is None:
        return
    dw = [c.depth * c.width for c in t.cells]
    x = np.geomspace(min(dw), max(dw), 50)
    ax.plot(x, t.law.c * x ** -t.law.alpha, color=colour, ls="--", lw=1.5, label=label,
            gid=f"fit:{t.label}")


# --- scans (milr plot scan): final objective against rate, η_opt, η* and the stability edge ---

# A scan's document (`ScanResult.to_dict()`, `milr scan --json`, a scan sweep's log record)
# has these keys.
SCAN_KEYS = ("config", "scan", "grid", "rates", "optimum", "seeds")
AXES = ("width", "depth")
# the marks: η_opt (with its interval), the seeds' median η* and the stability edge; hollow
# where not every seed's edge lies inside the grid (a median of fewer seeds, or a bound)
MARKS = {"opt": ("*", "η_opt (95% interval)"), "star": ("v", "median η* (accuracy edge)"),
         "edge": ("D", "stability edge")}


@dataclass
class ScanView:
    """One scan as `milr plot scan` draws it: its document and where it was read."""

    doc: dict
    source: str  # file (and line, for a log)

    def setting(self, key: str):
        """A config or scan setting of the scan (KeyError: neither has it)."""
        return self.doc["config"][key] if key in self.doc["config"] else self.doc["scan"][key]

    @property
    def objective(self) -> str:
        return self.doc["scan"]["objective"]

    def protocol(self) -> dict[str, str]:
        """Its config, scan settings and code hashes as a results row writes them (text)."""
        from ..sweep.store import CODE_FIELDS

        values = {**self.doc["config"], **self.doc["scan"],
                  **{k: self.doc[k] for k in CODE_FIELDS if k in self.doc}}
        return {k: "" if v is None else str(v) for k, v in values.items()}


def read_scans(paths: list[str]) -> tuple[list[ScanView], list[str]]:
    """The scans in `milr scan --json` outputs and scan sweeps' trials logs (in a log, a cell
    rerun counts once: its last record), and notes; anything else is refused by name. A file
    given twice (under any name: a glob's overlap, a link) is read once, and said."""
    from ..base.files import check_regular

    scans, notes, read = [], [], {}
    for path in paths:
        try:
            check_regular(path, "scan file")  # a FIFO would block the read forever
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in read:
                notes.append(f"{path}: the same file as {read[st.st_dev, st.st_ino]}, given "
                             "before: read once")
                continue
            read[st.st_dev, st.st_ino] = path
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise PlotError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}; give "
                            "milr scan --json outputs or a scan sweep's trials log") from None
        found = _scans_in(text, path, notes)
        if not found:
            raise PlotError(f"{path} holds no scan: give milr scan --json outputs or a scan "
                            "sweep's trials log")
        scans += found
    return scans, notes


def _scans_in(text: str, path: str, notes: list[str]) -> list[ScanView]:
    """The scans of one file's text: one JSON document, or a log's records (JSON lines)."""
    from ..sweep.store import (
        LOG_HEADER,
        counted_rows,
        log_measure,
        parse_trials,
        scan_seeds,
        trial_key,
    )

    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and LOG_HEADER not in doc and "depth" not in doc:
        return [_scan_view(doc, path)]  # a milr scan --json output (a log record has depth)
    cut = text.rfind("\n") + 1
    if text[cut:].strip():
        notes.append(f"{path}: last line has no line end (being written?): left out")
    try:
        header, records = parse_trials(text[:cut], Path(path))
    except ValueError as e:
        raise PlotError(f"{e} (not a milr scan --json output either)") from None
    if log_measure(header, records) == "search":
        raise PlotError(f"{path} is a search sweep's trials log, not a scan's: draw it with "
                        "milr plot search")
    counted = counted_rows(records, lambda nr: trial_key(nr[1]), lambda nr: scan_seeds(nr[1]))
    if len(counted) < len(records):
        notes.append(f"{path}: {len(records) - len(counted)} record(s) superseded by another "
                     "scan of the same cell (the one of most seeds counts): left out")
    return [_scan_view(rec, f"{path} line {n}") for n, rec in counted]


def _scan_view(doc: dict, where: str) -> ScanView:
    """A scan's document checked for what the figure reads, or refused naming where."""
    missing = [k for k in SCAN_KEYS if k not in doc]
    if missing:
        raise PlotError(f"{where} is not a scan (no {', '.join(missing)}): give milr scan "
                        "--json outputs or a scan sweep's trials log")
    if not _scan_parts_ok(doc):
        raise PlotError(f"{where}: its config, scan, optimum or seeds are not a scan's (a "
                        "milr scan --json output has them)")
    for k, rate in enumerate(doc["rates"] if isinstance(doc["rates"], list) else [None]):
        ok = isinstance(rate, dict) and _positive(rate.get("lr")) and all(
            isinstance(rate.get(f), list) and len(rate[f]) == 3
            and all(v is None or _number(v) for v in rate[f]) for f in OBJECTIVE_FIELDS.values())
        if not ok:
            raise PlotError(f"{where}: rates[{k}] is not a scan's rate (lr, and the median, "
                            "min and max of each objective)")
    return ScanView(doc, where)


def _scan_parts_ok(doc: dict) -> bool:
    """Whether a scan's document has the settings, optimum and seeds the figure reads."""
    from ..engine.scan import OPT_STATUSES

    c, o, seeds = doc["config"], doc["optimum"], doc["seeds"]
    return (isinstance(c, dict) and all(k in c for k in ("depth", "width", "steps", "dataset"))
            and isinstance(doc["scan"], dict) and doc["scan"].get("objective") in
            OBJECTIVE_FIELDS and isinstance(o, dict) and o.get("status") in OPT_STATUSES
            and (o["status"] != "ok" or _positive(o.get("eta_opt")) and (
                all(_positive(o.get(k)) for k in ("lo", "hi"))  # too few seeds: no interval
                or o.get("lo") is None and o.get("hi") is None))
            and isinstance(seeds, list) and all(
                isinstance(x, dict) and "status" in x and "stability_status" in x
                for x in seeds))


def check_scans(scans: list[ScanView], by: str | None, compare_by: str | None,
                objective: str | None) -> tuple[str, str]:
    """Refuse what cannot be drawn as asked (one objective, a known axis, a known key that
    splits the scans in two or more); returns (by, objective) with defaults filled."""
    seen: dict[str, list[str]] = {}
    for s in scans:
        seen.setdefault(s.objective, []).append(s.source)
    if len(seen) > 1:
        shown = "; ".join(f"{o} in {', '.join(src[:2])}" for o, src in seen.items())
        raise PlotError(f"scans of different objectives ({shown}): their η_opt are different "
                        "rates; draw each objective apart")
    if objective is not None and objective not in OBJECTIVE_FIELDS:
        raise PlotError(f"--objective {objective}: expected one of "
                        f"{', '.join(OBJECTIVE_FIELDS)}")
    if by is not None and by not in AXES:
        raise PlotError(f"--by {by}: expected width or depth")
    panels = scan_panels(scans, compare_by)
    if compare_by is not None and len(panels) < 2:
        raise PlotError(f"--compare-by {compare_by}: every scan has {compare_by} "
                        f"{next(iter(panels))}: nothing to compare")
    _one_protocol(scans, compare_by, panels)
    varies = [a for a in AXES if len({s.setting(a) for s in scans}) > 1]
    return by or (varies[0] if varies else "width"), objective or next(iter(seen))


def drawable(scans: list[ScanView], objective: str) -> tuple[list[ScanView], list[str]]:
    """The scans with a finite median `objective` at some rate, and a note naming each other
    one (every rate's median diverged: no curve, nothing a log axis can hold), left out;
    refused in one line where none is left."""
    kept, notes = [], []
    for s in scans:
        if np.isfinite(_rate_values(s, objective)[1][:, 0]).any():
            kept.append(s)
        else:
            notes.append(f"{s.source}: depth {s.setting('depth')} × width {s.setting('width')} "
                         f"has no finite {objective} at any rate (η_opt "
                         f"{s.doc['optimum']['status']}): left out of the figure")
    if not kept:
        shown = ", ".join(s.source for s in scans[:3]) + (" ..." if len(scans) > 3 else "")
        raise PlotError(f"nothing to draw: no scan has a finite {objective} at any rate (every "
                        f"rate's median diverged in {shown}); lower lr_min and scan again")
    return kept, notes


def _one_protocol(scans: list[ScanView], compare_by: str | None,
                  panels: dict[str, list[ScanView]]) -> None:
    """Refuse scans of different protocols as `milr fit` refuses rows (`table.protocol_split`,
    over the settings every scan records): depth, width and the rate grid are free, as a
    sweep's cells and rescans; inside each panel (`scan_panels`) nothing else, and with
    `compare_by`, across panels the compared setting and those tied to it (TIED_FIELDS)."""
    from ..base.config import SCAN_GRID_FIELDS, TIED_FIELDS

    for name, members in panels.items():
        _refuse_split(members, SCAN_GRID_FIELDS,
                      None if compare_by is None else panel_title(compare_by, name))
    if compare_by is not None:
        _refuse_split(scans, (*SCAN_GRID_FIELDS, compare_by, *TIED_FIELDS.get(compare_by, ())))


def _refuse_split(scans: list[ScanView], exempt: tuple, panel: str | None = None) -> None:
    """One line naming the first setting (not `exempt`) the scans differ in, its values and
    files; inside a panel (its title), no other --compare-by is suggested."""
    from .table import protocol_split

    settings = [s.protocol() for s in scans]
    known = set.intersection(*(set(p) for p in settings))
    split = protocol_split([{k: v for k, v in p.items() if k in known} for p in settings],
                           exempt)
    if split is None:
        return
    name, where, text = split
    shown = " and ".join(f"{name}={text[v]} ({', '.join(scans[i].source for i in idx[:2])}"
                         f"{' ...' if len(idx) > 2 else ''})"
                         for v, idx in list(where.items())[:4])
    setting, splits = _compared_setting(scans, name)
    if panel is not None:
        raise PlotError(f"scans of different protocols in the panel \"{panel}\": {shown}: "
                        f"not one quantity; a panel draws one {setting}: draw them in figures "
                        "of their own")
    raise PlotError(f"scans of different protocols: {shown}: not one quantity; draw one "
                    f"{setting} per figure" + (f", or side by side with --compare-by {setting}"
                                               if splits else ""))


def scan_panels(scans: list[ScanView], compare_by: str | None) -> dict[str, list[ScanView]]:
    """The scans of each panel by its name: one panel per value of `compare_by` (a model's or
    data function's: per function name and code hash, so one function under two paths is one
    panel and two versions of it are two, named with their hashes); one panel "" without it."""
    from .table import SPEC_HASHES, compared

    if compare_by is None:
        return {"": list(scans)}
    keyed: dict[tuple, list[ScanView]] = {}
    for s in scans:
        _setting(s, compare_by)  # refused in one line where a scan has no such setting
        row = s.protocol()
        keyed.setdefault((compared(row, compare_by), row.get(SPEC_HASHES.get(compare_by, ""))),
                         []).append(s)
    names = [_panel_value(members[0], compare_by) for members in keyed.values()]
    for short in (8, None):  # two versions of a function told apart by their hashes
        told = [name + (f" ({sha[:short] if sha else 'no hash'})" if names.count(name) > 1
                        else "")
                for name, (_, sha) in zip(names, keyed, strict=True)]
        if len(set(told)) == len(told):
            break
    else:  # the same name, no hash: a spec written before milr hashed code
        told = [str(members[0].setting(compare_by)) for members in keyed.values()]
    return dict(zip(told, keyed.values(), strict=True))


def _panel_value(s: ScanView, key: str) -> str:
    """A panel's value of `key` as its title shows it: a spec by its function's name, no model
    as the built-in network."""
    from .table import SPEC_HASHES

    value = s.setting(key)
    if key not in SPEC_HASHES:
        return str(value)
    if value is None:
        arch = s.setting("architecture")
        return "built-in " + ("MLP" if arch == "mlp" else f"{arch} network")
    return str(value).rpartition(":")[2] or str(value)


def panel_title(compare_by: str | None, name: str) -> str:
    """'parametrization mup'; a spec setting's 'model: net'."""
    from .table import SPEC_HASHES

    if compare_by is None:
        return ""
    return f"{compare_by}{':' * (compare_by in SPEC_HASHES)} {name}"


def _compared_setting(scans: list[ScanView], name: str) -> tuple[str, bool]:
    """The setting the scans differ in where they differ in column `name` (a code hash's:
    its spec) and whether `--compare-by` it would split them (a spec written alike over other
    code would not)."""
    from .table import SPEC_HASHES

    setting = next((f for f, column in SPEC_HASHES.items() if column == name), name)
    try:
        return setting, len({str(s.setting(setting)) for s in scans}) > 1
    except KeyError:
        return setting, False


def _setting(s: ScanView, key: str):
    try:
        return s.setting(key)
    except KeyError:
        raise PlotError(f"--compare-by {key}: not a setting of the scan in {s.source} (e.g. "
                        "parametrization, optimizer, depth)") from None


def scan_figure(scans: list[ScanView], by: str = "width", objective: str | None = None,
                compare_by: str | None = None):
    """Final objective (median over seeds, min–max band) against rate, one curve per `by`
    value, η_opt with its interval (none where not ok), median η* and stability edge marked;
    with `compare_by`, one panel per value of that setting, sharing the y axis. Gids:
    "curve:<panel>:<label>", "opt:…", "optci:…", "star:…", "edge:…"."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    objective = objective or scans[0].objective
    groups = scan_panels(scans, compare_by)
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups) + 1, 5.5), sharey=True,
                             squeeze=False)
    values = sorted({s.setting(by) for s in scans})
    colours = plt.cm.viridis(np.linspace(0, 0.85, len(values)))
    other = AXES[1 - AXES.index(by)]
    for ax, (group, members) in zip(axes[0], groups.items(), strict=True):
        many = len({s.setting(other) for s in members}) > 1
        for s in sorted(members, key=lambda s: (s.setting(by), s.setting(other))):
            label = f"{by} {s.setting(by)}" + (f", {other} {s.setting(other)}" if many else "")
            _scan_curve(ax, s, objective, colours[values.index(s.setting(by))],
                        f"{group}:{label}", label)
        ax.set(xscale="log", xlabel="learning rate (log scale)",
               title=panel_title(compare_by, group))
        if objective != "val-accuracy":
            ax.set_yscale("log")
        ax.grid(which="both", alpha=0.25)
        ax.legend(loc="best", fontsize=FONT - 2)
    for ax in axes[0]:  # once every panel is drawn: the shared y axis spans them all
        _plain_log_ticks(ax.xaxis)
        if objective != "val-accuracy":
            _plain_log_ticks(ax.yaxis)
    axes[0][0].set_ylabel(f"final {objective} (median over seeds; band: min–max)")
    keys = [Line2D([], [], ls="", marker=m, color="k", label=text) for m, text in MARKS.values()]
    keys.append(Line2D([], [], ls="", marker="v", color="k", mfc="none",
                       label="hollow: not every seed's edge inside the grid"))
    fig.legend(handles=keys, loc="lower center", ncol=4, frameon=False,
               bbox_to_anchor=(0.5, -0.06))
    c = scans[0].doc["config"]
    fig.suptitle(f"{objective} after {c['steps']} steps against rate"
                 + ("" if compare_by == "dataset" else f" on {c['dataset']}")
                 + ("" if objective == scans[0].objective else
                    f" (η_opt of {scans[0].objective})"))
    fig.tight_layout()
    return fig


def _rate_values(s: ScanView, objective: str) -> tuple[np.ndarray, np.ndarray]:
    """The rates, and the (median, min, max) of the objective per rate, NaN where none is
    finite (a diverged median)."""
    lrs = np.array([r["lr"] for r in s.doc["rates"]], dtype=float)
    stats = np.array([[np.nan if v is None else v for v in r[OBJECTIVE_FIELDS[objective]]]
                      for r in s.doc["rates"]], dtype=float)
    stats[~np.isfinite(stats)] = np.nan
    return lrs, stats


def _scan_curve(ax, s: ScanView, objective: str, colour, gid: str, label: str) -> None:
    """One scan's curve and band, and its three marks placed on the curve."""
    from ..engine.scan import lowest_status, seeds_status

    lrs, stats = _rate_values(s, objective)
    opt = s.doc["optimum"]
    flat = "" if opt["status"] == "ok" else f" (η_opt {opt['status']})"
    ax.plot(lrs, stats[:, 0], "-o", ms=3, color=colour, label=label + flat, gid=f"curve:{gid}")
    ax.fill_between(lrs, stats[:, 1], stats[:, 2], color=colour, alpha=0.15, lw=0)
    finite = np.isfinite(stats[:, 0])

    def on_curve(x: float) -> float:
        return float(np.interp(np.log(x), np.log(lrs[finite]), stats[finite, 0]))

    if not finite.any():
        return
    if opt["status"] == "ok":
        y = on_curve(opt["eta_opt"])
        if opt["lo"] is not None:  # None: too few seeds to resample
            ax.plot([opt["lo"], opt["hi"]], [y, y], color=colour, lw=3, alpha=0.6,
                    gid=f"optci:{gid}")
        ax.plot([opt["eta_opt"]], [y], ls="", marker=MARKS["opt"][0], ms=14, color=colour,
                mec="k", gid=f"opt:{gid}")
    seeds = s.doc["seeds"]
    for name, rate, status in (
            ("star", s.doc.get("eta_star_median"), seeds_status(x["status"] for x in seeds)),
            ("edge", s.doc.get("stability_edge"),
             lowest_status(x["stability_status"] for x in seeds))):
        if rate is not None:
            ax.plot([rate], [on_curve(rate)], ls="", marker=MARKS[name][0], ms=9, color=colour,
                    mec="k", mfc=colour if status == "ok" else "none", gid=f"{name}:{gid}")
