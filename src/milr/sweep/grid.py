"""Grid files: YAML -> validated (depth, width) cells and the estimate parameters they share.

Everything is checked before anything trains; errors name the file, the key and its line.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

import yaml

from ..base.config import (
    EXECUTION_FIELDS,
    FIXED_FIELDS,
    MEASURES,
    SCAN_FIELDS,
    SPEC_FIELDS,
    EstimateConfig,
    ScanConfig,
    check_scan,
)
from ..base.expr import compile_filter
from ..base.spec import is_spec

CELL_FIELDS = ("depth", "width")
MAX_AXIS = 1000  # values of depths or widths, counted before a range is expanded
MAX_CELLS = 10_000  # depths x widths before the where/exclude filters (each cell: seeds x runs)
MAX_CHARS = 20_000  # of a grid file's text
# Other names of keys: `data` is issue 32's name for `dataset` (one field behind both).
ALIASES = {"data": "dataset"}
GRID_KEYS = ("depths", "widths", "where", "exclude", "lambda1_samples", "warm_start", "seeds",
             "seed", "max_rounds", *FIXED_FIELDS, *EXECUTION_FIELDS, *ALIASES, "measure",
             *SCAN_FIELDS)


class GridError(ValueError):
    """A grid file that cannot be used; the message names the file, key and line."""


@dataclass(frozen=True)
class Grid:
    cells: tuple[tuple[int, int], ...]  # (depth, width), in order
    params: dict  # every other EstimateConfig field given by the file
    lambda1_samples: int = 0  # > 0: also record λ1 at initialisation on this many examples
    warm_start: bool = False  # start each cell's scan at an η* predicted from the cells done
    scan: ScanConfig | None = None  # measure: scan (one scan per cell); None: the search

    @property
    def measure(self) -> str:
        return "search" if self.scan is None else "scan"

    def config(self, depth: int, width: int) -> EstimateConfig:
        return EstimateConfig(depth=depth, width=width, **self.params)


class _DuplicateKey(Exception):
    """Two equal keys in one YAML mapping (line numbers are 1-based)."""

    def __init__(self, key, line: int, first: int):
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a repeated key instead of keeping its last value silently."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, line, seen[key])
                seen[key] = line
            except TypeError:
                continue  # an unhashable key: left to the constructor's own error
        return super().construct_mapping(node, deep)


# YAML 1.1 (PyYAML) reads a float only with a dot and a signed exponent (1.0e-8): 1e-8 and 1e3
# would be strings. Here, as in YAML 1.2, they are numbers; a quoted one stays a string.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _top_level(text: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """Each top-level key's (key node, value node): where it is and how it was written."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: (k, v) for k, v in node.value if hasattr(k, "value")}


def _key_lines(top: dict[str, tuple[yaml.Node, yaml.Node]]) -> dict[str, int]:
    """Line (1-based) of each key (of `_top_level`), for error messages; an alias's under the
    key it stands for."""
    return {ALIASES.get(k, k): line for k, line in _written_lines(top).items()}


def _written_lines(top: dict[str, tuple[yaml.Node, yaml.Node]]) -> dict[str, int]:
    """Line (1-based) of each key as written."""
    return {k: key.start_mark.line + 1 for k, (key, _) in top.items()}


def _unaliased(doc: dict, top: dict, source: str) -> dict:
    """`doc` with each alias replaced by its key; both given is refused (which would count?)."""
    for alias, key in ALIASES.items():
        if alias in doc and key in doc:
            lines = _written_lines(top)
            raise GridError(f"{source} line {lines.get(alias, '?')}: {alias} and {key} (line "
                            f"{lines.get(key, '?')}) are the same key; give one")
        if alias in doc:
            doc = {(key if k == alias else k): v for k, v in doc.items()}
    return doc


def _quoted(top: dict[str, tuple[yaml.Node, yaml.Node]]) -> set[str]:
    """The keys (of `_top_level`) whose value is a quoted scalar: a string however it reads."""
    return {k for k, (_, v) in top.items()
            if isinstance(v, yaml.ScalarNode) and v.style in ("'", '"')}


def _subject(message: str, keys) -> str | None:
    """The key a message is about: the one it names first, as a whole word (not the steps of
    warmup_steps)."""
    found = [(m.start(), k) for k in keys if (m := re.search(rf"\b{re.escape(k)}\b", message))]
    return min(found)[1] if found else None


