"""The `milr` command: parse, call the library, render with rich. No logic of its own."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import sweep as sw
from .config import EstimateConfig
from .search import Estimate, estimate

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Measure the maximal initial learning rate η* of deep ReLU MLPs.",
)
console = Console()
err = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Measure the maximal initial learning rate η* of deep ReLU MLPs."""


def _fail(message: str) -> None:
    err.print(f"milr: error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _dump(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@app.command("estimate")
def estimate_cmd(
    depth: Annotated[int, typer.Option(help="Number of hidden layers.")],
    width: Annotated[int, typer.Option(help="Units per hidden layer.")],
    dataset: Annotated[str, typer.Option(help="gaussians, fashion-mnist, mnist, cifar10 or "
                                              "a .npz path.")] = "gaussians",
    data_dir: Annotated[str | None, typer.Option(help="Directory holding the data files.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Validation accuracy that counts as "
                                                         "trained [default: per dataset].")] = None,
    steps: Annotated[int, typer.Option(help="SGD step budget per run.")] = 1000,
    batch_size: Annotated[int, typer.Option()] = 128,
    eval_every: Annotated[int, typer.Option(help="Steps between validation checks.")] = 50,
    seeds: Annotated[int, typer.Option(help="Number of seeds.")] = 5,
    seed: Annotated[int, typer.Option(help="First seed.")] = 0,
    input_lr_scale: Annotated[float, typer.Option(help="Input-layer lr = lr * this.")] = 0.1,
    lr_min: Annotated[float, typer.Option()] = 1e-3,
    lr_max: Annotated[float, typer.Option()] = 10.0,
    rtol: Annotated[float, typer.Option(help="Relative width of the final bracket.")] = 0.05,
    probes: Annotated[int, typer.Option(help="Learning rates per seed and round "
                                             "(0: 1 on CPU, 8 on CUDA).")] = 0,
    midpoint: Annotated[str, typer.Option(help="geometric or arithmetic.")] = "geometric",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32 or tf32.")] = "fp32",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: config, per-seed "
                                                         "results and every trial.")] = False,
) -> None:
    """Search η* of one constant-width ReLU MLP over several seeds."""
    try:
        cfg = EstimateConfig(
            depth=depth, width=width, dataset=dataset, data_dir=data_dir, threshold=threshold,
            steps=steps, batch_size=batch_size, eval_every=eval_every, seeds=seeds, seed=seed,
            input_lr_scale=input_lr_scale, lr_min=lr_min, lr_max=lr_max, rtol=rtol,
            probes=probes, midpoint=midpoint, device=device, precision=precision,
        )
        if err.is_terminal and not as_json:
            with err.status("starting") as status:
                def on_round(r: int, runs: int, active: int) -> None:
                    status.update(f"round {r}: training {runs} runs for {active} seed(s)")
                result = estimate(cfg, on_round=on_round)
        else:
            result = estimate(cfg)
    except ValueError as e:
        _fail(str(e))
    if as_json:
        _dump(result.to_dict())
    else:
        render_estimate(result)


def render_estimate(e: Estimate) -> None:
    c = e.config
    table = Table(title=f"η* of depth {c.depth} × width {c.width} on {c.dataset} "
                        f"(threshold {c.threshold})")
    for col in ("seed", "status", "η*", "bracket [lo, hi]", "trials", "non-monotone"):
        table.add_column(col, justify="right")
    for s in e.seeds:
        star = f"{s.lr_star:.4g}" if s.lr_star is not None else "-"
        bracket = f"[{_g(s.lo)}, {_g(s.hi)}]"
        table.add_row(str(s.seed), s.status, star, bracket, str(s.trials), str(s.nonmonotone))
    console.print(table)
    if e.median is None:
        console.print("[bold red]no seed gave an η* inside the search range[/]: see the status "
                      "column (above_range: raise --lr-max; below_range: lower --lr-min or "
                      "raise --steps)")
    else:
        lo, hi = e.spread
        n_ok = len(e.values)
        console.print(f"η* = [bold]{e.median:.4g}[/] (median of {n_ok} seed(s); range {lo:.4g}–"
                  f"{hi:.4g}; std of log η* {e.log_std:.3f})")
        if n_ok < len(e.seeds):
            console.print(f"[yellow]{len(e.seeds) - n_ok} seed(s) had no η* inside the range[/]")
    console.print(f"{len(e.trials)} training runs in {e.rounds} rounds, {e.member_steps} "
                  f"member-steps, {e.wall_time:.1f} s on {e.device}")


