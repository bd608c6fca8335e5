"""The results file of a sweep: one CSV row per (cell, seed), appended durably, read back on
resume, readable by pandas as it is.

Rules that keep it safe:
- Reading never writes. A file is used only if its header is a milr header; anything else is
  refused by name and never modified.
- One writer per file: `FileLock` (an exclusive `flock` on `<file>.lock` beside the file the path
  resolves to, holding the holder's pid, host and start time, and one on the file itself once it
  exists) is held for the whole run, so a symlink or hard link to the file cannot write it at the
  same time. Only its holder repairs a half-written last line.
- Rows are only appended. A seed may have several rows (an `unfinished` seed is rerun on resume);
  the last row of a (depth, width, seed) is the one that counts, of a scan's cell the last of
  most seeds (`counted_rows`).
- Files of an older milr lack some columns (`LEGACY_VALUES`); they are read with the value that
  version implied, and new rows are appended in the file's own columns (the file is never
  rewritten). Such a file can only be resumed with those settings at their old values.
- The trials log (`TrialsLog`, JSON lines) is written after the rows of its task: a kill may lose
  the trials of a stored row, but no trial is ever logged without its row. A new log's first
  line records the sweep's protocol; a log of another protocol, or with more trials of a seed
  than its rows record (another results file's), is refused; one with fewer is reported.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ..base.config import FIXED_FIELDS, SCAN_FIELDS, EstimateConfig
from ..base.files import check_regular, fsync_dir
from ..base.results import json_safe
from ..base.spec import SPEC_FIELDS, sha256_column
from ..data.lookup import identities
from ..engine.scan import ROW_FIELDS

# The source hash of each config field that may name user code (model, ...): a resume or a fit
# refuses to mix rows of two versions of that code.
CODE_FIELDS = tuple(sha256_column(name) for name in SPEC_FIELDS)

LAMBDA1_FIELDS = ("lambda1", "lambda1_eff", "lambda1_residual", "lambda1_converged",
                  "lambda1_samples")  # empty unless the grid sets lambda1_samples
RESULT_FIELDS = ("lr_star", "lo", "hi", "status", "trials", "nonmonotone", "edge_trained",
                 "edge_failed_below",
                 "probes_used",
                 "midpoint_used", "depends_on", "rounds", "cell_wall_time",
                 "also_lr_star", "also_lo", "also_hi", "also_status", *LAMBDA1_FIELDS,
                 *CODE_FIELDS,
                 "device_name", "milr_version", "torch_version", "finished_at")
COLUMNS = (*EstimateConfig.field_names(), *RESULT_FIELDS)
# A scan grid's file (measure: scan): one row per cell (seed: its first; seeds: how many), the
# scan's own settings and `ScanResult.row()`, then how it ran, as a search row records it.
PROVENANCE = ("cell_wall_time", "device_name", "milr_version", "torch_version", "finished_at")
SCAN_RESULT_FIELDS = (*(f for f in SCAN_FIELDS if f not in ROW_FIELDS), *ROW_FIELDS, "rates",
                      "member_steps", *CODE_FIELDS, *PROVENANCE)
SCAN_COLUMNS = (*EstimateConfig.field_names(), *SCAN_RESULT_FIELDS)
MEASURE_COLUMNS = {"search": COLUMNS, "scan": SCAN_COLUMNS}
# Columns that older milr versions did not write, with the value their rows implicitly had
# (the behaviour of that version; "" for unknown). Only columns in COLUMNS are used.
LEGACY_VALUES = {
    "loss": "ce", "criterion": "accuracy", "output_init": "fan-in", "divergence_check": "eval",
    "initial_loss_floor": "1.0", "nonfinite_every": "10", "max_rounds": "64",
    "cuda_layer_flops": "5000000000.0", "lr_start": "", "midpoint_used": "",
    "also_steps": "0", "also_lr_star": "", "also_lo": "", "also_hi": "", "also_status": "",
    "depends_on": "",  # before 0.2 a seed's probes also depended on the other seeds of its run
    # before the optimizers: plain SGD in the standard parametrisation, no warm-up
    "optimizer": "sgd", "momentum": "", "beta1": "", "beta2": "", "eps": "",
    "weight_decay": "0.0", "warmup_steps": "0", "parametrization": "sp", "base_width": "",
    "output_lr_scale": "1.0",
    # before the architectures (issue 30): a ReLU MLP
    "architecture": "mlp", "activation": "relu", "branch_scale": "none",
    "block_lr_depth_exponent": "0.0",
    # before the edge probes (0.3)
    "edge_probes": "0", "edge_factor": "", "edge_trained": "", "edge_below": "False",
    "edge_failed_below": "",
    # before --model (issue 32): the built-in MLP, no user code
    "model": "", "model_sha256": "", "dataset_sha256": "",
}
LOCK_SUFFIX = ".lock"


class StoreError(ValueError):
    """A results or trials file that cannot be used; the message names it."""


def json_lines(first_line: str) -> bool:
    """Whether a file whose first line this is holds JSON records (a trials log), not a CSV."""
    return first_line.lstrip("\ufeff \t").startswith(("{", "["))


def measure_of(columns) -> str:
    """The measure (MEASURES) whose results file has these columns (a header or a row)."""
    return "scan" if "eta_opt_status" in columns else "search"


def row_key(row: dict) -> tuple[int, int, int]:
    return int(row["depth"]), int(row["width"]), int(row["seed"])


def is_scan_row(row) -> bool:
    """Whether a results row (or log record) is a scan's, not a search's."""
    return measure_of(row) == "scan"


def scan_seeds(row) -> int:
    """How many seeds a scan's row (or log record) holds, its rank among its cell's rows
    (`counted_rows`); 0 for a search's row, one seed each."""
    if not is_scan_row(row):
        return 0
    n = row["seeds"]  # a results row's count, a log record's list of seeds
    try:
        return len(n) if isinstance(n, list) else int(n)
    except (TypeError, ValueError):
        return 0


