"""Data sets as standardised tensors: (x_train, y_train, x_eval, y_eval), read from local files.

The file formats: IDX (MNIST, Fashion-MNIST), CIFAR-10's binary version and .npz; where the
files lie is milr.data.lookup's business. Every file is validated when it is read: a NaN, a single
class or a label out of range is refused with one line instead of giving a plausible wrong η*.
The synthetic Gaussian set needs no files at all.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch loads only where tensors are made: a refusal comes before it
    import torch

CLASSES = {"mnist": 10, "fashion-mnist": 10, "cifar10": 10}
# A .npz states no number of classes; it is max label + 1, which must stay small enough for the
# output layer to be a sane allocation (a stray label of 1e9 would ask for a 1e9-wide layer).
MAX_CLASSES = 10_000

# The synthetic set follows the paper: two Gaussians, 9k train + 1k validation samples per class.
# Dimension and separation are ours (not given in the paper): identity covariance, means at
# +-delta/2 along a random unit direction. delta = 2.0 gives a Bayes accuracy of Phi(1) = 0.841, so
# the default threshold 0.80 asks for a nearly optimal linear direction in 64 dimensions.
GAUSS_DIM = 64
GAUSS_DELTA = 2.0
GAUSS_TRAIN_PER_CLASS = 9000
GAUSS_EVAL_PER_CLASS = 1000


class DataError(ValueError):
    """A data set that cannot be found or read; the message says where we looked."""


@dataclass(frozen=True)
class Dataset:
    """A data set, inputs flattened (every MLP path reads them so); `in_shape` is the shape of
    one example as the data have it, e.g. (1, 28, 28), for a model that wants it back."""

    name: str
    x_train: torch.Tensor  # (N, n0) float32, standardised
    y_train: torch.Tensor  # (N,) int64
    x_eval: torch.Tensor  # (M, n0)
    y_eval: torch.Tensor  # (M,)
    classes: int
    in_shape: tuple[int, ...] | None = None  # None: (n0,), the inputs as they are
    sha256: str | None = None  # a function's data: `arrays_sha256`; None for any other set

    def __post_init__(self) -> None:
        shape = (self.n_inputs,) if self.in_shape is None else tuple(map(int, self.in_shape))
        if math.prod(shape) != self.n_inputs:
            raise DataError(f"{self.name}: an example of shape {shape} has {math.prod(shape)} "
                            f"values, but the inputs hold {self.n_inputs} per example")
        object.__setattr__(self, "in_shape", shape)

    @property
    def n_inputs(self) -> int:
        return self.x_train.shape[1]

    def to(self, device: torch.device | str) -> Dataset:
        return replace(self, x_train=self.x_train.to(device), y_train=self.y_train.to(device),
                       x_eval=self.x_eval.to(device), y_eval=self.y_eval.to(device))


def gaussians(
    seed: int = 0,
    dim: int = GAUSS_DIM,
    delta: float = GAUSS_DELTA,
    n_train: int = GAUSS_TRAIN_PER_CLASS,
    n_eval: int = GAUSS_EVAL_PER_CLASS,
) -> Dataset:
    """Two isotropic Gaussians whose means are `delta` apart; deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(dim)
    u /= np.linalg.norm(u)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat([0, 1], n)
        x = rng.standard_normal((2 * n, dim)) + np.outer(2 * y - 1, u) * (delta / 2)
        order = rng.permutation(2 * n)
        return x[order], y[order]

    xt, yt = draw(n_train)
    xe, ye = draw(n_eval)
    return standardised("gaussians", xt, yt, xe, ye, classes=2)


# --- validation -------------------------------------------------------------------------------

KEYS = ("x_train", "y_train", "x_eval", "y_eval")