def _axis(name: str, spec, where: str) -> list[int]:
    """A list of positive ints, or {start, stop, factor} (geometric) or {start, stop, step}."""
    if isinstance(spec, dict):
        unknown = set(spec) - {"start", "stop", "factor", "step"}
        if unknown or "start" not in spec or "stop" not in spec or \
                ("factor" in spec) == ("step" in spec):
            raise GridError(f"{where}: {name} as a mapping needs start, stop and one of "
                            f"factor or step, got {spec!r}")
        start, stop = spec["start"], spec["stop"]
        inc = spec.get("factor", spec.get("step"))
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                   for v in (start, stop, inc)) or ("factor" in spec and inc < 2):
            raise GridError(f"{where}: {name} start, stop, factor (>= 2) or step must be "
                            f"positive integers, got {spec!r}")
        # counted before it is expanded: a step range's length is known without listing it
        count = 0 if stop < start else (stop - start) // inc + 1 if "step" in spec else None
        if count is not None and count > MAX_AXIS:
            raise GridError(f"{where}: {name} {spec!r} has {count} values, more than "
                            f"{MAX_AXIS}; narrow the range or raise its step")
        values, v = [], start
        while v <= stop:
            values.append(v)
            v = v * inc if "factor" in spec else v + inc
        spec = values
    if not isinstance(spec, list) or not spec:
        raise GridError(f"{where}: {name} must be a non-empty list of positive integers "
                        f"or a range mapping, got {spec!r}")
    if len(spec) > MAX_AXIS:
        raise GridError(f"{where}: {name} has {len(spec)} values, more than {MAX_AXIS}")
    for v in spec:
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise GridError(f"{where}: {name} must hold positive integers, got {v!r}")
    return list(dict.fromkeys(spec))