def counted_rows(rows: list, key: Callable[[dict], tuple] = row_key,
                 rank: Callable[[dict], int] = scan_seeds) -> list:
    """The row that counts per (depth, width, seed), by `key`, in the order the seeds first
    appear: the one of highest `rank`, the last among equals (a rerun appends, never edits).
    A search's rows rank equal, so its last counts; a scan's rank by seeds: a cell scanned
    with 3 seeds, then 2, then 3 again (which scans nothing) counts its 3-seed row."""
    best: dict = {}
    for r in rows:
        k = key(r)
        if k not in best or rank(r) >= rank(best[k]):
            best[k] = r
    return list(best.values())


def done_keys(rows: list[dict]) -> set[tuple[int, int, int]]:
    """Seeds that need no rerun: their last row has a verdict (not `unfinished`)."""
    return {row_key(r) for r in counted_rows(rows) if r["status"] != "unfinished"}


def duplicates(rows: list[dict]) -> list[tuple[int, int, int]]:
    """Keys with more than one row where an earlier one was final (a rerun of `unfinished` is
    not a duplicate): what two writers without a lock leave behind."""
    seen: dict[tuple, str] = {}
    dup = []
    for r in rows:  # a scan cell rerun with another seed count is no duplicate either
        k = (*row_key(r), int(r["seeds"])) if is_scan_row(r) else row_key(r)
        if k in seen and seen[k] != "unfinished" and k not in dup:
            dup.append(k)
        seen[k] = r.get("status", "final")
    return dup


def _text(v) -> str:
    return "" if v is None else str(v)


def _same(have: str, want) -> bool:
    """Equal as written, or as numbers ("1" and "1.0")."""
    if have == _text(want):
        return True
    try:
        return float(have) == float(want)
    except (TypeError, ValueError):
        return False


def _append_durably(path: Path, data: bytes) -> None:
    """Append in one write, flush, fsync; fsync the directory when the file is new."""
    new = not path.exists()
    try:
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # a full disk's [Errno 28] comes without the file's name
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    if new:
        fsync_dir(path.resolve().parent)


