"""Results tables read back: rows -> cells (seeds aggregated per depth × width), with what was
left out and why, and the filters that choose a regime. Used by `milr fit` and sweep summaries."""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from ..base.config import FIXED_FIELDS, SCAN_FIELDS, SCAN_RANGE_FIELDS, FitConfig
from ..base.expr import compile_filter
from ..base.files import check_regular
from ..base.results import STATUSES, Cell, aggregate, ok_values
from ..base.spec import SPEC_FIELDS, sha256_column
from ..engine.scan import STATUS_MEANINGS, STATUS_OF
from ..sweep.store import CODE_FIELDS, counted_rows, is_scan_row, json_lines, row_key


class FitError(ValueError):
    """A results table that cannot be fitted; the message names the file, column or cell."""


class Row(Mapping):
    """A CSV record that remembers its physical line, so that messages can name it: its
    fields in a tuple beside the table's one column index (a dict per row held a million rows
    in 5 GB), each value shared with the equal values of its column where they repeat."""

    __slots__ = ("_index", "_values", "line")

    def __init__(self, index: dict[str, int], values: tuple, line: int = 0):
        self._index, self._values, self.line = index, values, line

    def __getitem__(self, key: str):
        return self._values[self._index[key]]

    def __iter__(self):
        return iter(self._index)

    def __contains__(self, key) -> bool:  # without Mapping's raise and catch, once per row
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"Row(line {self.line}: {dict(self)!r})"


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
        check_regular(path, "results table")  # a FIFO would block the read forever
    except ValueError as e:
        raise FitError(str(e)) from None
    try:
        with open(path, encoding="utf-8-sig", newline="\n") as f:  # streamed, line by line
            rows, left_out, distinct = _read_rows(path, f)
    except OSError as e:
        raise FitError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:  # the line and byte, from the bytes (only on this failure)
        raw = path.read_bytes()
        try:
            raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = raw[:e.start].count(b"\n") + 1
            raise FitError(f"{path} line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); "
                           "save the table as UTF-8") from None
        raise
    if not rows:
        why = "; ".join(f"line {e['line']}: {e['reason']}" for e in left_out)
        raise FitError(f"{path} has a header but no complete data rows ({why})" if why
                       else f"{path} has a header but no data rows")
    out = Rows(counted_rows(rows, _key) if "seed" in rows[0] else rows)
    out.every = rows
    out.left_out = left_out
    out.distinct = distinct
    return out


SAMPLE = 1024  # rows read before the columns whose values repeat are chosen to be shared


def _getter(idx: list[int]) -> Callable[[list[str]], tuple]:
    """fields -> the tuple of fields[i] for i in idx."""
    if len(idx) > 1:
        return itemgetter(*idx)
    return (lambda f: (f[idx[0]],)) if idx else (lambda f: ())