def standardised(name, x_train, y_train, x_eval, y_eval, classes=None, where=None,
                 in_shape=None) -> Dataset:
    """Validate, flatten and standardise with the training set's mean and std (no eval leakage).

    `where` names, per array, the file it came from, so that every refusal names the file.
    `in_shape`: one example's shape [default: as the arrays have it, x_train.shape[1:]].
    """
    where = {k: f"{name}: {k}" for k in KEYS} | (where or {})
    x_train, x_eval = (_rows(a, where[k]) for a, k in ((x_train, "x_train"), (x_eval, "x_eval")))
    shape = _example_shape(x_train, x_eval, where)
    x_train, x_eval = (_inputs(a, where[k]) for a, k in ((x_train, "x_train"),
                                                          (x_eval, "x_eval")))
    y_train, y_eval = (_labels(a, where[k]) for a, k in ((y_train, "y_train"),
                                                         (y_eval, "y_eval")))
    for x, y, kx, ky in ((x_train, y_train, "x_train", "y_train"),
                         (x_eval, y_eval, "x_eval", "y_eval")):
        if len(x) != len(y):
            raise DataError(f"{name}: mismatched lengths: {len(x)} inputs in {where[kx]} but "
                            f"{len(y)} labels in {where[ky]}")
    if x_train.shape[1] != x_eval.shape[1]:
        raise DataError(f"{name}: {where['x_train']} has {x_train.shape[1]} features per "
                        f"example but {where['x_eval']} has {x_eval.shape[1]}")
    classes = _classes(y_train, y_eval, classes, where)
    # float32 accumulation (numpy's pairwise sum) as in every result published so far: a
    # float64 mean moves the inputs by an ulp, enough to flip a run at the edge of η*.
    mean, std = _moments(x_train)
    x_train, x_eval = (_scaled(x, mean, std, where[k])
                       for x, k in ((x_train, "x_train"), (x_eval, "x_eval")))
    import torch

    return Dataset(
        name,
        torch.from_numpy(x_train),
        torch.from_numpy(y_train.astype(np.int64)),
        torch.from_numpy(x_eval),
        torch.from_numpy(y_eval.astype(np.int64)),
        classes,
        in_shape or shape,
    )


def _example_shape(x_train: np.ndarray, x_eval: np.ndarray, where: dict) -> tuple[int, ...]:
    """One example's shape, the same in both sets (a model that reshapes needs one); a vector
    of single values is (1,)."""
    if x_train.shape[1:] != x_eval.shape[1:] and x_train[0].size == x_eval[0].size:
        raise DataError(f"{where['x_train']} holds examples of shape {x_train.shape[1:]} but "
                        f"{where['x_eval']} of shape {x_eval.shape[1:]}; give both one shape")
    return x_train.shape[1:] or (1,)


def grayscale(x: np.ndarray) -> tuple[int, ...]:
    """An example's shape as (channels, height, width): IDX files and Keras's mnist.npz store
    grayscale images as (N, H, W) without the one channel."""
    return (1, *x.shape[1:]) if x.ndim == 3 else x.shape[1:]


