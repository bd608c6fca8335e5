"""`milr plot search`, `milr plot sweep` and `milr plot scan`: read results, call milr.plot, say
what was written."""

from __future__ import annotations

from typing import Annotated

import typer

from .render import command_app, console, err, fail

plot_app = command_app("Figures of finished measurements (needs matplotlib: pip install "
                       "'milr[plot]').")


def _written(path: str, notes: list[str] = ()) -> None:
    for note in notes:
        err.print(note, style="yellow", markup=False, highlight=False, soft_wrap=True)
    console.print(f"figure written to {path}", markup=False, highlight=False, soft_wrap=True)


@plot_app.command("search")
def search_cmd(
    trials: Annotated[str, typer.Argument(help="Trials log (JSON lines) of milr sweep --trials.")],
    cell: Annotated[tuple[int, int], typer.Option(help="DEPTH WIDTH: the cell to draw.")],
    results: Annotated[str | None, typer.Option(help="The sweep's results CSV: each seed's "
                                                     "status and η*, and the threshold "
                                                     "[default: brackets only].")] = None,
    out: Annotated[str, typer.Option(help="Figure file; the extension chooses PNG, SVG or "
                                          "PDF.")] = "search.png",
) -> None:
    """Every trial of one cell's search by verdict, brackets and η*, and the curves of the
    trials that decided each seed's bracket."""
    try:
        from ..analysis import plot

        path = plot.figure_path(out)  # before anything is read
        view = plot.search_view_from_log(trials, cell[0], cell[1], results)
        path = plot.save(plot.search_figure(view), path)
    except (ValueError, OSError) as e:
        fail(e)
    _written(path, view.notes)


@plot_app.command("sweep")
def sweep_cmd(
    results: Annotated[str, typer.Argument(help="Results CSV (depth, width, lr_star; status "
                                                "where present).")],
    out: Annotated[str, typer.Option(help="Figure file; the extension chooses PNG, SVG or "
                                          "PDF.")] = "map.png",
    compare: Annotated[list[str] | None, typer.Option(help="Another results CSV to overlay on "
                                                           "the η*-against-d·w panel, with its "
                                                           "fit (repeatable).")] = None,
) -> None:
    """η* over depth × width as an annotated heat map, and η* against d·w (one line per depth,
    or with --compare one fitted line per file)."""
    try:
        from ..analysis import plot

        path = plot.figure_path(out)
        main = plot.sweep_table(results)
        others = [plot.sweep_table(c) for c in compare or []]
        labels = [t.label for t in [main, *others]]
        if len(set(labels)) < len(labels):  # same stem twice: tell them apart by path
            for t, p in zip([main, *others], [results, *(compare or [])], strict=True):
                t.label = p
        path = plot.save(plot.sweep_figure(main, others), path)
    except (ValueError, OSError) as e:
        fail(e)
    notes = [f"{t.label}: no fitted line ({t.why_no_fit})" for t in [main, *others]
             if t.law is None]
    _written(path, notes)


@plot_app.command("scan")
def scan_cmd(
    files: Annotated[list[str], typer.Argument(help="milr scan --json outputs and/or a scan "
                                                    "sweep's trials log(s).")],
    out: Annotated[str, typer.Option(help="Figure file; the extension chooses PNG, SVG or "
                                          "PDF.")] = "scan.png",
    by: Annotated[str | None, typer.Option(help="One curve per width or per depth [default: "
                                                "the one that varies].")] = None,
    compare: Annotated[bool, typer.Option(help="One panel per parametrization, side by side "
                                               "on a shared y axis (SP against μP).")] = False,
    compare_by: Annotated[str | None, typer.Option(help="One panel per value of this setting "
                                                        "instead (e.g. optimizer; implies "
                                                        "--compare).")] = None,
    objective: Annotated[str | None, typer.Option(help="The curve drawn: val-loss, train-loss "
                                                       "or val-accuracy [default: the scans' "
                                                       "own objective].")] = None,
) -> None:
    """Final loss (or accuracy) against rate, one curve per width (or depth), each with its
    η_opt, median η* and stability edge marked; --compare: two parametrisations side by side."""
    try:
        from ..analysis import plot

        path = plot.figure_path(out)  # before anything is read
        scans, notes = plot.read_scans(files)
        key = compare_by or ("parametrization" if compare else None)
        by, objective = plot.check_scans(scans, by, key, objective)
        scans, left_out = plot.drawable(scans, objective)
        notes += left_out
        path = plot.save(plot.scan_figure(scans, by, objective, key), path)
    except (ValueError, OSError) as e:
        fail(e)
    _written(path, notes)
