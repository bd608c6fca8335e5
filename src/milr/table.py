"""Results tables read back: rows -> cells (seeds aggregated per depth × width), with what was
left out and why, and the filters that choose a regime. Used by `milr fit` and sweep summaries."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .expr import compile_filter
from .grid import FIXED_FIELDS
from .results import STATUSES, Cell, aggregate, ok_values
from .store import complete_lines, counted_rows, row_key


class FitError(ValueError):
    """A results table that cannot be fitted; the message names the file, column or cell."""


class Row(dict):
    """A CSV record that remembers its physical line, so that messages can name it."""

    line: int = 0


@dataclass(frozen=True)
class Usable:
    """One row's value of a column, checked: a finite positive number from a row that counts."""

    line: int
    depth: int
    width: int
    seed: str
    value: float


TRUE = ("true", "1", "yes")


def read_table(path: str | Path) -> list[dict]:
    """Rows of a CSV (UTF-8, with or without a BOM); every failure names the file and line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise FitError(f"cannot read {path}: {e.strerror}") from None
    if not raw.strip():
        raise FitError(f"{path} is empty: no header and no data rows")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise FitError(f"{path} line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); "
                       "save the table as UTF-8") from None
    complete = len(raw[:complete_lines(raw)].decode("utf-8-sig"))
    reader = csv.DictReader(io.StringIO(text[:complete] or text, newline=""))
    rows, left_out = [], []
    try:
        for rec in reader:
            if None in rec:  # csv files the fields beyond the header under the key None
                raise FitError(f"{path} line {reader.line_num}: "
                               f"{len(reader.fieldnames) + len(rec[None])} fields, but the "
                               f"header has {len(reader.fieldnames)}")
            if None in rec.values():  # fewer fields than the header: csv fills in None
                have = sum(v is not None for v in rec.values())
                left_out.append(_unread(rec, reader.line_num, f"{have} fields, but the header "
                                        f"has {len(reader.fieldnames)}"))
                continue
            row = Row(rec)
            row.line = reader.line_num
            rows.append(row)
    except csv.Error as e:
        raise FitError(f"{path} line {reader.line_num}: not a CSV record ({e})") from None
    if complete and complete < len(text):  # the store's rule: a line without its end is torn
        line = text[:complete].count("\n") + 1
        rec = dict(zip(reader.fieldnames or [], next(csv.reader([text[complete:]]), []),
                       strict=False))
        left_out.append(_unread(rec, line, "no line end: a row being written or cut off by a "
                                           "kill (its last field may be cut short)"))
    if not rows:
        why = "; ".join(f"line {e['line']}: {e['reason']}" for e in left_out)
        raise FitError(f"{path} has a header but no complete data rows ({why})" if why
                       else f"{path} has a header but no data rows")
    out = Rows(counted_rows(rows, _key) if "seed" in rows[0] else rows)
    out.left_out = left_out
    return out


class Rows(list):
    """The rows of a table, and the lines left out as it was read (torn or short), with why."""

    left_out: list[dict] = []


def _unread(rec: dict, line: int, reason: str) -> dict:
    """A line that is not a row, as a note of what was left out (its fields as far as known)."""
    return {"line": line, "depth": rec.get("depth") or "", "width": rec.get("width") or "",
            "seed": str(rec.get("seed") or ""), "status": rec.get("status") or "",
            "reason": reason}


def _key(r: dict) -> tuple:
    """(depth, width, seed) as the store keys rows (`store.row_key`: integers, so "1" and "01"
    are one seed); a field that is not an integer is kept as written, refused later by line."""
    try:
        return row_key(r)
    except (TypeError, ValueError):
        return r["depth"], r["width"], r["seed"]


def usable(rows: list[dict], column: str = "lr_star", source: str = "results"
           ) -> tuple[list[Usable], list[dict]]:
    """Every row's value of `column`, or the reason it is left out (one dict per row left out).

    A row counts when its `status` is "ok" (or absent), its value is not empty and, for a λ1
    column, `lambda1_converged` is true: an unconverged λ1 is never used. A value that counts
    must be a finite positive number; anything else is an error naming the line.
    """
    if not rows:
        raise FitError(f"{source} has no data rows")
    for col in ("depth", "width", column):
        if col not in rows[0]:
            raise FitError(f"{source}: missing column {col!r} (columns: {', '.join(rows[0])})")
    values, excluded = [], []
    for n, r in enumerate(rows, start=2):
        line = getattr(r, "line", 0) or n
        depth, width = _positive_int(r, "depth", line, source), _positive_int(r, "width", line,
                                                                               source)
        seed = str(r.get("seed") or "")
        reason = _exclusion(r, column)
        if reason:
            excluded.append({"line": line, "depth": depth, "width": width, "seed": seed,
                             "status": r.get("status") or "", "reason": reason})
        else:
            values.append(Usable(line, depth, width, seed, _positive_float(r, column, line,
                                                                            source)))
    return values, excluded


def _positive_int(r: dict, col: str, line: int, source: str) -> int:
    """Depth and width are positive integers: log(0) would fail far from the bad line."""
    text = r[col]
    try:
        v = int(text)
    except (TypeError, ValueError):
        v = 0
    if v < 1:
        raise FitError(f"{source} line {line}: {col} must be a positive integer, got {text!r}")
    return v


def _positive_float(r: dict, col: str, line: int, source: str) -> float:
    """A value to take the log of: finite and positive, or an error naming its line."""
    text = r[col]
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise FitError(f"{source} line {line}: {col} must be a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise FitError(f"{source} line {line}: {col} must be a finite positive number for a "
                       f"log-log fit, got {text!r}")
    return v


def _exclusion(r: dict, column: str) -> str:
    """Why a row's value does not count ("" when it does)."""
    status = r.get("status") or "ok"
    if status != "ok":
        if status in STATUSES:
            return f"{status}: {STATUSES[status]}"
        return f"status {status!r} is not one of {', '.join(STATUSES)}"
    if column.startswith("lambda1"):
        if r.get(column) in ("", None) and not str(r.get("lambda1_converged") or "").strip():
            return f"{column} not measured (the sweep had no lambda1_samples)"
        if "lambda1_converged" not in r:
            return "no lambda1_converged column: λ1 not known to have converged"
        if str(r["lambda1_converged"]).strip().lower() not in TRUE:
            return "λ1 did not converge"
    if r[column] in ("", None):
        return f"empty {column}"
    return ""