def _cut_torn_tail(path: Path) -> bool:
    """Truncate a half-written last line (a kill mid-write); only a lock holder may call this."""
    if not path.exists():
        return False
    raw = path.read_bytes()
    if not raw or raw.endswith(b"\n"):
        return False
    with open(path, "r+b") as f:
        f.truncate(raw.rfind(b"\n") + 1)
        f.flush()
        os.fsync(f.fileno())
    return True


def complete_lines(raw: bytes) -> int:
    """How many leading bytes of a file are complete lines: a line is complete once its line
    end is written; anything after the last one is a row being written or cut by a kill."""
    return raw.rfind(b"\n") + 1


def _complete_text(path: Path, what: str) -> tuple[str, bool]:
    """The file's complete lines as text (read only), and whether a torn last line follows."""
    check_regular(path, f"the {what}")
    raw = path.read_bytes() if path.exists() else b""
    keep = complete_lines(raw)
    try:
        return raw[:keep].decode("utf-8"), keep < len(raw)
    except UnicodeDecodeError:
        raise StoreError(f"{path} is not a milr {what} (not UTF-8 text); "
                         "use another path") from None


class FileLock:
    """An exclusive `flock` for a whole run, one writer per file under any of its names: on
    `<file>.lock` beside the file the path resolves to (a symlink to the file takes the same lock
    file), and on the file itself while it exists (a hard link, whose own name has a lock file
    of its own, meets this one on the file)."""

    def __init__(self, path: Path):
        self.target = Path(path)
        self.path = Path(f"{os.path.realpath(path)}{LOCK_SUFFIX}")
        self.fd: int | None = None
        self.file_fd: int | None = None  # the flock on the file itself, once it exists

    def _holder(self, fd: int) -> str:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        return text or "holder unknown"

    def acquire(self) -> None:
        """Take the lock, or fail naming its holder; write ours (pid, host, start) into it."""
        import fcntl

        new = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            held = self._holder(fd)
            if not new and held != "holder unknown" and not held.startswith("pid "):
                raise StoreError(f"{self.path} exists and is not a milr lock file; move it away")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"{self.target} is in use by another milr sweep "
                                 f"({held}); wait for it or use another path") from None
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n"
                      .encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        if new:
            fsync_dir(self.path.parent)  # the lock file's path is resolved already
        self.fd = fd
        try:
            self.hold_file()
        except BaseException:
            self.release()
            raise

    def hold_file(self) -> None:
        """Under the lock, also lock the file itself once it exists (its writers call this after
        each append): another name of it (a hard link) cannot take the lock meanwhile."""
        import fcntl

        if self.fd is None or self.file_fd is not None:
            return
        try:
            fd = os.open(self.target, os.O_RDONLY)
        except FileNotFoundError:
            return  # a file that does not exist has no other name yet
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"{self.target} is in use by another milr sweep through another "
                             "name of the same file (a hard link); wait for it or use another "
                             "path") from None
        self.file_fd = fd

    def release(self) -> None:
        """Let the next writer in (the file stays: removing it would race with a new holder)."""
        for name in ("file_fd", "fd"):
            if getattr(self, name) is not None:
                os.close(getattr(self, name))  # closing drops the flock
                setattr(self, name, None)


