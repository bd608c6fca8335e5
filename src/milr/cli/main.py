"""The `milr` command: parse, call the library, render with rich. No logic of its own."""

from __future__ import annotations

import sys

try:  # torch loads with these (seconds): Ctrl-C meanwhile is one line too, not a traceback
    import dataclasses
    import inspect
    import json
    import typing
    from typing import Annotated

    import typer

    from ..base.config import (
        CoordConfig,
        EstimateConfig,
        FitConfig,
        NetworkConfig,
        ScanConfig,
        SharpnessConfig,
        defaults,
        help_for,
    )
    from .datacmd import data_app
    from .plotcmd import plot_app
    from .render import (
        SCAN_COST,
        SEARCH_COST,
        activity,
        command_app,
        err,
        fail,
        render_dry_run,
        render_estimate,
        render_fit,
        render_scan,
        render_scan_summary,
        render_sharpness,
        render_summary,
        task_progress,
    )
except KeyboardInterrupt:
    sys.stderr.write("milr: interrupted\n")
    raise SystemExit(130) from None

F = defaults(FitConfig)
# `estimate` and `sweep`: what the trials record, never a verdict (docs/protocol.md §4)
FullEval = Annotated[bool | None, typer.Option(
    "--full-eval/--early-exit", show_default="full on CUDA, early exit elsewhere",
    help="Evaluate all validation examples at every evaluation, so the trials record full "
         "accuracies; or stop an evaluation once its verdict is certain (no verdict changes; a "
         "trial's curve_seen says how many it saw).")]


def option(cls, name: str, *decls: str):
    """A typer option whose help is the config field's: defaults and help live in config.py."""
    return typer.Option(*decls, help=help_for(cls, name))


def config_options(*classes):
    """Give a command one option per field of `classes`, in field order, before its own
    parameters: each option's type, default and help are its field's, written once (config.py).
    The command receives them as keyword arguments (`**values`)."""
    def decorate(command):
        made = []
        for cls in classes:
            types = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                default = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
                flags = f.metadata.get("flags", ())
                made.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                              default=default,
                                              annotation=Annotated[types[f.name],
                                                                   option(cls, f.name, *flags)]))
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        command.__signature__ = inspect.Signature(made + own)
        return command
    return decorate


app = command_app("Measure the maximal initial learning rate η* of deep ReLU MLPs.")


app.add_typer(data_app, name="data")
app.add_typer(plot_app, name="plot")


@app.callback()
def _root() -> None:
    """Measure the maximal initial learning rate η* of deep ReLU MLPs."""


_told: list[str] = []  # the interruption messages printed (main() prints one if none was)


def _interrupted() -> None:
    """Ctrl-C or SIGTERM in a command that keeps nothing: one line, exit code 130."""
    _told.append("milr: interrupted")
    err.print(_told[-1])
    raise typer.Exit(130)


def _writable(path: str | None, what: str) -> None:
    """Fail before any work if `path` cannot be written (no regular file, or no directory)."""
    from ..base.files import check_writable

    if path is not None:
        check_writable(path, what)


def _config(cls, values: dict):
    """A config from a command's parameters of the same names (every field is an option)."""
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def _dump(obj) -> None:
    from ..base.results import json_safe

    sys.stdout.write(json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False) + "\n")


@app.command("estimate")
@config_options(EstimateConfig)
def estimate_cmd(
    *,
    lambda1_samples: Annotated[int, typer.Option(help="Also measure λ1 at initialisation per "
                                                      "seed on this many examples and report "
                                                      "c = η*·λ1 (0: off).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: config, per-seed "
                                                         "results and every trial.")] = False,
    plot: Annotated[str | None, typer.Option(help="Also draw the search to this file (PNG; "
                                                  "the extension chooses SVG or PDF): every "
                                                  "trial by verdict, brackets, η*, and the "
                                                  "deciding trials' curves.")] = None,
    full_eval: FullEval = None,
    **values,
) -> None:
    """Search η* of one constant-width ReLU MLP over several seeds."""
    try:
        cfg, plot = _before_training(EstimateConfig, values, plot, "--plot")
        from ..engine.estimation import estimate  # torch loads here: Ctrl-C is handled below

        with activity(not as_json) as say:
            def on_round(r: int, runs: int, active: int) -> None:
                say(f"round {r}: training {runs} runs for {active} seed(s)")
            result = estimate(cfg, on_round=on_round, lambda1_samples=lambda1_samples,
                              full_eval=full_eval)
    except (ValueError, OSError) as e:
        fail(e)
    except KeyboardInterrupt:
        _interrupted()

    def draw():
        from ..analysis.plot import search_figure, search_view_of

        return search_figure(search_view_of(result))
    _report(result, as_json, plot, draw, render_estimate)


