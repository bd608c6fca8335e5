"""The `milr` command: parse, call the library, render with rich. No logic of its own."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from . import sweep as sw
from .config import EstimateConfig
from .render import (
    err,
    render_dry_run,
    render_estimate,
    render_fit,
    render_sharpness,
    render_summary,
    task_progress,
)
from .search import estimate

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Measure the maximal initial learning rate η* of deep ReLU MLPs.",
)


@app.callback()
def _root() -> None:
    """Measure the maximal initial learning rate η* of deep ReLU MLPs."""


def _fail(problem: str | Exception) -> None:
    """One line on stderr, exit code 2. OSErrors are shown as "path: reason"."""
    if isinstance(problem, OSError) and problem.filename:
        problem = f"{problem.filename}: {problem.strerror}"
    err.print(f"milr: error: {problem}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _writable(path: str | None, what: str) -> None:
    """Fail before any work if `path` cannot be created (its directory is missing)."""
    from pathlib import Path

    if path is not None and not Path(path).resolve().parent.is_dir():
        raise ValueError(f"cannot write {what} {path}: directory {Path(path).parent} "
                         "does not exist")


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
                                             "(0: auto, 1 on CPU, up to 8 on CUDA).")] = 0,
    midpoint: Annotated[str, typer.Option(
        help="Where a bracket is split: weighted (least expected cost), geometric or "
             "arithmetic.")] = "weighted",
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
    except (ValueError, OSError) as e:
        _fail(e)
    if as_json:
        _dump(result.to_dict())
    else:
        render_estimate(result)


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

    from .sharpness import sharpness_seeds

    try:
        cfg = EstimateConfig(depth=depth, width=width, dataset=dataset, data_dir=data_dir,
                             seeds=seeds, seed=seed, input_lr_scale=input_lr_scale,
                             device=device)
        results = sharpness_seeds(cfg, samples, preconditioned, tol)
    except (ValueError, OSError) as e:
        _fail(e)
    if as_json:
        _dump({"config": cfg.row(), "samples": samples, "preconditioned": preconditioned,
               "results": [asdict(r) for r in results]})
        return
    render_sharpness(results, depth, width, dataset, samples, preconditioned, tol)


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
        _writable(plot, "plot")
        rows = ft.read_table(results)
        cells, notes = ft.cells_from_rows(rows, column, results, aggregate)
        cells = ft.select(cells, where, min_depth, max_depth, min_width, max_width)
        law = ft.fit_power_law(cells, bootstrap, seed)
        relations = ft.sharpness_relations(rows, cells, results) if column == "lr_star" else {}
        prediction = law.predict(*predict) if predict else None
        if plot:
            from .plot import plot_fit

            plot_fit(law, plot, title=f"{results}: {column}")
    except (ValueError, OSError) as e:
        _fail(e)
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
        _writable(out, "results")
        _writable(trials, "trials log")
        plan = sw.plan_sweep(grid, out)
    except (ValueError, OSError) as e:
        _fail(e)
    if dry_run:
        render_dry_run(grid, plan.tasks, out, len(plan.rows))
        return
    if ray is not None:
        runner = sw.ray_runner(None if ray == "local" else ray, gpus_per_cell)
    elif workers > 1:
        runner = sw.process_runner(workers)
    else:
        runner = sw.local_runner
    err.print(f"{len(plan.tasks)} task(s) to run for {len(grid.cells)} cell(s); "
              f"{len(plan.rows)} row(s) already in {out}")
    try:
        with task_progress(len(plan.tasks)) as on_task:
            report = sw.run_sweep(grid, out, runner, trials, on_task, plan)
    except KeyboardInterrupt:
        kept = len(sw.ResultStore(out).rows())
        err.print(f"milr: interrupted; {kept} finished row(s) are kept in {out}: "
                  "rerun the same command to resume")
        raise typer.Exit(130) from None
    except (ValueError, OSError) as e:
        _fail(e)
    if report.repaired:
        err.print(f"[yellow]repaired {out}: removed a half-written last line[/]")
    render_summary(report.rows, out, report.ran)


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
