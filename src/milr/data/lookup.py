"""Where the named data sets are found: the search roots, the layouts that torchvision, Keras and
Debian leave on disk, the refusal before any data is read (`preflight`), and `load` by name.

Real data sets are looked up in `data_dir`, `$MILR_DATA`, milr's own data directory,
`~/.keras/datasets` and the system locations; the files found are read and validated by
milr.data.formats. No network is used (`milr data fetch`, in milr.data.fetch, downloads).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..base import spec as specs
from ..base.config import DATASETS
from .formats import (
    CIFAR_PY_DIR,
    CIFAR_TEST,
    CIFAR_TRAIN,
    CLASSES,
    IDX_FILES,
    DataError,
    Dataset,
    check_npz_file,
    from_function,
    gaussians,
    load_npz,
    read_cifar_set,
    read_idx_set,
    standardised,
)

# Where Debian's dataset packages put their files (`apt-get install dataset-fashion-mnist`).
SYSTEM_DIRS = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "mnist": [Path("/usr/share/datasets/mnist")],
    "cifar10": [],
}
# Sub-directories of every root where a data set may lie: the root itself, milr's and Keras's
# `<root>/<name>`, torchvision's `<root>/MNIST/raw` and the binary CIFAR-10 archive's own folder.
LAYOUT_DIRS = {
    "mnist": ("", "mnist", "MNIST/raw"),
    "fashion-mnist": ("", "fashion-mnist", "FashionMNIST/raw"),
    "cifar10": ("", "cifar-10-batches-bin", "cifar10", "cifar10/cifar-10-batches-bin"),
}
# Besides `milr data fetch NAME`, what a user can do to get each set.
HOW_TO_GET = {
    "fashion-mnist": "or apt-get install dataset-fashion-mnist, or put its 4 IDX files in "
                     "--data-dir",
    "mnist": "or put the four MNIST IDX files (train-images-idx3-ubyte.gz, ...) or Keras's "
             "mnist.npz in --data-dir",
    "cifar10": "or put CIFAR-10's binary version (data_batch_1.bin ... test_batch.bin) in "
               "--data-dir",
}
KERAS_NPZ = {"mnist": "mnist.npz"}  # Keras keeps MNIST as one .npz, Fashion-MNIST as IDX files


# --- where data sets are found ----------------------------------------------------------------


def _find_file(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    return None


def _idx_files(d: Path) -> dict[str, Path | None]:
    """The four IDX files of `d` (gzipped preferred), None where one is missing."""
    return {key: _find_file([d], stem) for key, stem in IDX_FILES.items()}


def _cifar_files(d: Path) -> dict[str, Path | None]:
    return {f: (d / f if (d / f).is_file() else None) for f in [*CIFAR_TRAIN, CIFAR_TEST]}


def milr_home() -> Path:
    """milr's own data directory, where `milr data fetch` puts files unless told otherwise."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "milr"


def default_roots() -> list[Path]:
    """Roots searched after data_dir and $MILR_DATA: milr's own directory, then Keras's."""
    return [milr_home(), Path.home() / ".keras" / "datasets"]


def roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """`data_dir` (which must exist), `$MILR_DATA`, then the default roots, without repeats."""
    given = []
    if data_dir:
        d = Path(data_dir).expanduser()
        if not d.is_dir():
            raise DataError(f"data directory {d} does not exist"
                            if not d.exists() else f"data directory {d} is not a directory")
        given.append(d)
    if os.environ.get("MILR_DATA"):
        given.append(Path(os.environ["MILR_DATA"]).expanduser())
    return _unique(given + default_roots())


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every directory where `name` may lie: each root in each layout, then the system dirs."""
    subs = LAYOUT_DIRS.get(name, ("", name))
    return _unique([r / s if s else r for r in roots(data_dir) for s in subs]
                   + SYSTEM_DIRS.get(name, []))


def _unique(paths: list[Path]) -> list[Path]:
    seen, out = set(), []
    for p in paths:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


@dataclass(frozen=True)
class Found:
    """Where a named data set was found: its layout and the files that will be read."""

    name: str
    layout: str  # "idx", "keras-npz" or "cifar-bin"
    files: dict[str, Path]

    @property
    def where(self) -> Path:
        return next(iter(self.files.values())).parent


def locate(name: str, data_dir: str | os.PathLike | None = None) -> Found:
    """The first complete copy of `name` in `search_dirs(name, data_dir)`, or a DataError.

    The error names what is missing, every directory looked in, and `milr data fetch NAME`.
    """
    dirs = search_dirs(name, data_dir)

    partial: tuple[Path, str] | None = None  # the first directory holding some of the files
    pickled: Path | None = None  # the first CIFAR-10 python version seen
    unreadable: list[str] = []  # directories that could not be searched, and why
    for d in dirs:
        try:
            files = _cifar_files(d) if name == "cifar10" else _idx_files(d)
            if all(files.values()):
                return Found(name, "cifar-bin" if name == "cifar10" else "idx", files)
            npz = d / KERAS_NPZ.get(name, "")
            if name in KERAS_NPZ and npz.is_file():
                return Found(name, "keras-npz", {"npz": npz})
            if any(files.values()) and partial is None:
                partial = (d, next(k for k, p in files.items() if p is None))
            if name == "cifar10" and pickled is None and (d / CIFAR_PY_DIR).is_dir():
                pickled = d / CIFAR_PY_DIR
        except OSError as e:  # an unreadable root (~/.keras/datasets) must not hide the others
            unreadable.append(f"{d} ({e.strerror or e})")
    error = _not_found(name, dirs, partial, pickled)
    if unreadable:
        error = DataError(f"{error}; could not search {', '.join(unreadable)}")
    raise error


def _not_found(name: str, dirs: list[Path], partial: tuple[Path, str] | None,
               pickled: Path | None) -> DataError:
    """The one-line 'not found' error: what is missing, where we looked, how to get it."""
    fetch = f"get it with `milr data fetch {name}` {HOW_TO_GET[name]}"
    if partial is not None:
        d, key = partial
        what = key if name == "cifar10" else IDX_FILES[key] + "[.gz]"
        return DataError(f"{name}: {what} not found in {d}, which holds the other files; {fetch}")
    if pickled is not None:
        return DataError(f"{name}: found only {pickled}, the Python (pickled) version of "
                         "CIFAR-10, which milr never reads (unpickling can run code); it needs "
                         "the binary version (cifar-10-binary.tar.gz, folder "
                         f"cifar-10-batches-bin): {fetch}")
    what = CIFAR_TRAIN[0] if name == "cifar10" else IDX_FILES["x_train"] + "[.gz]"
    return _missing(name, dirs, what)


def _missing(name: str, dirs: list[Path], what: str) -> DataError:
    where = ", ".join(str(d) for d in dirs) or "(no directories)"
    nor = f" (nor {KERAS_NPZ[name]})" if name in KERAS_NPZ else ""
    return DataError(f"{name}: {what} not found in {where}{nor}; get it with `milr data fetch "
                     f"{name}` {HOW_TO_GET[name]}")


def read_found(found: Found) -> Dataset:
    """Read and validate the files that `locate` found."""
    if found.layout == "keras-npz":
        return load_npz(found.files["npz"], found.name)
    if found.layout == "cifar-bin":
        return read_cifar_set(found.files)
    return read_idx_set(found.name, found.files)


# --- entry point ------------------------------------------------------------------------------


def preflight(name: str, data_dir: str | os.PathLike | None = None) -> None:
    """Refuse now, reading no data and without torch, what `load` would refuse for want of the
    files: a missing data_dir, a named data set found nowhere, a .npz path that is no file."""
    if data_dir is not None:
        roots(data_dir)
    if name in CLASSES:
        locate(name, data_dir)
    elif name.startswith("mnist1d"):
        from . import mnist1d

        mnist1d.check_available(name, roots(data_dir)[0])
    elif name.endswith(".npz"):
        check_npz_file(Path(name))
    elif specs.is_spec(name):
        specs.load(name, "dataset")  # imports it: a missing file or a bad import now


def load_mnist1d(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """MNIST-1D from its cache under the first root (`data_dir`, `$MILR_DATA`, milr's data
    directory), built there by the `mnist1d` package on first use."""
    from . import mnist1d

    arrays, _, _ = mnist1d.arrays(name, roots(data_dir)[0])
    return standardised(name, **arrays, classes=10)


def identities(cfg, data: Dataset | None = None) -> dict[str, str | None]:
    """What a result records of the user code behind it (`spec.identities`), the data set's
    that of the arrays its function returned (`Dataset.sha256`, source and arrays) where
    cfg.dataset names one: of `data` (the data used), else of cfg.dataset loaded (cached)."""
    code = specs.identities(cfg)
    if specs.is_spec(cfg.dataset):
        data = data or load(cfg.dataset, cfg.data_dir)
        code[specs.sha256_column("dataset")] = data.sha256
    return code


_CACHE: dict[tuple, Dataset] = {}


def forget() -> None:
    """Drop the data sets this process loaded: a sweep whose tasks load their own (worker
    processes, Ray) keeps only their identities, not their arrays."""
    _CACHE.clear()


def load(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a data set by name (see DATASETS), from a .npz path or a user's function
    (PATH.py:NAME); cached per process (a function's per content of its file)."""
    if data_dir is not None:
        roots(data_dir)  # refuses a data_dir that is missing or is not a directory, saying which
    loaded = specs.load(name, "dataset") if specs.is_spec(name) else None
    key = (name, str(data_dir), os.environ.get("MILR_DATA"), loaded and loaded.sha256)
    if key not in _CACHE:
        if loaded is not None:
            ds = from_function(loaded, name)
        elif name == "gaussians":
            ds = gaussians()
        elif name in CLASSES:
            ds = read_found(locate(name, data_dir))
        elif name.startswith("mnist1d"):
            ds = load_mnist1d(name, data_dir)
        elif name.endswith(".npz"):
            ds = load_npz(Path(name))
        else:
            raise DataError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}, "
                            "a .npz path or PATH.py:NAME")
        _CACHE[key] = ds
    return _CACHE[key]