@app.command("scan")
@config_options(EstimateConfig, ScanConfig)
def scan_cmd(
    *,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: config, the three rates, "
                                                         "the per-rate table and every "
                                                         "(rate, seed) run.")] = False,
    **values,
) -> None:
    """Train every rate of a log grid for the whole budget, all seeds: η_opt, η* and the
    stability edge of one configuration."""
    try:
        cfg, scfg = _config(EstimateConfig, values), _config(ScanConfig, values)
        from ..base.config import check_scan

        check_scan(cfg)
        from ..data.lookup import preflight

        preflight(cfg.dataset, cfg.data_dir)  # a refusal comes before torch (seconds) loads
        from ..engine.scan import scan_grid
        from ..engine.scanning import scan  # torch loads here: Ctrl-C is handled below

        rates = len(scan_grid(cfg.lr_min, cfg.lr_max, scfg.points_per_octave))
        with activity(not as_json) as say:
            told = [-1]

            def on_progress(done: int, members: int) -> None:
                if done > told[0]:
                    told[0] = done
                    say(f"{done} of {members} runs finished" if done else
                        f"training {rates} rates × {cfg.seeds} seed(s) for {cfg.steps} steps")
            result = scan(cfg, scfg, on_progress=on_progress)
    except (ValueError, OSError) as e:
        fail(e)
    except KeyboardInterrupt:
        _interrupted()
    if as_json:
        _dump(result.to_dict())
    else:
        render_scan(result)
    if result.optimum.status == "all_diverged":  # refused after its table: nothing is lost
        fail(f"every run of the grid diverged ({rates} rates from {cfg.lr_min:g} to "
             f"{result.grid[-1]:g}, {cfg.seeds} seed(s)): lower --lr-min")


@app.command("sharpness")
@config_options(NetworkConfig, SharpnessConfig)
def sharpness_cmd(
    *,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    **values,
) -> None:
    """λ1, the top Hessian eigenvalue at initialisation, per seed, with its residual."""
    from dataclasses import asdict

    try:
        cfg = _config(NetworkConfig, values)  # what λ1 depends on, and nothing else
        scfg = _config(SharpnessConfig, values)
        from ..data.lookup import preflight

        preflight(cfg.dataset, cfg.data_dir)  # a refusal comes before torch (seconds) loads
        from ..engine.sharpness import sharpness_seeds

        with activity(not as_json) as say:
            def on_seed(s: int) -> None:
                say(f"measuring λ1 of seed {s} ({s - cfg.seed + 1} of {cfg.seeds})")
            results = sharpness_seeds(cfg, scfg, on_seed=on_seed)
    except (ValueError, OSError) as e:
        fail(e)
    except KeyboardInterrupt:
        _interrupted()
    if as_json:
        _dump({"config": cfg.row(), "sharpness": asdict(scfg),
               "results": [asdict(r) for r in results]})
        return
    render_sharpness(results, cfg, scfg)


def _before_training(cls, values: dict, figure: str | None, what: str):
    """A command's config from its options, its figure's path (option `what`) and the data
    set's refusal, all before torch (seconds) loads: (config, figure path)."""
    if figure is not None:  # matplotlib, extension and directory: before any training
        from ..analysis.plot import figure_path

        figure = figure_path(figure, what)
    cfg = _config(cls, values)
    from ..data.lookup import preflight

    preflight(cfg.dataset, cfg.data_dir)
    return cfg, figure