def cells_from_rows(rows: list[dict], column: str = "lr_star", source: str = "results",
                    how: str = "median") -> tuple[list[Cell], list[dict]]:
    """Aggregate per (depth, width); returns the cells and every row left out, with why.

    Raises when no row at all counts, with the reasons counted, rather than fit nothing.
    """
    if how not in ("median", "mean"):
        raise FitError(f"aggregation must be median or mean, got {how!r}")
    one_protocol(rows, source)
    values, excluded = usable(rows, column, source)
    if not values:
        raise FitError(f"{source}: no row has a usable {column}: {_why(excluded)}")
    excluded = sorted([*getattr(rows, "left_out", []), *excluded], key=lambda e: e["line"])
    return aggregate(values, rows, how), excluded


def one_protocol(rows: list[dict], source: str = "results") -> None:
    """Refuse rows measured under different protocols (any field a sweep keeps fixed, e.g.
    steps 100 and 400): their η* are different quantities, and a sweep refuses to mix them."""
    for name in FIXED_FIELDS:
        if not rows or name not in rows[0]:
            continue
        lines: dict[object, list[int]] = {}
        text: dict[object, str] = {}  # each setting as first written
        for n, r in enumerate(rows, start=2):
            lines.setdefault(_setting(r[name]), []).append(getattr(r, "line", 0) or n)
            text.setdefault(_setting(r[name]), r[name] or "None")
        if len(lines) > 1:
            shown = " and ".join(f"{name}={text[v]} (line{'s' * (len(ls) > 1)} {_spans(ls)})"
                                 for v, ls in list(lines.items())[:4])
            raise FitError(f"{source}: rows measured under different protocols: {shown}; fit "
                           f"one {name} at a time (keep its rows in a file of their own)")