class ResultStore:
    """A CSV of one row per (cell, seed) run, appended durably, readable by pandas as it is."""

    def __init__(self, path: str | os.PathLike, measure: str = "search"):
        self.path = Path(path)
        self.lock = FileLock(self.path)
        self.repaired = False
        self.measure = measure  # what a new file is written for; a resume must match it
        self.found: str | None = None  # the measure of the file's header, once read
        self.columns: tuple[str, ...] = MEASURE_COLUMNS[measure]  # the file's own, once read

    def _header(self, text: str, torn: bool) -> tuple[str, ...] | None:
        """The file's columns; refuse, by name, a file that is not ours."""
        if not text:
            whole = self.path.read_bytes() if torn else b""
            if any(",".join(c).encode().startswith(whole) for c in MEASURE_COLUMNS.values()):
                return None  # empty, or our header cut mid-write
            raise StoreError(f"{self.path} is not a milr sweep results file (no header line); "
                             "use another --out")
        if json_lines(text):
            raise StoreError(f"{self.path} holds JSON lines (a trials log?), not a milr sweep "
                             "results file (a CSV); use another --out")
        header = tuple(next(csv.reader(io.StringIO(text))))
        self.found = measure_of(header)
        columns = MEASURE_COLUMNS[self.found]
        legacy = LEGACY_VALUES if self.found == "search" else {}  # scans are newer than those
        unknown = [c for c in header if c not in columns]
        missing = [c for c in columns if c not in header and c not in legacy]
        if unknown or missing or len(set(header)) != len(header):
            what = "; ".join(f"{k}: {', '.join(v)}" for k, v in
                             (("missing", missing), ("unknown", unknown)) if v) or "repeated"
            raise StoreError(f"{self.path} is not a milr sweep results file of this version "
                             f"(columns differ; {what}); use another --out")
        return header

    def rows(self) -> list[dict]:
        """Every complete row, old files' missing columns filled; never writes (a half-written
        last line, being written or left by a kill, is skipped)."""
        text, torn = _complete_text(self.path, "sweep results file")
        header = self._header(text, torn)
        if header is None:
            return []
        self.columns = header
        columns = MEASURE_COLUMNS[self.found]
        fill = {c: LEGACY_VALUES[c] for c in columns if c not in header}
        out = []
        try:
            reader = csv.reader(io.StringIO(text))
            next(reader)
            for n, rec in enumerate(reader, start=2):
                if len(rec) != len(header):
                    raise StoreError(f"{self.path} line {n}: {len(rec)} fields, expected "
                                     f"{len(header)}; the file was edited or is corrupt")
                got = {**fill, **dict(zip(header, rec, strict=True))}
                out.append({c: got[c] for c in columns})
        except csv.Error as e:
            raise StoreError(f"{self.path}: not a readable CSV ({e})") from None
        return out

    def repair(self) -> bool:
        """Cut a half-written last line; only under the lock, and only from a file of ours."""
        assert self.lock.fd is not None, "repair needs the lock"
        self.rows()  # refuses a file that is not ours before anything is written
        self.repaired = _cut_torn_tail(self.path) or self.repaired
        return self.repaired

    def check_compatible(self, rows: list[dict], cfg: EstimateConfig,
                         lambda1_samples: int = 0, scan=None, code: dict | None = None) -> None:
        """Refuse to mix rows measured under different fixed parameters or λ1 sample counts
        than the grid's (`cfg`: the config of any of its cells), or a search's rows with a
        scan's (`scan`: the grid's ScanConfig, whose settings are fixed too). `code`: the
        identities to compare (`lookup.identities`; a column left out is not compared), else
        cfg's, computed here."""
        if self.found is not None and self.found != self.measure:
            raise StoreError(f"{self.path} holds the rows of a {self.found} sweep but the grid "
                             f"has measure: {self.measure}; one results file holds one "
                             "measure: use another --out")
        # the code's and data's identities only where rows need them: a dataset function is
        # called for them (`lookup.identities`)
        if code is None:
            code = identities(cfg) if rows else {}
        want = {**cfg.row(), **code, **(asdict(scan) if scan else {})}
        fixed = (*FIXED_FIELDS, *(SCAN_FIELDS if scan else ()))
        for name in FIXED_FIELDS:
            if name not in self.columns and not _same(LEGACY_VALUES[name], want[name]):
                raise StoreError(
                    f"{self.path} has no {name} column (written by an older milr, which used "
                    f"{name}={LEGACY_VALUES[name]}) but the grid has {name}={want[name]}; "
                    "use another --out")
        for n, row in enumerate(rows, start=2):
            for name in fixed:
                if not _same(row[name], want[name]):
                    raise StoreError(
                        f"{self.path} line {n} was written with {name}={row[name] or 'None'} "
                        f"but the grid has {name}={want[name]}; use another --out or restore "
                        "the setting")
            for name in CODE_FIELDS:
                if name in want and not _same(row[name], want[name]):
                    raise StoreError(
                        f"{self.path} line {n} was measured with {name}="
                        f"{row[name] or 'None'} but it is now {want[name] or 'None'} (the "
                        "code's SHA-256, a dataset's of its code and the data it returns): it "
                        "changed; use another --out or restore it")
            if scan is None:
                self._check_samples(n, row, lambda1_samples)

    def _check_samples(self, n: int, row: dict, samples: int) -> None:
        """λ1 rows must use the grid's sample count (fewer: the data set's size capped it)."""
        have = row["lambda1_samples"]
        ok = have == "" if not samples else (have.isdigit() and 0 < int(have) <= samples)
        if not ok:
            raise StoreError(f"{self.path} line {n} was written with lambda1_samples="
                             f"{have or 0} but the grid has lambda1_samples={samples}; "
                             "use another --out or restore the setting")

    def append(self, rows: list[dict]) -> None:
        """Append rows in one write, in the file's own columns, then flush and fsync: a kill
        leaves whole rows or a tail."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if not self.path.exists() or self.path.stat().st_size == 0:
            self.columns = MEASURE_COLUMNS[self.measure]
            writer.writerow(self.columns)
        for row in rows:
            writer.writerow([_text(row[c]) for c in self.columns])
        _append_durably(self.path, buf.getvalue().encode())
        self.lock.hold_file()  # the file may be new: lock it under this name too


# The key of a new trials log's first record, {"milr_trials_log": 1, "protocol": {the sweep's
# fixed fields}}; older logs have no such record (their protocol is unknown) and still read.
LOG_HEADER = "milr_trials_log"


def protocol_of(row: dict) -> dict:
    """What a sweep keeps fixed (its protocol) from a config's row or a results row."""
    return {name: row[name] for name in FIXED_FIELDS if name in row}