def _report(result, as_json: bool, figure: str | None, draw, render) -> None:
    """A measurement as JSON (with the figure's path) or rendered, and the figure draw() makes
    written to `figure` if asked: a figure that cannot be written loses nothing measured (its
    one line and exit 2 come after the result)."""
    failed = None
    if figure is not None:
        try:
            from ..analysis.plot import save

            figure = save(draw(), figure)
        except (ValueError, OSError) as e:
            failed, figure = e, None
    if as_json:
        _dump({**result.to_dict(), "plot": figure})
    else:
        render(result)
    if failed is not None:
        fail(failed)
    if figure is not None:
        err.print(f"figure written to {figure}", markup=False, highlight=False, soft_wrap=True)


@app.command("coord-check")
@config_options(CoordConfig)
def coord_check_cmd(
    *,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: config, each layer's "
                                                         "size and change per width (or "
                                                         "depth) and step, slopes and "
                                                         "verdict.")] = False,
    out: Annotated[str | None, typer.Option(help="Also draw the check to this file (PNG; the "
                                                 "extension chooses SVG or PDF): per layer, "
                                                 "size and change against width (or depth), "
                                                 "one line per step.")] = None,
    **values,
) -> None:
    """μP's coordinate check: whether each layer's activations, and their change from
    initialisation, stay flat in width (or depth) over a few steps at one rate."""
    try:
        cfg, out = _before_training(CoordConfig, values, out, "--out")
        from ..engine.coord import coord_check  # torch loads here: Ctrl-C is handled below

        with activity(not as_json) as say:
            def on_size(i: int, value: int) -> None:
                say(f"training {cfg.axis} {value} ({i + 1} of {len(cfg.sizes)})")
            check = coord_check(cfg, on_size=on_size)
    except (ValueError, OSError) as e:
        fail(e)
    except KeyboardInterrupt:
        _interrupted()

    def draw():
        from ..analysis.coordplot import coord_figure

        return coord_figure(check)
    from .coordview import render_coord_check

    _report(check, as_json, out, draw, render_coord_check)
    if check.passed is False:  # a failed check exits 1, as a failing test does (bad input: 2)
        raise typer.Exit(1)