def _moments(x: np.ndarray) -> tuple[float, float]:
    """Mean and std of the training inputs: float32 as published, float64 where float32 fails.

    At large magnitudes (1e20) float32's sum of squares overflows to inf, at small ones (1e-30)
    it underflows to 0: both would turn every input into 0. Then the float64 moments are used.
    """
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        mean, std = float(x.mean()), float(x.std())
    mean64 = float(x.mean(dtype=np.float64))  # accumulated in float64 without a copy of x
    rows = max(1, 2**22 // max(1, x[0].size))  # blocks of about 4M values: no float64 copy
    ss = sum(float(((x[i:i + rows].astype(np.float64) - mean64) ** 2).sum())
             for i in range(0, len(x), rows))
    std64 = math.sqrt(ss / x.size)
    if not (math.isfinite(mean) and math.isfinite(std) and abs(std - std64) <= 1e-3 * std64
            and abs(mean - mean64) <= 1e-3 * std64):
        mean, std = mean64, std64
    return mean, (std if std > 0 else 1.0)


def _scaled(x: np.ndarray, mean: float, std: float, what: str) -> np.ndarray:
    """(x - mean) / std as float32; a value that leaves float32's range is refused by name."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = ((x - mean) / std).astype(np.float32)
    if not np.isfinite(out).all():
        raise DataError(f"{what}: standardised with the training set's mean {mean:.4g} and std "
                        f"{std:.4g}, some inputs leave float32's range; rescale the data")
    return out


def _rows(a, what: str) -> np.ndarray:
    """An array with one row per example and a numeric dtype; a scalar or text is refused."""
    a = np.asarray(a)
    if a.ndim == 0:
        raise DataError(f"{what} is a 0-d array (a single value); expected one row per example")
    if a.dtype.kind not in "biuf":
        raise DataError(f"{what} has dtype {a.dtype}; expected numbers")
    if len(a) == 0:
        raise DataError(f"{what} is empty (0 examples)")
    return a


def _inputs(x, what: str) -> np.ndarray:
    """Inputs as (N, features) float32, refusing NaN and inf (one would turn every loss to NaN)."""
    x = _rows(x, what)
    if x[0].size == 0:
        raise DataError(f"{what} has shape {x.shape}: 0 features per example; expected at "
                        "least one input")
    with np.errstate(over="ignore", invalid="ignore"):  # too large for float32: refused below
        x = x.reshape(len(x), -1).astype(np.float32)
    if x.dtype.kind == "f":
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise DataError(f"{what} holds {bad} non-finite value(s) (NaN, inf, or beyond "
                            "float32's range): refusing to train on them")
    return x


def _labels(y, what: str) -> np.ndarray:
    """Labels as a vector of non-negative whole numbers: floats are checked, never truncated."""
    y = _rows(y, what)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{what} has shape {y.shape}; expected one integer label per example "
                        "(one-hot labels are not read)")
    if y.dtype.kind == "f":
        finite = np.isfinite(y)
        if not finite.all():
            raise DataError(f"{what} holds {int((~finite).sum())} non-finite label(s)")
        frac = y != np.round(y)
        if frac.any():
            raise DataError(f"{what} holds {int(frac.sum())} label(s) that are not whole numbers "
                            f"(e.g. {y[frac][0].item()!r}); labels must be integers")
    if y.min() < 0:
        raise DataError(f"{what} holds a negative label ({y.min().item()!r}); labels must be "
                        "0, 1, ...")
    return y


def _classes(y_train: np.ndarray, y_eval: np.ndarray, classes: int | None, where: dict) -> int:
    """The number of classes: stated by the format, else max label + 1 within a sane bound."""
    top = y_train.max().item()
    if classes is None:
        limit = min(MAX_CLASSES, len(y_train))
        if top >= limit:
            raise DataError(f"{where['y_train']} holds label {top!r}: with {len(y_train)} "
                            f"training examples milr accepts at most {limit} classes "
                            f"(labels 0..{limit - 1})")
        classes = int(top) + 1
    for y, k in ((y_train, "y_train"), (y_eval, "y_eval")):
        if y.max() >= classes:
            raise DataError(f"{where[k]} holds label {y.max().item()!r}, outside the "
                            f"{classes} classes 0..{classes - 1}")
    seen = np.unique(y_train)
    if len(seen) < 2:
        raise DataError(f"{where['y_train']} has a single class (every label is "
                        f"{seen[0].item()!r}); at least 2 are needed")
    return classes


# --- IDX (MNIST, Fashion-MNIST) -------------------------------------------------------------

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_eval": "t10k-images-idx3-ubyte",
    "y_eval": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped): a big-endian header, then unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (header)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(shape, dtype=np.int64)):
        raise DataError(
            f"{path} is truncated or corrupt: expected {int(np.prod(shape))} bytes of data "
            f"for shape {shape}, found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_set(name: str, paths: dict[str, Path]) -> Dataset:
    parts = {key: read_idx(p) for key, p in paths.items()}
    where = {key: str(p) for key, p in paths.items()}
    return standardised(name, **parts, classes=CLASSES.get(name, 10), where=where,
                        in_shape=grayscale(parts["x_train"]))


# --- CIFAR-10 binary version (no pickles) -----------------------------------------------------

CIFAR_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
CIFAR_TEST = "test_batch.bin"
CIFAR_SHAPE = (3, 32, 32)  # the pixel bytes are the red plane, then green, then blue
CIFAR_RECORD = 1 + math.prod(CIFAR_SHAPE)  # label byte, then 3072 pixel bytes
CIFAR_PY_DIR = "cifar-10-batches-py"  # the pickled version, never read


def read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: records of a label byte then 3072 pixel bytes."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if raw.size == 0 or raw.size % CIFAR_RECORD:
        raise DataError(
            f"{path} is truncated or corrupt: {raw.size} bytes is not a multiple of "
            f"the {CIFAR_RECORD}-byte CIFAR-10 record"
        )
    rec = raw.reshape(-1, CIFAR_RECORD)
    if rec[:, 0].max() > 9:
        raise DataError(f"{path} is corrupt: label {rec[:, 0].max()} outside 0..9")
    return rec[:, 1:], rec[:, 0]


def read_cifar_set(paths: dict[str, Path]) -> Dataset:
    train = [read_cifar_bin(paths[f]) for f in CIFAR_TRAIN]
    xe, ye = read_cifar_bin(paths[CIFAR_TEST])
    xt = np.concatenate([x for x, _ in train])
    yt = np.concatenate([y for _, y in train])
    batches, test = str(paths[CIFAR_TEST].parent / "data_batch_*.bin"), str(paths[CIFAR_TEST])
    where = {"x_train": batches, "y_train": batches, "x_eval": test, "y_eval": test}
    return standardised("cifar10", xt, yt, xe, ye, classes=10, where=where,
                        in_shape=CIFAR_SHAPE)


# --- .npz -------------------------------------------------------------------------------------

NPZ_EVAL_FRACTION = 0.1
# What a corrupt .npz can raise from inside zipfile, zlib or numpy's header parser.
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
               SyntaxError, tokenize.TokenError, struct.error)


def _npz_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> tuple:
    """Shape and dtype of one member, checked against its stored size before anything is read.

    A header that claims more data than the member holds would otherwise make numpy allocate
    the claimed size first.
    """
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise DataError(f"{path}: {info.filename} uses .npy format {version}, not read")
        start = f.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: {info.filename} holds Python objects (pickles), never read")
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if info.file_size - start != need:
        raise DataError(f"{path}: {info.filename} is truncated or corrupt: shape {shape} of "
                        f"{dtype} needs {need} bytes, the file holds {info.file_size - start}")
    return shape, dtype


def check_npz_file(path: Path) -> None:
    """Refuse a .npz path that is not a readable, non-empty file, saying which."""
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a .npz file")
    if not path.is_file():
        raise DataError(f"no such .npz file: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes), not a .npz file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:  # permissions: the file may be fine, it cannot be read
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npz, without pickles, with one-line errors for any corruption."""
    check_npz_file(path)
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                _npz_header(zf, info, path)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except DataError:
        raise
    except _NPZ_ERRORS as e:
        raise DataError(f"cannot read {path} as .npz (truncated or corrupt): "
                        f"{type(e).__name__}: {e}") from None


def load_npz(path: Path, name: str | None = None) -> Dataset:
    """Arrays x_train/y_train/x_eval/y_eval (or x_test/y_test), or x/y split 90/10 (fixed seed)."""
    arrays = read_npz(path)
    where = {k: f"{path} [{k}]" for k in arrays}
    if "x_train" in arrays and "y_train" in arrays:
        ek = "eval" if "x_eval" in arrays else "test"
        if f"x_{ek}" not in arrays or f"y_{ek}" not in arrays:
            raise DataError(f"{path} has x_train/y_train but no x_eval/y_eval (or x_test/y_test)")
        parts = (arrays["x_train"], arrays["y_train"], arrays[f"x_{ek}"], arrays[f"y_{ek}"])
        where = {"x_train": where["x_train"], "y_train": where["y_train"],
                 "x_eval": where[f"x_{ek}"], "y_eval": where[f"y_{ek}"]}
    elif "x" in arrays and "y" in arrays:
        x, y = _rows(arrays["x"], where["x"]), _rows(arrays["y"], where["y"])
        if len(x) != len(y):
            raise DataError(f"{path}: mismatched lengths: x has {len(x)} rows, y has {len(y)}")
        if len(x) < 10:
            raise DataError(f"{path}: x and y need at least 10 rows, found {len(x)}")
        order = np.random.default_rng(0).permutation(len(x))
        n_eval = max(1, int(round(NPZ_EVAL_FRACTION * len(x))))
        ev, tr = order[:n_eval], order[n_eval:]
        parts = (x[tr], y[tr], x[ev], y[ev])
        where = {"x_train": where["x"], "x_eval": where["x"], "y_train": where["y"],
                 "y_eval": where["y"]}
    else:
        raise DataError(f"{path} must hold arrays x and y (or x_train, y_train, x_eval, y_eval); "
                        f"found {sorted(arrays)}")
    shape = grayscale(parts[0]) if name in CLASSES else None  # Keras's mnist.npz: images
    return standardised(name or path.stem, *parts, classes=CLASSES.get(name), where=where,
                        in_shape=shape)


# --- a user's function: PATH.py:NAME or package.module:NAME ------------------------------------


def from_function(loaded, spec: str) -> Dataset:
    """The data a user's function returns, checked and standardised as a .npz's are.

    The contract: NAME() takes no arguments and returns a tuple (or list) of four tensors or
    numpy arrays, (x_train, y_train, x_eval, y_eval): inputs of shape (N, *in_shape), integer
    labels 0, 1, ... of shape (N,); the number of classes is the largest training label + 1.
    """
    from ..base.spec import call

    out = call(loaded, f"dataset {spec!r}:")
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        got = f"{len(out)} values" if isinstance(out, (tuple, list)) else type(out).__name__
        raise DataError(f"dataset {spec!r} returned {got}; expected a tuple (x_train, y_train, "
                        "x_eval, y_eval) of tensors or numpy arrays")
    where = {k: f"dataset {spec!r} [{k}]" for k in KEYS}
    arrays = [_numpy(v, where[k]) for v, k in zip(out, KEYS, strict=True)]
    data = standardised(spec, *arrays, where=where)  # refuses what is not four numeric arrays
    return replace(data, sha256=arrays_sha256(loaded.sha256, arrays))


def arrays_sha256(source_sha256: str, arrays) -> str:
    """The identity of the data a function returned, computed once as they are loaded: SHA-256
    over its source's hash and, per array in KEYS' order, its name, dtype, shape and bytes, all
    little-endian in C order, so that the same values hash alike in any process on any machine
    and a function that reads a file or draws unseeded numbers cannot pass other data as its."""
    digest = hashlib.sha256(source_sha256.encode())
    for key, a in zip(KEYS, arrays, strict=True):
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        digest.update(f"\n{key} {a.dtype.str} {list(a.shape)}\n".encode())
        digest.update(a.data)
    return digest.hexdigest()


def _numpy(value, what: str) -> np.ndarray:
    """A tensor (detached, on the CPU) or numpy array as a numpy array; anything else refused."""
    import torch

    if isinstance(value, np.ndarray):
        return value
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{what} is a {type(value).__name__}; expected a tensor or numpy array")
    value = value.detach().cpu()
    try:  # numpy has no bfloat16: its values are floats
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    except (TypeError, RuntimeError, NotImplementedError):
        raise DataError(f"{what} has dtype {value.dtype}, which milr cannot read as numbers; "
                        "convert it to float32 or int64") from None