@app.command("sharpness")
def sharpness_cmd(
    depth: Annotated[int, typer.Option(help="Number of hidden layers.")],
    width: Annotated[int, typer.Option(help="Units per hidden layer.")],
    dataset: Annotated[str, typer.Option()] = "gaussians",
    data_dir: Annotated[str | None, typer.Option()] = None,
    seeds: Annotated[int, typer.Option()] = 5,
    seed: Annotated[int, typer.Option(help="First seed.")] = 0,
    samples: Annotated[int, typer.Option(help="Training examples in the fixed batch.")] = 1024,
    input_lr_scale: Annotated[float, typer.Option(help="Used with --preconditioned.")] = 0.1,
    preconditioned: Annotated[bool, typer.Option(help="λ1 of S^½HS^½, S = per-layer lr scales "
                                                      "(what SGD sees).")] = False,
    tol: Annotated[float, typer.Option(help="Relative residual that counts as "
                                            "converged.")] = 1e-3,
    device: Annotated[str, typer.Option()] = "auto",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """λ1, the top Hessian eigenvalue at initialisation, per seed, with its residual."""
    from dataclasses import asdict

    from .data import load
    from .sharpness import sharpness
    from .train import resolve_device

    try:
        if samples < 1:
            raise ValueError(f"samples must be a positive integer, got {samples}")
        if not 0 < tol < 1:
            raise ValueError(f"tol must lie in (0, 1), got {tol}")
        cfg = EstimateConfig(depth=depth, width=width, dataset=dataset, data_dir=data_dir,
                             seeds=seeds, seed=seed, input_lr_scale=input_lr_scale,
                             device=device)
        data = load(dataset, data_dir).to(resolve_device(device))
        results = [sharpness(cfg, data, s, samples, preconditioned, tol)
                   for s in range(seed, seed + seeds)]
    except ValueError as e:
        _fail(str(e))
    if as_json:
        _dump({"config": cfg.row(), "samples": samples, "preconditioned": preconditioned,
               "results": [asdict(r) for r in results]})
        return
    table = Table(title=f"λ1 at initialisation, depth {depth} × width {width} on {dataset} "
                        f"({samples} samples{', preconditioned' if preconditioned else ''})")
    for col in ("seed", "λ1", "2/λ1", "residual", "HVPs", "method"):
        table.add_column(col, justify="right")
    for r in results:
        shown = f"{r.lambda1:.5g}" if r.converged else "[red]not converged[/]"
        two = f"{2 / r.lambda1:.4g}" if r.converged and r.lambda1 > 0 else "-"
        table.add_row(str(r.seed), shown, two, f"{r.residual:.1e}", str(r.hvps), r.method)
    console.print(table)
    ok = [r.lambda1 for r in results if r.converged]
    if ok:
        import statistics

        console.print(f"λ1 = [bold]{statistics.median(ok):.5g}[/] (median of {len(ok)} "
                      f"converged seed(s); range {min(ok):.5g}–{max(ok):.5g})")
    if len(ok) < len(results):
        console.print(f"[yellow]{len(results) - len(ok)} seed(s) did not converge to tol "
                      f"{tol}: their value is not reported[/]")


@app.command("fit")
def fit_cmd(
    results: Annotated[str, typer.Argument(help="Results CSV (from milr sweep, or any CSV with "
                                                "depth, width and the value column).")],
    where: Annotated[list[str] | None, typer.Option(help='Keep cells where this holds, e.g. '
                                                         '"width >= 8 * depth" (repeatable).')
                     ] = None,
    min_depth: Annotated[int | None, typer.Option()] = None,
    max_depth: Annotated[int | None, typer.Option()] = None,
    min_width: Annotated[int | None, typer.Option()] = None,
    max_width: Annotated[int | None, typer.Option()] = None,
    column: Annotated[str, typer.Option(help="Column to fit.")] = "lr_star",
    aggregate: Annotated[str, typer.Option(help="Seeds per cell: median or mean.")] = "median",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples over cells (0: off).")] = 0,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    predict: Annotated[tuple[int, int] | None, typer.Option(help="DEPTH WIDTH: predicted η* "
                                                                 "with a 95% interval.")] = None,
    plot: Annotated[str | None, typer.Option(help="Write the figure to this PNG.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Fit η* = C (d·w)^−α (and C d^−a w^−b) with confidence intervals and goodness of fit."""
    from . import fit as ft

    try:
        if bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
        if predict is not None and min(predict) < 1:
            raise ValueError(f"predict needs a positive depth and width, got {predict}")
        rows = ft.read_table(results)
        cells, notes = ft.cells_from_rows(rows, column, results, aggregate)
        cells = ft.select(cells, where, min_depth, max_depth, min_width, max_width)
        law = ft.fit_power_law(cells, bootstrap, seed)
        relations = ft.sharpness_relations(rows, cells, results) if column == "lr_star" else {}
        prediction = law.predict(*predict) if predict else None
        if plot:
            from .plot import plot_fit

            plot_fit(law, plot, title=f"{results}: {column}")
    except ValueError as e:
        _fail(str(e))
    if as_json:
        doc = {"source": results, "column": column, "aggregate": aggregate,
               "filters": {"where": where or [], "min_depth": min_depth, "max_depth": max_depth,
                           "min_width": min_width, "max_width": max_width},
               "excluded": notes, **law.to_dict(), "sharpness": relations}
        if prediction:
            doc["prediction"] = {"depth": predict[0], "width": predict[1], "value": prediction[0],
                                 "pi95": prediction[1:]}
        _dump(doc)
        return
    render_fit(law, notes, relations, prediction, predict, plot)


def render_fit(law, notes, relations, prediction, predict, plot) -> None:
    p = console.print
    p(f"[bold]η* = {law.c:.4g} · (depth·width)^−{law.alpha:.4f}[/]   over {len(law.cells)} cells")
    p(f"  α = {law.alpha:.4f} ± {law.alpha_se:.4f} (SE), 95% CI [{law.alpha_ci[0]:.4f}, "
      f"{law.alpha_ci[1]:.4f}];  C 95% CI [{law.c_ci[0]:.4g}, {law.c_ci[1]:.4g}]")
    if law.bootstrap:
        b = law.bootstrap
        p(f"  bootstrap ({b['resamples']} resamples of cells): α 95% CI "
          f"[{b['alpha_ci95'][0]:.4f}, {b['alpha_ci95'][1]:.4f}], C 95% CI "
          f"[{b['C_ci95'][0]:.4g}, {b['C_ci95'][1]:.4g}]")
    p(f"  R² = {law.r2:.4f} (adjusted {law.adj_r2:.4f}), RMSE in log η* = {law.rmse:.4f}")
    p(f"two exponents: η* = C · d^−a · w^−b with a = {law.a:.4f} [{law.a_ci[0]:.4f}, "
      f"{law.a_ci[1]:.4f}], b = {law.b:.4f} [{law.b_ci[0]:.4f}, {law.b_ci[1]:.4f}]")
    verdict = ("compatible: d·w is a sufficient variable here" if law.compatible else
               "[bold]not compatible[/]: depth and width enter with different exponents")
    p(f"  a = b test: p = {law.a_minus_b_p:.3g} → {verdict}")
    p(f"  model comparison: AIC {law.aic:.2f} (d·w) vs {law.two_aic:.2f} (d, w); adjusted R² "
      f"{law.adj_r2:.4f} vs {law.two_adj_r2:.4f}")
    table = Table(title="largest residuals")
    for col in ("depth", "width", "η*", "log(η*/fit)"):
        table.add_column(col, justify="right")
    for c, r in law.worst():
        table.add_row(str(c.depth), str(c.width), f"{c.value:.4g}", f"{r:+.3f}")
    console.print(table)
    for col, rel in relations.items():
        name = "λ1" if col == "lambda1" else "λ1 (input-lr preconditioned)"
        vs, ev, ratio = rel["vs_depth_width"], rel["eta_vs_lambda1"], rel[
            "eta_over_2_div_lambda1"]
        p(f"{name}: ∝ (d·w)^{vs['slope']:.3f} [{vs['slope_ci'][0]:.3f}, {vs['slope_ci'][1]:.3f}]"
          f" (R² {vs['r2']:.3f});  η* ∝ {name}^{ev['slope']:.3f} [{ev['slope_ci'][0]:.3f}, "
          f"{ev['slope_ci'][1]:.3f}] (R² {ev['r2']:.3f});  η* / (2/λ1): median "
          f"{ratio['median']:.3g}, range {ratio['min']:.3g}–{ratio['max']:.3g}")
    for n in notes:
        p(f"[yellow]excluded {n}[/]")
    if prediction:
        p(f"predicted η*({predict[0]}, {predict[1]}) = {prediction[0]:.4g}, 95% prediction "
          f"interval [{prediction[1]:.4g}, {prediction[2]:.4g}]")
    if plot:
        p(f"figure written to {plot}")


@app.command("sweep")
def sweep_cmd(
    grid_file: Annotated[str, typer.Argument(help="Grid YAML (see sweeps/).")],
    out: Annotated[str | None, typer.Option(help="Results CSV [default: <grid name>.csv]. "
                                                 "Rerunning resumes it.")] = None,
    trials: Annotated[str | None, typer.Option(help="Also append every trial to this JSONL "
                                                    "file.")] = None,
    workers: Annotated[int, typer.Option(help="Local worker processes (CPU).")] = 1,
    ray: Annotated[str | None, typer.Option(help="Run cells as Ray tasks: 'local' starts a "
                                                 "local cluster, else a cluster address.")] = None,
    gpus_per_cell: Annotated[float | None, typer.Option(help="With --ray: GPU share per cell "
                                                             "(e.g. 0.25 packs 4).")] = None,
    dry_run: Annotated[bool, typer.Option(help="List the cells and their cost; train "
                                               "nothing.")] = False,
) -> None:
    """Cover a depth × width grid, resumably: one CSV row per (cell, seed)."""
    from pathlib import Path

    out = out or f"{Path(grid_file).stem}.csv"
    try:
        grid = sw.load_grid(grid_file)
        if workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers}")
        if gpus_per_cell is not None and not 0 < gpus_per_cell <= 1:
            raise ValueError(f"gpus-per-cell must lie in (0, 1], got {gpus_per_cell}")
        store = sw.ResultStore(out)
        rows = store.rows()
        store.check_compatible(rows, grid)
    except ValueError as e:
        _fail(str(e))
    tasks = sw.pending_tasks(grid, {sw._cell(r) for r in rows})
    if dry_run:
        render_dry_run(grid, tasks, out, len(rows))
        return
    if ray is not None:
        runner = sw.ray_runner(None if ray == "local" else ray, gpus_per_cell)
    elif workers > 1:
        runner = sw.process_runner(workers)
    else:
        runner = sw.local_runner
    err.print(f"{len(tasks)} task(s) to run for {len(grid.cells)} cell(s); "
              f"{len(rows)} row(s) already in {out}")
    try:
        with _task_progress(len(tasks)) as on_task:
            report = sw.run_sweep(grid, out, runner, trials, on_task)
    except KeyboardInterrupt:
        kept = len(sw.ResultStore(out).rows())
        err.print(f"milr: interrupted; {kept} finished row(s) are kept in {out}: "
                  "rerun the same command to resume")
        raise typer.Exit(130) from None
    except ValueError as e:
        _fail(str(e))
    if report.repaired:
        err.print(f"[yellow]repaired {out}: removed a half-written last line[/]")
    render_summary(report.rows, out, report.ran)


def _task_progress(total: int):
    """A rich progress bar over tasks (on a terminal), yielding the on_task callback."""
    from contextlib import contextmanager

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    @contextmanager
    def ctx():
        if not err.is_terminal:
            def plain(n: int, total: int, rows: list[dict]) -> None:
                r = rows[0]
                err.print(f"[{n}/{total}] depth {r['depth']} width {r['width']} "
                          f"seeds {', '.join(str(x['seed']) for x in rows)} done")
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


def render_dry_run(grid: sw.Grid, tasks: list[sw.Task], path: str, done: int) -> None:
    table = Table(title=f"{len(grid.cells)} cells; {done} row(s) already in {path}")
    for col in ("depth", "width", "seeds to run", "≤ TFLOP"):
        table.add_column(col, justify="right")
    total = 0.0
    for t in tasks:
        cost = sw.estimated_cost(grid, t)
        total += cost
        table.add_row(str(t.depth), str(t.width), f"{t.seed}–{t.seed + t.count - 1}",
                      f"{cost:.3g}")
    console.print(table)
    console.print(f"{len(tasks)} task(s) to run, at most about {total:.3g} TFLOP "
           "(each seed ~12 full-budget runs; early exits make it far less)")


def render_summary(rows: list[dict], path: str, ran: int) -> None:
    table = Table(title=f"η* per cell ({path}; {ran} new row(s))")
    for col in ("depth", "width", "seeds ok", "median η*", "range"):
        table.add_column(col, justify="right")
    for c in sw.summarise(rows):
        rng = f"{c['min']:.4g}–{c['max']:.4g}" if c["median"] is not None else "-"
        table.add_row(str(c["depth"]), str(c["width"]), f"{c['ok']}/{c['seeds']}",
                      _g(c["median"]), rng)
    console.print(table)


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _click_errors() -> tuple[type[Exception], ...]:
    """Usage-error classes: typer >= 0.20 vendors click as typer._click, older typer uses click."""
    found = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(__import__(name, fromlist=["ClickException"]).ClickException)
        except ImportError:
            pass
    return tuple(found)


def main() -> None:
    """Entry point: every usage error becomes one line on stderr and exit code 2."""
    try:
        rc = app(standalone_mode=False)  # returns the code of a typer.Exit raised in a command
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except typer.Abort:
        err.print("milr: interrupted")
        raise SystemExit(130) from None
    except _click_errors() as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            raise SystemExit(0) from None
        err.print(f"milr: error: {e.format_message()}", markup=False, highlight=False,
                  soft_wrap=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        err.print("milr: interrupted")
        raise SystemExit(130) from None
    raise SystemExit(rc if isinstance(rc, int) else 0)