@app.command("fit")
def fit_cmd(
    results: Annotated[str, typer.Argument(help="Results CSV (from milr sweep, or any CSV with "
                                                "depth, width and the value column).")],
    where: Annotated[list[str] | None, option(FitConfig, "where")] = None,
    min_depth: Annotated[int | None, option(FitConfig, "min_depth")] = F.min_depth,
    max_depth: Annotated[int | None, option(FitConfig, "max_depth")] = F.max_depth,
    min_width: Annotated[int | None, option(FitConfig, "min_width")] = F.min_width,
    max_width: Annotated[int | None, option(FitConfig, "max_width")] = F.max_width,
    column: Annotated[str, option(FitConfig, "column")] = F.column,
    aggregate: Annotated[str, option(FitConfig, "aggregate")] = F.aggregate,
    bootstrap: Annotated[int, option(FitConfig, "bootstrap")] = F.bootstrap,
    seed: Annotated[int, option(FitConfig, "seed")] = F.seed,
    predict: Annotated[tuple[int, int] | None, typer.Option(help="DEPTH WIDTH: predicted η* "
                                                                 "with a 95% interval.")] = None,
    plot: Annotated[str | None, typer.Option(help="Write the figure to this PNG.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Fit η* = C (d·w)^−α (and C d^−a w^−b) with confidence intervals and goodness of fit."""
    try:
        from ..analysis.fit import fit_table

        fcfg = FitConfig(column=column, aggregate=aggregate, where=tuple(where or ()),
                         min_depth=min_depth, max_depth=max_depth, min_width=min_width,
                         max_width=max_width, bootstrap=bootstrap, seed=seed)
        if predict is not None and min(predict) < 1:
            raise ValueError(f"predict needs a positive depth and width, got {predict}")
        if plot is not None:  # matplotlib, extension and directory: before any work
            from ..analysis.plot import figure_path

            plot = figure_path(plot, "--plot")
        fitted = fit_table(results, fcfg)
        law, notes, relations = fitted.law, fitted.excluded, fitted.sharpness
        prediction = law.predict(*predict) if predict else None
        if plot:
            from ..analysis.plot import plot_fit

            plot = plot_fit(law, plot, title=f"{results}: {column}")  # the path written
    except (ValueError, OSError) as e:
        fail(e)
    except KeyboardInterrupt:
        _interrupted()
    if as_json:
        doc = {"source": results, "column": column, "aggregate": aggregate,
               "filters": fcfg.filters(), "excluded": notes, **law.to_dict(),
               "sharpness": relations, "plot": plot}
        if prediction:
            doc["prediction"] = {"depth": predict[0], "width": predict[1], "value": prediction[0],
                                 "pi95": prediction[1:]}
        _dump(doc)
        return
    render_fit(law, notes, relations, prediction, predict, plot,
               "η*" if column == "lr_star" else column)


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
    full_eval: FullEval = None,
) -> None:
    """Cover a depth × width grid, resumably: one CSV row per (cell, seed), or per cell for a
    grid with measure: scan."""
    from pathlib import Path

    try:  # torch loads here
        from ..analysis.table import summarise
        from ..data.lookup import forget
        from ..sweep import executors as ex
        from ..sweep import run as sw
        from ..sweep.grid import load_grid
        from ..sweep.store import ResultStore
    except KeyboardInterrupt:
        _interrupted()

    out = out or f"{Path(grid_file).stem}.csv"
    try:
        grid = load_grid(grid_file)
        ex.check_runner(workers, ray, gpus_per_cell)
        _writable(out, "results")
        _writable(trials, "trials log")
        # before the lock: a failure leaves nothing behind (a dry run runs nothing)
        runner = ex.local_runner if dry_run else ex.make_runner(workers, ray, gpus_per_cell)
        # a run holds the lock; a dry run calls no data function
        plan = sw.plan_sweep(grid, out, trials, lock=not dry_run, data=not dry_run)
        if runner is not ex.local_runner:  # its tasks load the data: the hash is all we need
            forget()
    except (ValueError, OSError) as e:
        fail(e)
    except KeyboardInterrupt:  # while the grid is expanded or the results file read
        _interrupted()
    for note in plan.notes:
        err.print(note, style="yellow", markup=False, highlight=False, soft_wrap=True)
    if dry_run:
        render_dry_run(len(grid.cells), plan.tasks,
                       [sw.task_cost_tflop(grid, t) for t in plan.tasks], out, len(plan.rows),
                       SEARCH_COST if grid.scan is None else SCAN_COST)
        return
    err.print(f"{len(plan.tasks)} task(s) to run for {len(grid.cells)} cell(s); "
              f"{len(plan.rows)} row(s) already in {out}")
    try:
        with sw.sigterm_as_interrupt(), task_progress(len(plan.tasks)) as on_task:
            report = sw.run_sweep(grid, out, runner, trials, on_task, plan, full_eval)
    except KeyboardInterrupt as e:
        kept = len(ResultStore(out).rows())
        why = "terminated" if isinstance(e, sw.Terminated) else "interrupted"
        _told.append(f"milr: {why}; {kept} finished row(s) are kept in {out}: "
                     "rerun the same command to resume")
        err.print(_told[-1])
        raise typer.Exit(143 if isinstance(e, sw.Terminated) else 130) from None
    except (ValueError, OSError) as e:
        fail(e)
    if grid.scan is not None:
        render_scan_summary(report.rows, out, report.ran)
    else:
        render_summary(summarise(report.rows), out, report.ran)


def _click_errors() -> tuple[type[Exception], ...]:
    """Usage-error classes: typer >= 0.20 vendors click as typer._click, older typer uses click."""
    found = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(__import__(name, fromlist=["ClickException"]).ClickException)
        except ImportError:
            pass
    return tuple(found)


def _terminate(signum, frame) -> None:
    """SIGTERM ends milr as Ctrl-C does: finished work is kept and one line is printed."""
    raise KeyboardInterrupt


def main() -> None:
    """Entry point: every usage error becomes one line on stderr and exit code 2."""
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    _told.clear()
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
    if rc == 130 and not _told:  # typer turns a Ctrl-C no command caught into a silent 130
        err.print("milr: interrupted")
    raise SystemExit(rc if isinstance(rc, int) else 0)
