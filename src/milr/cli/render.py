"""Rich rendering of the library's results for the CLI (tables and summary lines), and what its
commands share: their typer apps and the one-line failure."""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..base.results import STATUSES, Estimate, power, protocol_line, stability_edge

console = Console(emoji=False)
err = Console(stderr=True, emoji=False)


def command_app(help: str) -> typer.Typer:  # noqa: A002 - typer's word
    """A typer app (or sub-app) as every milr command group is: plain help texts ("[lo, hi]" is
    not markup), no completion, no pretty tracebacks, its help when called without arguments."""
    return typer.Typer(add_completion=False, no_args_is_help=True,
                       pretty_exceptions_enable=False, rich_markup_mode=None, help=help)


def fail(problem: str | Exception) -> NoReturn:
    """One line on stderr, exit code 2. OSErrors are shown as "path: reason"."""
    if isinstance(problem, OSError) and problem.filename:
        problem = f"{problem.filename}: {problem.strerror}"
    err.print(f"milr: error: {problem}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def below_range_advice(e: Estimate) -> str:
    """What to change for a seed that ended below_range: where the top of the scan failed by
    being too slow rather than diverging, the window may lie above lr_max; else below lr_min."""
    low = {s.seed for s in e.seeds if s.status == "below_range"}
    tops = {}
    for t in e.trials:
        if t.seed in low and t.role in ("", "path") and t.lr >= tops.get(t.seed, (0, None))[0]:
            tops[t.seed] = (t.lr, t)
    slow = [t.seed for _, t in tops.values() if not t.success and not t.diverged]
    lower = (f"lower --lr-min, {e.config.lr_min:g} here (the default depends on --optimizer), "
             "or raise --steps")
    if not slow:
        return lower
    return (f"raise --lr-max: the top of the scan was too slow, not diverging, for seed(s) "
            f"{', '.join(map(str, sorted(slow)))}, so the window may lie above it; else "
            + lower)


def _band(n: int | None) -> str:
    """A count of edge probes against the bracket: '-' where none were tried."""
    return "-" if n is None else f"[yellow]{n}[/]" if n else "0"


def render_estimate(e: Estimate) -> None:
    c = e.config
    table = Table(title=f"η* of depth {c.depth} × width {c.width} on {escape(c.dataset)} "
                        f"({escape(protocol_line(c))})")
    cols = ["seed", "status", "η*", "bracket [lo, hi]", "trials", "non-monotone"]
    if c.edge_probes:
        cols.append(f"trained above hi (of {c.edge_probes})")
    if c.edge_probes and c.edge_below:
        cols.append(f"failed below lo (of {c.edge_probes})")
    if c.also_steps:
        cols += [f"η* at {c.also_steps} steps", "its status"]
    if e.lambda1 is not None:
        cols += ["λ1", "c = η*·λ1"]
    for col in cols:
        table.add_column(col, justify="right")
    for s in e.seeds:
        star = f"{s.lr_star:.4g}" if s.lr_star is not None else "-"
        bracket = f"[{_g(s.lo)}, {_g(s.hi)}]"
        row = [str(s.seed), s.status, star, bracket, str(s.trials), str(s.nonmonotone)]
        if c.edge_probes:
            row.append(_band(s.edge_trained))
        if c.edge_probes and c.edge_below:
            row.append(_band(s.edge_failed_below))
        if c.also_steps:
            row += [_g(s.also_lr_star) if s.also_lr_star is not None else "-", s.also_status]
        if e.lambda1 is not None:
            lam = e.lambda1.get(s.seed)
            row += ["[red]not converged[/]" if lam is None else f"{lam:.4g}",
                    _g(e.c.get(s.seed))]
        table.add_row(*row)
    console.print(table)
    if e.median is None:
        console.print("[bold red]no seed gave an η* inside the search range[/]: see the status "
                      f"column (above_range: raise --lr-max; below_range: "
                      f"{below_range_advice(e)}; unfinished: raise --max-rounds or --rtol)")
    else:
        lo, hi = e.spread
        n_ok = len(e.values)
        console.print(f"η* = [bold]{e.median:.4g}[/] (median of {n_ok} seed(s); range {lo:.4g}–"
                  f"{hi:.4g}; std of log η* {e.log_std:.3f})")
        for status in STATUSES:
            n = sum(s.status == status for s in e.seeds)
            if status != "ok" and n:
                console.print(f"[yellow]{n} seed(s) {status}: {STATUSES[status]}[/]")
        band = [s for s in e.seeds if s.edge_trained]
        if band:
            console.print(f"[yellow]{len(band)} seed(s) also trained above hi ("
                          f"{sum(s.edge_trained for s in band)} of "
                          f"{len(band) * c.edge_probes} rates up to {c.edge_factor:g}·hi): a "
                          "chaotic edge, where η* is the boundary the search reached and the "
                          "band above it is stated, not resolved[/]")
        below = [s for s in e.seeds if s.edge_failed_below]
        if below:
            console.print(f"[yellow]{len(below)} seed(s) failed below lo ("
                          f"{sum(s.edge_failed_below for s in below)} of "
                          f"{len(below) * c.edge_probes} rates down to lo/{c.edge_factor:g}): "
                          "the band extends below the bracket too[/]")
    also = [s.also_lr_star for s in e.seeds if s.also_status == "ok"]
    if c.also_steps and also:
        ratio = (f"; {statistics.median(also) / e.median:.3g} × η* at {c.steps}"
                 if e.median is not None else "")  # no η* at the budget: no ratio, never NaN
        console.print(f"η* at {c.also_steps} steps = [bold]{statistics.median(also):.4g}[/] "
                      f"(median of {len(also)} seed(s); range {min(also):.4g}–{max(also):.4g}"
                      f"{ratio})")
    elif c.also_steps:
        console.print(f"[bold red]no seed gave an η* at {c.also_steps} steps[/]: see its "
                      "status column")
    if e.c:
        _render_c(e)
    elif e.lambda1 is not None:
        console.print("[yellow]no seed has both an η* and a converged λ1: c is not reported[/]")
    console.print(f"{len(e.trials)} training runs in {e.rounds} rounds, {e.member_steps} "
                  f"member-steps, {e.wall_time:.1f} s on {e.device}")


def _render_c(e: Estimate) -> None:
    """c and c_eff per their medians, and the edge of stability only where one holds: it is
    about c_eff (c only where every tensor trains at the same rate), and not Adam's."""
    for name, vals in (("c = η*·λ1", e.c), ("c_eff = η*·λ1_eff", e.c_eff)):
        if vals:
            v = list(vals.values())
            console.print(f"{name} = [bold]{statistics.median(v):.4g}[/] (median of {len(v)} "
                          f"seed(s); range {min(v):.4g}–{max(v):.4g})")
    edge, what = stability_edge(e.config)
    if edge is None:
        console.print(f"no edge of stability is claimed for c or c_eff: {what}")
    else:
        console.print(f"c_eff = {edge:.3g} is the edge of stability of full-batch {what}, on "
                      "the quadratic model at initialisation (λ1_eff: λ1 of S^½HS^½, S the "
                      "per-tensor rate scales; c_eff = c only where all are 1)")


def _spread(stat: tuple[float, float, float], digits: str = ".3g") -> str:
    """A scan's (median, min, max) as one cell; a diverged run's +inf loss as 'div'."""
    def one(v: float) -> str:
        return "div" if v == float("inf") else f"{v:{digits}}"
    return f"{one(stat[0])} ({one(stat[1])}–{one(stat[2])})"


def render_scan(r) -> None:
    """A scan (`engine.scan.ScanResult`): the per-rate table, then η_opt, the stability edge,
    each seed's η* bracket and the two ratios; a missing number is said, never shown as one."""
    from ..engine.scan import EDGE_STATUSES, OPT_STATUSES

    c = r.config
    table = Table(title=f"scan of depth {c.depth} × width {c.width} on {escape(c.dataset)} "
                        f"({escape(protocol_line(c))}); medians over {c.seeds} seed(s), a diverged "
                        "run counted as the worst (div: +inf loss, accuracy 0); met: the "
                        "threshold met before any divergence")
    for col in ("lr", "train loss (range)", "val loss (range)", "val acc (range)", "diverged",
                "met"):
        table.add_column(col, justify="right")
    for row in r.rates:
        table.add_row(f"{row.lr:.4g}", _spread(row.train_loss), _spread(row.val_loss),
                      _spread(row.val_acc), f"{row.diverged}/{row.seeds}",
                      f"{row.met}/{row.seeds}")
    console.print(table)
    o, objective = r.optimum, r.scan.objective
    if o.status == "ok":
        console.print(f"η_opt = [bold]{o.eta_opt:.4g}[/] ({objective}; grid minimum "
                      f"{o.grid_rate:.4g}{', refined by a parabola' if o.refined else ''}), "
                      f"{_interval(o.lo, o.hi, len(r.seeds), 4)}")
    else:
        where = f" (best median at {o.grid_rate:.4g})" if o.grid_rate is not None else ""
        console.print(f"[yellow]η_opt: {o.status}{where}: {OPT_STATUSES[o.status]}[/]")
    edges = ", ".join(f"seed {s.seed}: {_g(s.stability_edge)} ({s.stability_status})"
                      for s in r.seeds)
    bound = {"ok": "=", "above_range": "≥"}.get(r.stability_edge_status)
    edge = (f"stability edge {bound} [bold]{_g(r.stability_edge)}[/] (no seed diverged up to it)"
            if bound else f"stability edge: {r.stability_edge_status}")
    console.print(f"{edge}; median over seeds {_g(r.stability_edge_median)}; {edges}")
    for status in ("above_range", "below_range"):
        if any(s.stability_status == status for s in r.seeds):
            console.print(f"[yellow]stability edge {status}: {EDGE_STATUSES[status]}[/]")
    brackets = ", ".join(f"seed {s.seed}: [{_g(s.lo)}, {_g(s.hi)}] {s.status}"
                         + (f", {s.nonmonotone} non-monotone" if s.nonmonotone else "")
                         for s in r.seeds)
    star = f"[bold]{_g(r.eta_star_median)}[/]" if r.eta_star_status == "ok" else \
        f"{_g(r.eta_star_median)} ({r.eta_star_status}: not every seed's η* is inside the grid)"
    console.print(f"η* on the grid = {star} (median of the seeds with a bracket; threshold "
                  f"{c.threshold}); {brackets}")
    console.print(f"η_opt / η* = {_g(r.eta_opt_over_eta_star)}; η_opt / stability edge "
                  f"(the lowest seed's) = {_g(r.eta_opt_over_stability_edge)}")
    console.print(f"{len(r.runs)} training runs, {r.member_steps} member-steps, "
                  f"{r.wall_time:.1f} s on {r.device}")


def render_sharpness(results, cfg, scfg) -> None:
    """λ1 per seed; a value that did not converge is shown as such, never as a number."""
    samples = results[0].samples if results else scfg.samples
    table = Table(title=f"λ1 at initialisation, depth {cfg.depth} × width {cfg.width} on "
                        f"{escape(cfg.dataset)} ({samples} samples"
                        f"{', preconditioned' if scfg.preconditioned else ''})")
    for col in ("seed", "λ1", "2/λ1", "residual", "HVPs", "method"):
        table.add_column(col, justify="right")
    for r in results:
        shown = f"{r.lambda1:.5g}" if r.converged else "[red]not converged[/]"
        two = f"{2 / r.lambda1:.4g}" if r.converged and r.lambda1 > 0 else "-"
        table.add_row(str(r.seed), shown, two, f"{r.residual:.1e}", str(r.hvps), r.method)
    console.print(table)
    ok = [r.lambda1 for r in results if r.converged]
    if ok:
        console.print(f"λ1 = [bold]{statistics.median(ok):.5g}[/] (median of {len(ok)} "
                      f"converged seed(s); range {min(ok):.5g}–{max(ok):.5g})")
    if len(ok) < len(results):
        console.print(f"[yellow]{len(results) - len(ok)} seed(s) did not converge to tol "
                      f"{scfg.tol}: their value is not reported[/]")


def render_fit(law, notes, relations, prediction, predict, plot, name: str = "η*") -> None:
    """A fit (`milr fit`) of the column shown as `name`."""
    p = console.print
    p(f"[bold]{name} = {law.c:.4g} · (depth·width){power(-law.alpha)}[/]   over {len(law.cells)} "
      "cells")
    p(f"  α = {law.alpha:.4f} ± {law.alpha_se:.4f} (SE), 95% CI [{law.alpha_ci[0]:.4f}, "
      f"{law.alpha_ci[1]:.4f}];  C 95% CI [{law.c_ci[0]:.4g}, {law.c_ci[1]:.4g}]")
    if law.bootstrap:
        b = law.bootstrap
        p(f"  bootstrap ({b['resamples']} resamples of cells): α 95% CI "
          f"[{b['alpha_ci95'][0]:.4f}, {b['alpha_ci95'][1]:.4f}], C 95% CI "
          f"[{b['C_ci95'][0]:.4g}, {b['C_ci95'][1]:.4g}]")
    p(f"  R² = {law.r2:.4f} (adjusted {law.adj_r2:.4f}), RMSE in log {name} = {law.rmse:.4f}")
    p(f"  seeds per cell: {seeds_per_cell(law.cells)}")
    p(f"two exponents: {name} = C · d^−a · w^−b with a = {law.a:.4f} [{law.a_ci[0]:.4f}, "
      f"{law.a_ci[1]:.4f}], b = {law.b:.4f} [{law.b_ci[0]:.4f}, {law.b_ci[1]:.4f}]")
    verdict = ("[bold]not compatible[/]: depth and width enter with different exponents"
               if not law.compatible else "compatible: d·w is a sufficient variable here"
               if law.resolved else "not rejected, but neither a nor b is told from 0: the "
               "test cannot tell whether d·w is the variable")
    p(f"  a = b test: p = {law.a_minus_b_p:.3g} → {verdict}")
    p(f"  model comparison: AIC {law.aic:.2f} (d·w) vs {law.two_aic:.2f} (d, w); adjusted R² "
      f"{law.adj_r2:.4f} vs {law.two_adj_r2:.4f}")
    table = Table(title="largest residuals")
    for col in ("depth", "width", "seeds", name, f"log({name}/fit)"):
        table.add_column(col, justify="right")
    for c, r in law.worst():
        table.add_row(str(c.depth), str(c.width), f"{c.seeds}/{c.rows or c.seeds}",
                      f"{c.value:.4g}", f"{r:+.3f}")
    console.print(table)
    for col, rel in relations.items():
        _render_relation(col, rel)
    _render_excluded(notes)
    if prediction:
        p(f"predicted {name}({predict[0]}, {predict[1]}) = {prediction[0]:.4g}, 95% prediction "
          f"interval [{prediction[1]:.4g}, {prediction[2]:.4g}]")
    if plot:
        p(f"figure written to {plot}")


def seeds_per_cell(cells) -> str:
    """'3 of 3 in 18 cells; 1 of 3 in (1, 64)': cells aggregated over fewer seeds stand out."""
    groups: dict[tuple[int, int], list] = {}
    for c in cells:
        groups.setdefault((c.seeds, c.rows or c.seeds), []).append(c)
    parts = []
    for (used, tried), cs in sorted(groups.items(), key=lambda g: -len(g[1])):
        where = (f"{len(cs)} cells" if len(cs) > 3 and used == tried else
                 ", ".join(f"({c.depth}, {c.width})" for c in cs))
        parts.append(f"{used} of {tried} in {where}")
    return "; ".join(parts)


def _render_relation(col: str, rel: dict) -> None:
    """One λ column: its laws (when three cells allow them) and c = η*·λ per cell."""
    p = console.print
    name = "λ1" if col == "lambda1" else "λ1 (input-lr preconditioned)"
    if "vs_depth_width" in rel:
        vs, ev, ratio = rel["vs_depth_width"], rel["eta_vs_lambda1"], rel[
            "eta_over_2_div_lambda1"]
        p(f"{name}: ∝ (d·w){power(vs['slope'], 3)} [{vs['slope_ci'][0]:.3f}, "
          f"{vs['slope_ci'][1]:.3f}] (R² {vs['r2']:.3f});  η* ∝ {name}"
          f"{power(ev['slope'], 3)} [{ev['slope_ci'][0]:.3f}, {ev['slope_ci'][1]:.3f}] "
          f"(R² {ev['r2']:.3f}), i.e. η* ∝ (2/λ1)"
          f"{power(rel['eta_vs_2_over_lambda1']['slope'], 3)} (1 would be inverse);  "
          f"η* / (2/λ1): median {ratio['median']:.3g}, range {ratio['min']:.3g}–"
          f"{ratio['max']:.3g}")
    c, name = rel["c"], ("c = η*·λ1" if col == "lambda1" else "c_eff = η*·λ1_eff")
    if not c["seeds"]:
        p(f"{name}: no seed has both an η* and a converged λ1")
        return
    line = (f"{name} (dimensionless): median {c['median']:.4g}, range {c['min']:.4g}–"
            f"{c['max']:.4g} over {c['seeds']} seed(s) in {len(c['per_cell'])} cell(s)")
    fit = c["vs_depth_width"]
    if fit:
        line += (f";  c ∝ (d·w){power(fit['slope'], 3)}, 95% CI [{fit['slope_ci'][0]:.3f}, "
                 f"{fit['slope_ci'][1]:.3f}] (R² {fit['r2']:.3f})")
    p(line)
    table = Table(title=f"{name} per cell")
    how = c.get("aggregate", "median")
    for head in ("depth", "width", "seeds", f"{how} c", "range"):
        table.add_column(head, justify="right")
    for cell in c["per_cell"]:
        table.add_row(str(cell["depth"]), str(cell["width"]), f"{cell['seeds']}/{cell['rows']}",
                      f"{cell[how]:.4g}", f"{cell['min']:.4g}–{cell['max']:.4g}")
    console.print(table)


def _render_excluded(notes: list[dict]) -> None:
    """Every row left out of the fit, with its line and why; each reason explained once."""
    if not notes:
        return
    table = Table(title=f"{len(notes)} row(s) left out of the fit")
    for head in ("line", "depth", "width", "seed", "why"):
        table.add_column(head, justify="right" if head != "why" else "left")
    for n in notes:
        table.add_row(str(n["line"]), str(n["depth"]), str(n["width"]), n["seed"] or "-",
                      escape(n["reason"].split(":")[0]))
    console.print(table)
    for reason in dict.fromkeys(n["reason"] for n in notes):
        if ":" in reason:
            console.print(f"[yellow]{escape(reason)}[/]")


SEARCH_COST = ("each seed ~12 full-budget runs; early exits make it far less; ? for a model of "
               "one's own, whose cost is not known ahead")
SCAN_COST = "each cell: rates × seeds runs, each the whole budget; a diverged run stops early"


def render_dry_run(cells: int, tasks: list, costs: list[float], path: str, done: int,
                   how: str = SEARCH_COST) -> None:
    """The tasks a sweep would run, each with its cost bound in TFLOP (`how`: what it
    assumes)."""
    table = Table(title=f"{cells} cells; {done} row(s) already in {escape(str(path))}")
    for col in ("depth", "width", "seeds to run", "≤ TFLOP"):
        table.add_column(col, justify="right")
    for t, cost in zip(tasks, costs, strict=True):
        table.add_row(str(t.depth), str(t.width), f"{t.seed}–{t.seed + t.count - 1}",
                      _tflop(cost))
    console.print(table)
    console.print(f"{len(tasks)} task(s) to run, at most about {_tflop(sum(costs))} TFLOP "
                  f"({how})")


def _tflop(cost: float) -> str:
    """A cost bound, or ? where none is known (NaN: a model of one's own)."""
    return "?" if math.isnan(cost) else f"{cost:.3g}"


def render_summary(summary: list[dict], path: str, ran: int) -> None:
    """Per cell of a results file (`table.summarise`): seeds with an η*, median and range."""
    table = Table(title=f"η* per cell ({escape(str(path))}; {ran} new row(s))")
    for col in ("depth", "width", "seeds ok", "median η*", "range"):
        table.add_column(col, justify="right")
    for c in summary:
        rng = f"{c['min']:.4g}–{c['max']:.4g}" if c["median"] is not None else "-"
        table.add_row(str(c["depth"]), str(c["width"]), f"{c['ok']}/{c['seeds']}",
                      _g(c["median"]), rng)
    console.print(table)


def render_scan_summary(rows: list[dict], path: str, ran: int) -> None:
    """Per cell of a scan sweep's results file: η_opt with its interval or its status, the
    median η* and the stability edge, each with its status where not ok."""
    table = Table(title=f"η_opt per cell ({escape(str(path))}; {ran} new row(s))")
    for col in ("depth", "width", "seeds", "η_opt (its interval)", "η* (median)",
                "stability edge"):
        table.add_column(col, justify="right")
    for r in sorted(rows, key=lambda r: (int(r["depth"]), int(r["width"]))):
        lo, hi = (float(r[k]) if r[k] else None for k in ("eta_opt_lo", "eta_opt_hi"))
        opt = (f"{float(r['eta_opt']):.4g} ({_interval(lo, hi, int(r['seeds']))})"
               if r["eta_opt_status"] == "ok" else r["eta_opt_status"])
        table.add_row(r["depth"], r["width"], r["seeds"], opt,
                      _with_status(r["eta_star_median"], r["eta_star_status"]),
                      _with_status(r["stability_edge"], r["stability_edge_status"]))
    console.print(table)


def _interval(lo: float | None, hi: float | None, seeds: int, digits: int = 3) -> str:
    """η_opt's bootstrap interval, or that it has none: too few seeds to resample (one seed's
    would be a point, never shown as an interval)."""
    if lo is None or hi is None:
        return f"no interval: {seeds} seed{'s' * (seeds != 1)}"
    return f"95% bootstrap interval [{lo:.{digits}g}, {hi:.{digits}g}]"


def _with_status(text: str, status: str) -> str:
    """A results file's number, with its status beside it where that is not ok."""
    shown = _g(float(text)) if text else "-"
    return shown if status == "ok" else f"{shown} ({status})"


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


@contextmanager
def activity(show: bool = True) -> Iterator[Callable[[str], None]]:
    """What a long command is doing, told by the `say` it yields: a spinner line on a terminal;
    otherwise (a log, a pipe) one plain line per call, so the log shows that the work began and
    how far it got. With `show` false, nothing (a --json run). A log line is written directly:
    rich forgets what it wrote only after the write, so a Ctrl-C just then would repeat it."""
    if not show:
        yield lambda text: None
    elif err.is_terminal:
        with err.status("starting") as status:
            yield status.update
    else:
        yield lambda text: sys.stderr.write(f"{text}\n")


def _seeds_done(rows: list[dict]) -> str:
    """The seeds a task's rows hold: one row per seed (a search), or one row for all of a
    cell's seeds (a scan: its first seed and their number)."""
    from ..sweep.store import is_scan_row

    if len(rows) == 1 and is_scan_row(rows[0]):
        first, n = int(rows[0]["seed"]), int(rows[0]["seeds"])
        return f"{first}–{first + n - 1}" if n > 1 else str(first)
    return ", ".join(str(x["seed"]) for x in rows)


def task_progress(total: int):
    """A rich progress bar over tasks (on a terminal), yielding the on_task callback."""
    from contextlib import contextmanager

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    @contextmanager
    def ctx():
        if not err.is_terminal:
            def plain(n: int, total: int, rows: list[dict]) -> None:
                r = rows[0]
                err.print(f"[{n}/{total}] depth {r['depth']} width {r['width']} "
                          f"seeds {_seeds_done(rows)} done")
            yield plain
            return
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), console=err) as bar:
            tid = bar.add_task("sweep", total=total)

            def advance(n: int, total: int, rows: list[dict]) -> None:
                bar.update(tid, completed=n,
                           description=f"depth {rows[0]['depth']} width {rows[0]['width']}")
            yield advance

    return ctx()