def protocol_conflicts(have: dict, want: dict) -> list[str]:
    """'optimizer=adam, not sgd' for every field `have` sets otherwise than `want` (only the
    fields both know: a field newer than a log's header cannot be told)."""
    return [f"{n}={_text(have[n]) or 'None'}, not {_text(want[n]) or 'None'}" for n in have
            if n in want and not _same(_text(have[n]), want[n])]


def parse_trials(text: str, path: Path) -> tuple[dict | None, list[tuple[int, dict]]]:
    """A trials log's protocol (None: no header, an older log) and its trial records with their
    lines; a line that is neither (or a header past line 1: two logs joined) is refused."""
    header, records = None, []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if isinstance(rec, dict) and LOG_HEADER in rec:
            if n > 1 or not isinstance(rec.get("protocol"), dict):
                raise StoreError(f"{path} line {n}: a trials log header " + (
                    "past line 1 (two logs joined into one?)" if n > 1 else
                    "without its protocol") + "; use another trials log")
            header = rec["protocol"]
            continue
        if not (isinstance(rec, dict) and all(k in rec for k in TrialsLog.KEYS)):
            raise StoreError(f"{path} line {n} is not a milr trial record (needs "
                             f"{', '.join(TrialsLog.KEYS)}); use another trials log")
        for k in TrialsLog.KEYS:
            if type(rec[k]) is not int or rec[k] < 0:
                raise StoreError(f"{path} line {n}: {k} must be a non-negative integer, got "
                                 f"{rec[k]!r}")
        records.append((n, rec))
    return header, records


def log_measure(header: dict | None, records: list[tuple[int, dict]]) -> str | None:
    """The measure of a trials log: its header's (search where it names none), else its
    records' (a scan's record says so); None: neither tells."""
    if header is not None:
        return header.get("measure", "search")
    return next((rec.get("measure", "search") for _, rec in records), None)


def trial_key(rec: dict) -> tuple[int, int, int]:
    return rec["depth"], rec["width"], rec["seed"]


