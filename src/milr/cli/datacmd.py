"""`milr data list` and `milr data fetch`: parse, call milr.data.survey or .fetch, render."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Annotated

import typer
from rich.table import Table

from ..data import mnist1d
from ..data.fetch import SOURCES, FetchResult, fetch
from ..data.formats import DataError
from ..data.lookup import roots
from ..data.survey import survey
from .render import command_app, console, err, fail

data_app = command_app("Find the data sets on disk, and download them with verified checksums.")


@data_app.command("list")
def list_cmd(
    data_dir: Annotated[str | None, typer.Option(help="Directory searched first.")] = None,
) -> None:
    """Every known data set: found or not, where, size, shapes, checksums."""
    try:
        entries = survey(data_dir)
    except (DataError, OSError) as e:
        fail(e)
    table = Table(title="milr data sets (train + eval × inputs)")
    for col in ("name", "found", "where", "layout", "size", "shapes", "checksum"):
        table.add_column(col, overflow="fold")
    for e in entries:
        found = "[green]yes[/]" if e.found and not e.problem else (
            "[red]unreadable[/]" if e.found else "[yellow]no[/]")
        shapes = e.shapes or (e.problem if e.found else e.get)
        table.add_row(e.name, found, e.where or "-", e.layout or "-", _size(e.size),
                      shapes, e.checksum or "-")
    console.print(table)
    for e in entries:
        if not e.found:
            err.print(e.problem, markup=False, highlight=False, soft_wrap=True)


def _size(n: int) -> str:
    return "-" if not n else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} B"


@data_app.command("build")
def build_cmd(
    name: Annotated[str, typer.Argument(help=f"One of {', '.join(mnist1d.SAMPLES)}.")],
    data_dir: Annotated[str | None, typer.Option(help="Root to build in [default: $MILR_DATA, "
                                                      "else ~/.local/share/milr].")] = None,
) -> None:
    """Generate a data set that a package builds offline (MNIST-1D), and cache it with its
    SHA-256; a set already built is checked instead."""
    try:
        if name not in mnist1d.SAMPLES:
            raise DataError(f"unknown data set to build {name!r}: expected one of "
                            f"{', '.join(mnist1d.SAMPLES)}")
        root = roots(data_dir)[0]
        _, b, built = mnist1d.arrays(name, root)
    except (DataError, OSError) as e:
        fail(e)
    where = mnist1d.cache_paths(root, name)[0]
    console.print(f"{name}: {'built' if built else 'already built and verified'} in {where} "
                  f"(SHA-256 {b.sha256[:12]}…)", markup=False, highlight=False)
    if not b.matches_reference:
        err.print(b.mismatch(), markup=False, highlight=False, soft_wrap=True)


@data_app.command("fetch")
def fetch_cmd(
    name: Annotated[str, typer.Argument(help=f"One of {', '.join(SOURCES)}.")],
    to: Annotated[str | None, typer.Option(help="Root directory [default: $MILR_DATA, else "
                                                "~/.local/share/milr].")] = None,
    mirror: Annotated[str | None, typer.Option(help="Base URL serving the same files.")] = None,
) -> None:
    """Download the official files of NAME, verify their SHA-256, put them in place."""
    try:
        with _progress() as on_bytes:
            result = fetch(name, to, mirror, progress=on_bytes)
    except (DataError, OSError) as e:
        fail(e)
    _report(result)


def _report(r: FetchResult) -> None:
    if r.downloaded:
        console.print(f"{r.name}: downloaded and verified {', '.join(r.downloaded)}")
    if r.present and not r.downloaded:
        console.print(f"{r.name}: already present and verified")
    console.print(f"{r.name} is in {r.where}")


@contextmanager
def _progress():
    """A rich byte progress bar on a terminal; a line per finished file otherwise."""
    if not err.is_terminal:
        def plain(file: str, done: int, total: int) -> None:
            if done == total:
                err.print(f"downloaded {file} ({total} bytes)", markup=False, highlight=False)
        yield plain
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=err) as bar:
        tasks: dict[str, int] = {}

        def advance(file: str, done: int, total: int) -> None:
            if file not in tasks:
                tasks[file] = bar.add_task(file, total=total)
            bar.update(tasks[file], completed=done)
        yield advance
