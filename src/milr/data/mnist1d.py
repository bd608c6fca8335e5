"""MNIST-1D (Greydanus, 2020): built offline by the `mnist1d` package, cached under milr's data
directory with the arguments that made it and the SHA-256 of its arrays.

The package generates the set from ten 1-D templates in its own code (`make_dataset`); milr never
calls its `get_dataset`, which downloads by default and writes a pickle into the working
directory. The generated numbers pass through numpy and scipy (interpolation, Gaussian filter),
so their bytes may depend on those versions: every build is checked against the checksum milr
recorded with the versions named in REFERENCE, and a difference is reported with both sets of
versions rather than passed off as the same data set.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .formats import DataError

PACKAGE_VERSION = "0.0.2.post1"  # the version milr's extra pins (`pip install 'milr[mnist1d]'`)
INSTALL = "pip install 'milr[mnist1d]'"
# name -> the package's `num_samples` (80% train, 20% validation); every other argument is the
# package's default (`get_dataset_args()`: 40 features, seed 42).
SAMPLES = {"mnist1d": 5000, "mnist1d-large": 50000}
# The SHA-256 of the arrays (`content_sha256`) that milr's own builds gave, and the versions
# that gave them; a build elsewhere is compared with these.
REFERENCE = {
    "mnist1d": "e498b5795c7cb3360279f0993b1ffcd1a93933bb7a498ca2173a10d08a0ad148",
    "mnist1d-large": "f9ebe26e68b54b852ee58cfeb8f12b18af2fc86da605aa0514a484796beb5ca2",
}
REFERENCE_VERSIONS = {"mnist1d": PACKAGE_VERSION, "numpy": "2.4.6", "scipy": "1.17.1"}
KEYS = ("x_train", "y_train", "x_eval", "y_eval")


@dataclass(frozen=True)
class Build:
    """What a cached build records beside its arrays."""

    name: str
    args: dict  # the package's generating arguments
    versions: dict  # mnist1d, numpy and scipy versions that made it
    sha256: str  # content_sha256 of the arrays

    @property
    def matches_reference(self) -> bool:
        return self.sha256 == REFERENCE[self.name]

    def mismatch(self) -> str:
        """Why this build differs from the reference, in one line ('' when it does not)."""
        if self.matches_reference:
            return ""
        ours = ", ".join(f"{k} {v}" for k, v in REFERENCE_VERSIONS.items())
        theirs = ", ".join(f"{k} {v}" for k, v in self.versions.items())
        why = ("the versions differ, which changes the generated numbers" if self.versions
               != REFERENCE_VERSIONS else "with the same versions: the package's code differs")
        return (f"{self.name} built with {theirs} has SHA-256 {self.sha256[:12]}…, not milr's "
                f"reference {REFERENCE[self.name][:12]}… (made with {ours}): {why}; its η* "
                "are not comparable with results on the reference build")


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the arrays' values, independent of how they are stored: each array in KEYS
    order as little-endian float64 (inputs) or int64 (labels), C order, with its shape."""
    h = hashlib.sha256()
    for key in KEYS:
        a = arrays[key]
        kind = "<i8" if key.startswith("y") else "<f8"
        h.update(f"{key}{a.shape}".encode())
        h.update(np.ascontiguousarray(a, dtype=kind).tobytes())
    return h.hexdigest()


def package_versions() -> dict:
    """The versions of the package and of what its numbers pass through."""
    import scipy

    mnist1d = _import()
    return {"mnist1d": getattr(mnist1d, "__version__", None) or _dist_version(),
            "numpy": np.__version__, "scipy": scipy.__version__}


def _dist_version() -> str:
    from importlib.metadata import version

    return version("mnist1d")


def check_available(name: str, root: Path) -> None:
    """Refuse now, without importing the package, a set that is neither cached nor buildable."""
    import importlib.util

    if not cache_paths(root, name)[0].exists() and importlib.util.find_spec("mnist1d") is None:
        raise DataError(f"{name}: not built in {root / 'mnist1d'}, and the mnist1d package that "
                        f"builds it is not installed; install it with {INSTALL}")