def logged_trials(rows: list[dict]) -> dict[tuple[int, int, int], tuple[int, int]]:
    """Per (depth, width, seed): how many trials its rows record, summed over every row of it (a
    rerun logs its own), and the line of its last row; rows without a count are left out."""
    out: dict[tuple[int, int, int], tuple[int, int]] = {}
    for n, r in enumerate(rows, start=2):
        # a scan's row stands for one record, its cell's scan
        text = "1" if is_scan_row(r) else str(r.get("trials") or "")
        if not text.isdigit():
            continue
        key = row_key(r)
        out[key] = (out.get(key, (0, 0))[0] + int(text), getattr(r, "line", 0) or n)
    return out


def key_text(key: tuple[int, int, int]) -> str:
    return f"(depth {key[0]}, width {key[1]}, seed {key[2]})"


class TrialsLog:
    """The trials log: JSON lines, one per training run, appended after the rows they explain;
    a new log's first line records the protocol its trials were measured under."""

    KEYS = ("depth", "width", "seed")

    def __init__(self, path: str | os.PathLike, protocol: dict | None = None):
        self.path = Path(path)
        self.lock = FileLock(self.path)
        self.repaired = False
        self.protocol = protocol  # the sweep's: checked against the log's, written to a new one
        self.counts: dict[tuple[int, int, int], int] = {}  # trials per seed, as last checked

    def check(self) -> None:
        """Refuse, read-only, a file that is not a trials log, or the log of another protocol;
        count its trials per (depth, width, seed)."""
        text, _ = _complete_text(self.path, "trials log")
        header, records = parse_trials(text, self.path)
        have, want = log_measure(header, records), (self.protocol or {}).get("measure", "search")
        if have is not None and have != want:
            raise StoreError(f"{self.path} is the trials log of a {have} sweep but the grid has "
                             f"measure: {want}; one log holds one measure: use another --trials")
        wrong = protocol_conflicts(header or {}, self.protocol or {})
        if wrong:
            raise StoreError(f"{self.path} holds trials of another protocol than this sweep's "
                             f"({'; '.join(wrong[:3])}): another sweep's log; use another "
                             "--trials")
        self.counts = {}
        for _, rec in records:
            self.counts[trial_key(rec)] = self.counts.get(trial_key(rec), 0) + 1

    def coverage(self, rows: list[dict], results: Path) -> list[str]:
        """Compare the log with the rows of its results file: a seed with more trials logged than
        its rows record is another run's (refused), one with fewer lost them (one line)."""
        want, stored = logged_trials(rows), {row_key(r) for r in rows}
        for key, have in self.counts.items():
            if key not in stored or have > want.get(key, (have, 0))[0]:
                where = (f"its rows in {results} record {want[key][0]}" if key in want
                         else f"{results} has no row of it")
                raise StoreError(f"{self.path} holds {have} trials of {key_text(key)} but "
                                 f"{where}: the log of another results file; use another "
                                 "--trials")
        short = {k: (self.counts.get(k, 0), n) for k, (n, _) in want.items()
                 if self.counts.get(k, 0) < n}
        if not short:
            return []
        shown = ", ".join(f"{key_text(k)}: {have} of {n}" for k, (have, n) in
                          list(short.items())[:3]) + (" ..." if len(short) > 3 else "")
        return [f"warning: {self.path} lacks trials of {len(short)} seed(s) stored in {results} "
                f"({shown} logged): they were lost in a kill or run without this log; milr plot "
                "search marks those searches incomplete"]

    def repair(self) -> bool:
        """Cut a half-written last line; only under the lock, only from a trials log."""
        assert self.lock.fd is not None, "repair needs the lock"
        self.check()
        self.repaired = _cut_torn_tail(self.path) or self.repaired
        return self.repaired

    def append(self, records: list[dict]) -> None:
        """Append records as JSON lines in one write (a new log's header first), then fsync."""
        if not records:
            return
        head = []
        if self.protocol is not None and (not self.path.exists()
                                          or self.path.stat().st_size == 0):
            head = [{LOG_HEADER: 1, "protocol": self.protocol}]
        _append_durably(self.path, "".join(json.dumps(json_safe(r), allow_nan=False) + "\n"
                                           for r in head + records).encode())
        self.lock.hold_file()