def _split(index: dict[str, int], rows: list[Row], shared: list[dict]):
    """After the first rows: the columns with few distinct values first (their values shared
    by all rows), then the others, kept as read; the rows so far rebuilt in that order."""
    rep = [i for i, seen in enumerate(shared) if len(seen) <= SAMPLE // 4]
    rest = [i for i in range(len(shared)) if i not in set(rep)]
    order = rep + rest
    pos = {i: k for k, i in enumerate(order)}
    new = {name: pos[i] for i, name in enumerate(index)}  # still iterated in header order
    pick = _getter(order)
    rows = [Row(new, tuple(pick(r._values)) if order else (), r.line) for r in rows]
    return new, rows, [shared[i] for i in rep], (_getter(rep), _getter(rest))


def _read_rows(path: Path, f) -> tuple[list[Row], list[dict], dict]:
    """read_table's reading of the open file: the rows, the lines left out (short, or torn:
    the store's rule, a last line without its end), and the distinct values of each column
    whose values repeat; one line at a time."""
    torn: list[str] = []
    lines = [0]  # physical lines passed on to csv

    def complete(f):
        for text in f:
            if not text.endswith("\n") and lines[0]:  # only the last line can lack its end
                torn.append(text)
                return
            lines[0] += 1
            yield text

    reader = csv.reader(complete(f))
    header = next(reader, None)
    if header is None or not "".join(header).strip() and not any(x.strip() for x in f):
        raise FitError(f"{path} is empty: no header and no data rows")
    if json_lines(",".join(header)):
        raise FitError(f"{path} holds JSON lines (a milr trials log?), not a results table (a "
                       "CSV such as milr sweep's --out)")
    last = {name: i for i, name in enumerate(header)}  # a repeated name: its last field counts
    pick = list(last.values()) if len(last) < len(header) else None
    index = {name: k for k, name in enumerate(last)}
    shared: list[dict[str, str]] = [{} for _ in index]
    rows, left_out, split = [], [], None
    try:
        for fields in reader:
            if not fields:  # a blank line, skipped as csv.DictReader does
                continue
            if len(fields) != len(header):
                if len(fields) > len(header):
                    raise FitError(f"{path} line {reader.line_num}: {len(fields)} fields, but "
                                   f"the header has {len(header)}")
                left_out.append(_unread(dict(zip(header, fields, strict=False)),
                                        reader.line_num, f"{len(fields)} fields, but the "
                                        f"header has {len(header)}"))
                continue
            if pick is not None:
                fields = [fields[i] for i in pick]
            if len(rows) == SAMPLE:  # then share only the columns whose values repeat
                index, rows, shared, split = _split(index, rows, shared)
            if split is None:
                values = tuple(map(dict.setdefault, shared, fields, fields))
            else:
                some = split[0](fields)
                values = tuple(map(dict.setdefault, shared, some, some)) + split[1](fields)
            rows.append(Row(index, values, reader.line_num))
    except csv.Error as e:
        raise FitError(f"{path} line {reader.line_num}: not a CSV record ({e})") from None
    if torn:
        rec = dict(zip(header, next(csv.reader(torn), []), strict=False))
        left_out.append(_unread(rec, lines[0] + 1, "no line end: a row being written or cut off "
                                                   "by a kill (its last field may be cut short)"))
    return rows, left_out, {name: set(shared[k]) for name, k in index.items() if k < len(shared)}


class Rows(list):
    """The rows of a table that count (the last of each seed), and the lines left out as it was
    read (torn or short), with why; `every`: all rows read, superseded ones included;
    `distinct`: every value read in a column, for the columns whose values repeat (rows left
    out or superseded included)."""

    every: list = []
    left_out: list[dict] = []
    distinct: dict[str, set[str]] = {}


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
    memo = rows.__dict__.setdefault("usable", {}) if isinstance(rows, Rows) else {}
    if (column, source) not in memo:  # fit asks for lr_star three times, λ1 twice
        memo[column, source] = _usable(rows, column, source)
    return memo[column, source]


def _usable(rows: list[dict], column: str, source: str) -> tuple[list[Usable], list[dict]]:
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
    for name in STATUS_OF.get(column, ()):  # a scan's row: each number has its own status
        if name in r and r[name] != "ok":
            meanings = STATUS_MEANINGS[name]
            return (f"{name} {r[name]}: {meanings[r[name]]}" if r[name] in meanings else
                    f"{name} {r[name]!r} is not one of {', '.join(meanings)}")
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


# The fields that rows must share to measure one quantity: any a sweep keeps fixed, a scan's
# settings (η_opt of two objectives are two rates) and the source hashes of user code (two
# versions of a model are two). `milr fit` and `milr plot scan` refuse rows that differ in one.
PROTOCOL_FIELDS = (*FIXED_FIELDS, *SCAN_FIELDS, *CODE_FIELDS)


def protocol_split(rows: list, exempt=(), distinct: dict | None = None):
    """The first of PROTOCOL_FIELDS (not `exempt`, and in rows[0]) on which rows differ: (its
    name, the indices of the rows of each setting, each setting as first written); None where
    they all agree (a spec by its code: `compared`). `distinct`: values already seen per
    column (one value: no split there)."""
    for name in PROTOCOL_FIELDS:
        if name in exempt or not rows or name not in rows[0]:
            continue
        seen = (distinct or {}).get(name)
        if seen is not None and len({_setting(v) for v in seen}) <= 1:
            continue  # one setting among all the values read: none among the rows
        where: dict[object, list[int]] = {}
        text: dict[object, str] = {}
        for i, r in enumerate(rows):
            value = compared(r, name)
            where.setdefault(value, []).append(i)
            text.setdefault(value, r[name] or "None")
        if len(where) > 1:
            return name, where, text
    return None


def one_protocol(rows: list[dict], source: str = "results") -> None:
    """Refuse rows measured under different protocols (`protocol_split`, e.g. steps 100 and
    400): their η* are different quantities, and a sweep refuses to mix them; a scan's rate
    range may differ (SCAN_RANGE_FIELDS), not its grid's resolution. Superseded rows count
    too: which protocol's row came last must not choose the fit."""
    distinct = getattr(rows, "distinct", {})
    rows = getattr(rows, "every", None) or rows
    grid = SCAN_RANGE_FIELDS if rows and is_scan_row(rows[0]) else ()
    split = protocol_split(rows, grid, distinct)
    if split is None:
        return
    name, where, text = split
    lines = {v: [getattr(rows[i], "line", 0) or i + 2 for i in idx] for v, idx in where.items()}
    shown = " and ".join(f"{name}={text[v]} (line{'s' * (len(ls) > 1)} {_spans(ls)})"
                         for v, ls in list(lines.items())[:4])
    raise FitError(f"{source}: rows measured under different protocols: {shown}; fit "
                   f"one {name} at a time (keep its rows in a file of their own)")


# spec field -> the column of its code's hash
SPEC_HASHES = {name: sha256_column(name) for name in SPEC_FIELDS}


def compared(row, name: str):
    """A row's value of `name` as rows are compared on it: a setting; a spec, where the row
    holds its code's hash (compared in its own column), by its function's name alone, so that
    one file under two paths (a sweep records the path resolved, `milr scan` the one typed) is
    one protocol."""
    if name in SPEC_HASHES and row.get(SPEC_HASHES[name]):
        return "code", str(row[name]).rpartition(":")[2]
    return _setting(row[name])


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


def _predicate(cfg: FitConfig) -> Callable[[int, int], bool]:
    """One test over (depth, width), cfg's filters, for the cells and the rows left out alike."""
    tests = [compile_filter(w, ("depth", "width")) for w in cfg.where]

    def keep(d: int, w: int) -> bool:
        return ((cfg.min_depth is None or d >= cfg.min_depth)
                and (cfg.max_depth is None or d <= cfg.max_depth)
                and (cfg.min_width is None or w >= cfg.min_width)
                and (cfg.max_width is None or w <= cfg.max_width)
                and all(t({"depth": d, "width": w}) for t in tests))

    return keep


def select(cells: list[Cell], cfg: FitConfig) -> list[Cell]:
    """The regime to fit: cfg's filters over depth and width (e.g. "width >= 8 * depth")."""
    keep = _predicate(cfg)
    out = [c for c in cells if keep(c.depth, c.width)]
    if not out:
        given = [f"where {w!r}" for w in cfg.where] + [
            f"{k} {v}" for k, v in cfg.filters().items() if k != "where" and v is not None]
        raise FitError(f"no cells left after the filters ({', '.join(given) or 'none given'}; "
                       f"{len(cells)} cells before them)")
    return out


def select_excluded(excluded: list[dict], cfg: FitConfig) -> list[dict]:
    """The rows left out that lie in the fitted regime: the others would not count anyway."""
    keep = _predicate(cfg)
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
