"""Rich rendering of `milr coord-check` (its own module: the command's one table and verdict)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from .render import console

STATUS_STYLES = {"flat": "default", "shrinks": "yellow", "no change": "yellow",
                 "grows": "bold red", "non-finite": "bold red"}


def render_coord_check(check) -> None:
    """Per layer (means over seeds and the fixed batch): the coordinate size at t = 0 and at
    the last step, and the change from initialisation at the last step, at each width (or
    depth), with their log-log slopes and the layer's status; then the verdict."""
    last = check.config.steps
    table = Table(title=escape(check.describe()))
    table.add_column("layer", no_wrap=True)
    table.add_column(f"{check.axis}:", no_wrap=True)
    for v in check.values:
        table.add_column(str(v), justify="right")
    table.add_column("slope", justify="right")
    for k, s in enumerate(check.slopes):
        status = f"[{STATUS_STYLES[s.status]}]{s.status}[/]"
        for row, (what, data, t, value) in enumerate((
                ("|z|", check.size[k], 0, None), ("|z|", check.size[k], last, s.size),
                ("|z−z₀|", check.change[k], last, s.change))):
            table.add_row((s.layer, status, "")[row], f"{what}, t={t}",
                          *(f"{v[t]:.3g}" for v in data),
                          "" if t == 0 else "-" if value is None else f"{value:+.2f}",
                          end_section=row == 2)
    console.print(table)
    style = "green" if check.passed else "bold red" if check.flagged else "yellow"
    console.print(check.verdict(), style=style, markup=False, highlight=False)