def parse_grid(text: str, source: str = "grid") -> Grid:
    """Validate a grid file's text completely before anything trains."""
    if len(text) > MAX_CHARS:  # YAML parses some 30 kB a second: bound the time it may take
        raise GridError(f"{source}: {len(text)} characters, more than {MAX_CHARS} (a grid is a "
                        "few lines: write a long axis as {start, stop, step})")
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except _DuplicateKey as e:
        raise GridError(f"{source} line {e.line}: duplicate key {e.key!r} (first on line "
                        f"{e.first})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise GridError(f"{source}{at}: malformed YAML: {problem}") from None
    if not isinstance(doc, dict):
        raise GridError(f"{source}: expected a mapping of keys (depths, widths, ...), "
                        f"got {type(doc).__name__}")
    top = _top_level(text)
    lines = _key_lines(top)

    def where(key: str) -> str:
        return f"{source} line {lines[key]}" if key in lines else source

    for key in doc:
        if key not in GRID_KEYS:
            close = difflib.get_close_matches(str(key), GRID_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise GridError(f"{where(key)}: unknown key {key!r}{hint}")
    doc = _unaliased(doc, top, source)
    for key in ("depths", "widths"):
        if key not in doc:
            raise GridError(f"{source}: missing key {key!r}")
    depths = _axis("depths", doc["depths"], where("depths"))
    widths = _axis("widths", doc["widths"], where("widths"))
    if len(depths) * len(widths) > MAX_CELLS:
        raise GridError(f"{source}: {len(depths)} depths x {len(widths)} widths = "
                        f"{len(depths) * len(widths)} cells before the where/exclude filters, "
                        f"more than {MAX_CELLS}; narrow the axes")

    filters = doc.get("where", [])
    filters = [filters] if isinstance(filters, str) else filters
    if not isinstance(filters, list) or not all(isinstance(f, str) for f in filters):
        raise GridError(f"{where('where')}: where must be a string or a list of strings")
    try:
        tests = [compile_filter(f, CELL_FIELDS) for f in filters]
    except ValueError as e:
        raise GridError(f"{where('where')}: {e}") from None
    exclude = doc.get("exclude", [])
    flags = [v for p in exclude if isinstance(p, list) for v in p if isinstance(v, bool)] \
        if isinstance(exclude, list) else []
    if flags:  # YAML's true equals 1 in Python: it would silently exclude depth or width 1
        raise GridError(f"{where('exclude')}: exclude holds [depth, width] pairs of integers, "
                        f"got {str(flags[0]).lower()} (a YAML boolean) in {exclude!r}")
    if not isinstance(exclude, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(v, int) for v in p)
            for p in exclude):
        raise GridError(f"{where('exclude')}: exclude must be a list of [depth, width] pairs, "
                        f"got {exclude!r}")
    excluded = {tuple(p) for p in exclude}
    try:
        cells = tuple((d, w) for d in depths for w in widths
                      if (d, w) not in excluded and all(t({"depth": d, "width": w})
                                                        for t in tests))
    except ValueError as e:
        raise GridError(f"{where('where')}: {e}") from None
    if not cells:
        raise GridError(f"{source}: the grid is empty after the where/exclude filters")

    params = {k: v for k, v in doc.items()
              if k in ("seeds", "seed", "max_rounds", *FIXED_FIELDS, *EXECUTION_FIELDS)}
    samples = doc.get("lambda1_samples", 0)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0:
        raise GridError(f"{where('lambda1_samples')}: lambda1_samples must be a non-negative "
                        f"integer (0: off), got {samples!r}")
    warm = doc.get("warm_start", False)
    if not isinstance(warm, bool):
        raise GridError(f"{where('warm_start')}: warm_start must be true or false, got {warm!r}")
    numeric = {f.name for f in fields(EstimateConfig) if str(f.type).split(" |")[0] in
               ("int", "float")}
    quoted = _quoted(top)
    for key, value in params.items():
        if key in numeric and key in quoted and _number(value):
            raise GridError(f"{where(key)}: {key} must be a number, got the string {value!r} "
                            "(write it without quotes)")
    own = {k: v for k, v in doc.items() if k in SCAN_FIELDS}
    measure = _measure(doc, own, samples, warm, where)
    try:
        grid = Grid(cells, params, samples, warm,
                    ScanConfig(**own) if measure == "scan" else None)
        for d, w in cells:
            _check_cell(grid, grid.config(d, w))
    except (ValueError, TypeError) as e:
        key = _subject(str(e), {**params, **own})
        raise GridError(f"{where(key) if key else source}: {e}") from None
    return grid


def _measure(doc: dict, own: dict, samples: int, warm: bool, where) -> str:
    """The grid's measure (search unless it says scan), and the keys that belong to the other
    one refused: a scan's own keys in a search grid, the search's extras in a scan grid."""
    measure = doc.get("measure", "search")
    if measure not in MEASURES:
        raise GridError(f"{where('measure')}: measure must be one of {', '.join(MEASURES)}, "
                        f"got {measure!r}")
    if measure == "search" and own:
        key = next(iter(own))
        raise GridError(f"{where(key)}: {key} applies to measure: scan, not to this grid's "
                        "search; add measure: scan or drop it")
    extras = {"lambda1_samples": samples, "warm_start": warm}
    if measure == "scan" and any(extras.values()):
        key = next(k for k, v in extras.items() if v)
        raise GridError(f"{where(key)}: {key} applies to measure: search; a scan grid does "
                        "not use it: drop it")
    return measure


def _check_cell(grid: Grid, cfg: EstimateConfig) -> None:
    """A scan cell refuses the search's options and a grid of rates it cannot scan, as
    `milr scan` does."""
    if grid.scan is None:
        return
    from ..engine.scan import scan_grid  # numpy only

    check_scan(cfg)
    scan_grid(cfg.lr_min, cfg.lr_max, grid.scan.points_per_octave)


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_grid(path: str | os.PathLike) -> Grid:
    """A grid file; a relative .npz path or PATH.py:NAME in it is relative to the file's
    directory (and the rows record it absolute, so that every worker finds it), and must
    exist."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise GridError(f"cannot read grid file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise GridError(f"{path} is not a grid file (not UTF-8 text)") from None
    grid = parse_grid(text, str(path))
    lines = _key_lines(_top_level(text))
    params = dict(grid.params)
    for key in SPEC_FIELDS:
        named = _named_file(params.get(key))
        if named is None:
            continue
        file, rest = named
        absolute = Path(os.path.abspath(path.parent / Path(file).expanduser()))
        if not absolute.is_file():
            seen = f" (relative to the grid file: {absolute})" if str(absolute) != file else ""
            line = f" line {lines[key]}" if key in lines else ""
            raise GridError(f"{path}{line}: {key} {params[key]}: no such "
                            f"{'.npz ' if not rest else ''}file{seen}")
        params[key] = f"{absolute}{rest}"
    return replace(grid, params=params)


def _named_file(value) -> tuple[str, str] | None:
    """The file a value names and what follows it: a .npz path (""), a spec's PATH.py
    (":NAME"); None for a name or a package.module spec."""
    if isinstance(value, str) and value.endswith(".npz"):
        return value, ""
    where, _, name = str(value).rpartition(":")
    return (where, f":{name}") if is_spec(value) and where.endswith(".py") else None
