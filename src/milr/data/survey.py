"""What is on disk, behind `milr data list`: every known data set, found or not, where, its size
and shapes, and its files checked against the SHA-256 that milr.data.fetch ships."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..base.config import DATASETS
from . import fetch, lookup, mnist1d
from .formats import DataError, Dataset, gaussians
from .lookup import Found


@dataclass
class Entry:
    """One row of `milr data list`."""

    name: str
    found: bool
    where: str
    layout: str = ""
    size: int = 0  # bytes on disk
    shapes: str = ""
    checksum: str = ""
    problem: str = ""
    get: str = ""  # the command that gets it, where it is not found

    def __post_init__(self):
        self.get = self.get or f"milr data fetch {self.name}"


def survey(data_dir: str | os.PathLike | None = None) -> list[Entry]:
    """Every known data set: found or not, where, size, shapes, checksums against the published."""
    lookup.roots(data_dir)  # a data_dir that does not exist is refused, not listed as "not found"
    return [_entry(name, data_dir) for name in DATASETS]


def _entry(name: str, data_dir) -> Entry:
    if name == "gaussians":
        return _described(Entry(name, True, "(generated, no files)", "synthetic"),
                          gaussians())
    if name in mnist1d.SAMPLES:
        return _mnist1d_entry(name, data_dir)
    try:
        found = lookup.locate(name, data_dir)
    except DataError as e:
        return Entry(name, False, "", problem=str(e))
    e = Entry(name, True, str(found.where), found.layout,
              sum(p.stat().st_size for p in found.files.values()), checksum=checksum(found))
    try:
        return _described(e, lookup.read_found(found))
    except DataError as err:
        e.problem = str(err)
        return e


def _mnist1d_entry(name: str, data_dir) -> Entry:
    """Built or not (and how to build it); a cache is checked against its record and against
    milr's reference checksum."""
    root = lookup.roots(data_dir)[0]
    data, _ = mnist1d.cache_paths(root, name)
    try:
        cached = mnist1d.read_cache(name, root)
    except DataError as e:
        return Entry(name, True, str(data.parent), "mnist1d-cache", problem=str(e))
    if cached is None:
        try:
            mnist1d.check_available(name, root)
        except DataError as e:
            return Entry(name, False, "", problem=str(e), get=mnist1d.INSTALL)
        return Entry(name, False, "", get=f"milr data build {name}",
                     problem=f"{name}: not built yet; it is built in {data.parent} on first "
                             f"use, or now with `milr data build {name}`")
    arrays, b = cached
    e = Entry(name, True, str(data.parent), "mnist1d-cache", data.stat().st_size,
              checksum="ok" if b.matches_reference else f"differs: {b.mismatch()}")
    return _described(e, lookup.standardised(name, **arrays, classes=10))


def _described(e: Entry, ds: Dataset) -> Entry:
    e.shapes = f"{len(ds.x_train)} + {len(ds.x_eval)} × {ds.n_inputs}, {ds.classes} classes"
    return e


def checksum(found: Found) -> str:
    """'ok' when every file matches a published SHA-256; else which do not, or why unknown."""
    if found.layout == "keras-npz":
        path = found.files["npz"]
        ok = fetch.sha256(path) == fetch.KERAS_NPZ_SHA256[path.name]
        return "ok" if ok else f"no match: {path.name}"
    if found.layout == "cifar-bin":
        return _cifar_checksum(found)
    verdicts = {p.name: _idx_checksum(found.name, p) for p in found.files.values()}
    bad = [f for f, v in verdicts.items() if v == "no match"]
    unknown = [f for f, v in verdicts.items() if v == "unknown"]
    if bad:
        return f"no match: {', '.join(bad)}"
    if unknown:
        return f"unknown: no published SHA-256 for {', '.join(unknown)}"
    return "ok" if set(verdicts.values()) == {"file"} else "ok (decompressed content)"


def _idx_checksum(name: str, path: Path) -> str:
    """'file' or 'content' (which matched a published checksum), 'no match' or 'unknown'."""
    published = {r.file: r.sha256 for r in fetch.SOURCES[name].files}
    if path.name in published and fetch.sha256(path) == published[path.name]:
        return "file"
    content = fetch.CONTENT_SHA256.get(name, {}).get(path.name.removesuffix(".gz"))
    if content is None:
        return "no match" if path.name in published else "unknown"
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error):
        return "no match"
    return "content" if hashlib.sha256(raw).hexdigest() == content else "no match"


def _cifar_checksum(found: Found) -> str:
    m = fetch.read_manifest(found.where)
    if not m:
        return ("unknown: only the archive's SHA-256 is published (fetch it with milr to record "
                "the batches')")
    bad = [p.name for p in found.files.values() if m.get(p.name) != fetch.sha256(p)]
    return f"no match: {', '.join(bad)}" if bad else "ok (extracted from the verified archive)"