def _setting(text):
    """A field's value as a setting: '1' and '1.0' are the same."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def _spans(lines: list[int], most: int = 4) -> str:
    """'2-10, 12, 15-16' (at most `most` spans, then how many more lines)."""
    spans: list[list[int]] = []
    for n in sorted(lines):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    text = ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in spans[:most])
    rest = sum(b - a + 1 for a, b in spans[most:])
    return text + (f" and {rest} more" if rest else "")


def _why(excluded: list[dict]) -> str:
    """'60 of 60 rows left out: 40 below_range (...), 20 empty lr_star' in one line."""
    counts = Counter(e["reason"] for e in excluded)
    return f"all {len(excluded)} rows left out: " + "; ".join(
        f"{n} {reason}" for reason, n in counts.most_common())


def _predicate(where: list[str] | None, min_depth: int | None, max_depth: int | None,
               min_width: int | None, max_width: int | None) -> Callable[[int, int], bool]:
    """One test over (depth, width) for the cells and for the rows left out alike."""
    tests = [compile_filter(w, ("depth", "width")) for w in (where or [])]

    def keep(d: int, w: int) -> bool:
        return ((min_depth is None or d >= min_depth) and (max_depth is None or d <= max_depth)
                and (min_width is None or w >= min_width)
                and (max_width is None or w <= max_width)
                and all(t({"depth": d, "width": w}) for t in tests))

    return keep


def select(cells: list[Cell], where: list[str] | None = None, min_depth: int | None = None,
           max_depth: int | None = None, min_width: int | None = None,
           max_width: int | None = None) -> list[Cell]:
    """The regime to fit: filters over depth and width (e.g. "width >= 8 * depth")."""
    keep = _predicate(where, min_depth, max_depth, min_width, max_width)
    out = [c for c in cells if keep(c.depth, c.width)]
    if not out:
        given = [f"where {w!r}" for w in where or []] + [
            f"{k} {v}" for k, v in (("min_depth", min_depth), ("max_depth", max_depth),
                                    ("min_width", min_width), ("max_width", max_width))
            if v is not None]
        raise FitError(f"no cells left after the filters ({', '.join(given) or 'none given'}; "
                       f"{len(cells)} cells before them)")
    return out


def select_excluded(excluded: list[dict], where: list[str] | None = None,
                    min_depth: int | None = None, max_depth: int | None = None,
                    min_width: int | None = None, max_width: int | None = None) -> list[dict]:
    """The rows left out that lie in the fitted regime: the others would not count anyway."""
    keep = _predicate(where, min_depth, max_depth, min_width, max_width)
    # a line that could not be read as a row (torn, short) is always shown: its cell is unknown
    return [e for e in excluded if not isinstance(e["depth"], int)
            or keep(e["depth"], e["width"])]


def summarise(rows: list[dict]) -> list[dict]:
    """Per cell: median η* over its seeds with status ok, min, max, and how many seeds were ok."""
    ok = {(c.depth, c.width): c for c in aggregate(ok_values(rows), rows)}
    tried = Counter((int(r["depth"]), int(r["width"])) for r in rows)
    out = []
    for (d, w), n in sorted(tried.items()):
        c = ok.get((d, w))
        out.append({"depth": d, "width": w, "seeds": n, "ok": c.seeds if c else 0,
                    "median": c.value if c else None, "min": c.low if c else None,
                    "max": c.high if c else None})
    return out