def _import():
    try:
        import mnist1d.data
    except ImportError as e:
        raise DataError(f"mnist1d: the mnist1d package is not installed ({e.msg}); "
                        f"install it with {INSTALL}") from None
    return mnist1d


def generate(name: str) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays of `name`, made by the package's `make_dataset`, and its arguments.

    The package seeds numpy's and Python's global generators; their states are restored
    afterwards, so that building the set changes nothing else in the process."""
    mnist1d = _import()
    args = generate_args(name)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        made = mnist1d.data.make_dataset(_View(args))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = {"x_train": made["x"], "y_train": made["y"], "x_eval": made["x_test"],
              "y_eval": made["y_test"]}
    return arrays, args


class _View:
    """The attribute access the package's functions expect of their arguments."""

    def __init__(self, d: dict):
        self.__dict__.update(d)


def cache_paths(root: Path, name: str) -> tuple[Path, Path]:
    """The cached arrays and their record, under `root/mnist1d/`."""
    d = root / "mnist1d"
    return d / f"{name}.npz", d / f"{name}.json"


def build(name: str, root: Path) -> tuple[dict[str, np.ndarray], Build]:
    """Generate `name` and write it, with its record, under `root` (atomically: a reader never
    sees a half-written cache); returns the arrays and the record."""
    arrays, args = generate(name)
    b = Build(name, args, package_versions(), content_sha256(arrays))
    data, record = cache_paths(root, name)
    data.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(data, lambda f: np.savez(f, **arrays))
    _write_atomic(record, lambda f: f.write(json.dumps(
        {"name": name, "args": args, "versions": b.versions, "sha256": b.sha256},
        indent=1).encode()))
    return arrays, b


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_cache(name: str, root: Path) -> tuple[dict[str, np.ndarray], Build] | None:
    """The cached arrays of `name` and their record; None when there is no cache. A cache whose
    arrays do not hash to its record, or whose record names other arguments than milr's, is
    refused with a DataError naming the file (it is never rebuilt over silently)."""
    data, record = cache_paths(root, name)
    if not data.exists() and not record.exists():
        return None
    fix = f"remove {data.parent} to rebuild it"
    try:
        meta = json.loads(record.read_text())
        with np.load(data, allow_pickle=False) as z:
            arrays = {k: z[k] for k in KEYS}
        b = Build(meta["name"], meta["args"], meta["versions"], meta["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{name}: the cache {data} or its record {record.name} is unreadable "
                        f"({e}); {fix}") from None
    expected = dict(generate_args(name))
    if b.args != expected:
        diff = sorted(k for k in expected.keys() | b.args.keys()
                      if b.args.get(k) != expected.get(k))
        raise DataError(f"{name}: the cache {data} was made with other arguments "
                        f"({', '.join(diff)}) than milr's; {fix}")
    got = content_sha256(arrays)
    if got != b.sha256:
        raise DataError(f"{name}: the cache {data} does not match its recorded SHA-256 "
                        f"({got[:12]}… against {b.sha256[:12]}…): it was changed after it was "
                        f"built; {fix}")
    return arrays, b


def generate_args(name: str) -> dict:
    """The arguments milr builds `name` with: the package's defaults but `num_samples`."""
    return {**DEFAULT_ARGS, "num_samples": SAMPLES[name]}


# The package's `get_dataset_args()` at PACKAGE_VERSION without its download URL, written out so
# that what milr builds does not change with the package's defaults (tests hold them equal).
DEFAULT_ARGS = {"num_samples": 5000, "train_split": 0.8, "template_len": 12, "padding": [36, 60],
                "scale_coeff": 0.4, "max_translation": 48, "corr_noise_scale": 0.25,
                "iid_noise_scale": 2e-2, "shear_scale": 0.75, "shuffle_seq": False,
                "final_seq_length": 40, "seed": 42}


def arrays(name: str, root: Path) -> tuple[dict[str, np.ndarray], Build, bool]:
    """The arrays of `name` from the cache under `root`, built there first if absent; and
    whether this call built them."""
    cached = read_cache(name, root)
    if cached is not None:
        return *cached, False
    arrays, b = build(name, root)
    return arrays, b, True
