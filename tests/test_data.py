import gzip
import io
import struct
import zipfile
import zlib

import numpy as np
import pytest
import torch

from milr.data import formats, lookup
from milr.data.formats import DataError


def write_idx(path, arr, gz=True):
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + arr.astype(np.uint8).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(payload)


def make_idx_dir(tmp_path, n_train=50, n_eval=20, gz=True):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_eval, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_eval),
    }
    for name, arr in parts.items():
        write_idx(tmp_path / (name + sfx), arr, gz)
    return parts


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setattr(lookup, "_CACHE", {})
    monkeypatch.delenv("MILR_DATA", raising=False)
    # only the temporary roots of each test are searched, never the user's or the system's copies
    monkeypatch.setattr(lookup, "default_roots", lambda: [])
    monkeypatch.setattr(lookup, "SYSTEM_DIRS", {})


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip_standardised(tmp_path, gz):
    parts = make_idx_dir(tmp_path, gz=gz)
    ds = lookup.load("fashion-mnist", tmp_path)
    assert ds.x_train.shape == (50, 784) and ds.x_eval.shape == (20, 784)
    assert ds.y_train.tolist() == parts["train-labels-idx1-ubyte"].tolist()
    assert ds.classes == 10
    assert float(ds.x_train.mean()) == pytest.approx(0, abs=1e-5)
    assert float(ds.x_train.std()) == pytest.approx(1, abs=1e-3)
    # eval uses the training statistics, so its first pixel maps exactly as the train pixels do
    raw = parts["t10k-images-idx3-ubyte"].reshape(20, -1).astype(np.float32)
    tr = parts["train-images-idx3-ubyte"].astype(np.float32)
    expect = (raw[0, 0] - tr.mean()) / tr.std()
    assert float(ds.x_eval[0, 0]) == pytest.approx(expect, rel=1e-4)


def test_search_order_env_and_subdir(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    make_idx_dir(tmp_path / "mnist")
    monkeypatch.setenv("MILR_DATA", str(tmp_path))
    assert lookup.load("mnist").x_train.shape == (50, 784)


def test_missing_idx_names_where_it_looked(tmp_path):
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\[\.gz\] not found in .*"
                                        + str(tmp_path)):
        lookup.load("mnist", tmp_path)


def test_truncated_idx_is_reported(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated or corrupt"):
        lookup.load("fashion-mnist", tmp_path)


def test_bad_magic_is_reported(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"garbage!" * 4)
    with pytest.raises(DataError, match="bad magic number"):
        lookup.load("fashion-mnist", tmp_path)


def test_cifar_binary(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    labels = {}
    for name in [*formats.CIFAR_TRAIN, formats.CIFAR_TEST]:
        rec = rng.integers(0, 256, (4, formats.CIFAR_RECORD)).astype(np.uint8)
        rec[:, 0] = rng.integers(0, 10, 4)
        labels[name] = rec[:, 0].tolist()
        rec.tofile(d / name)
    ds = lookup.load("cifar10", tmp_path)
    assert ds.x_train.shape == (20, 3072) and ds.x_eval.shape == (4, 3072)
    assert ds.y_eval.tolist() == labels[formats.CIFAR_TEST]
    (d / "test_batch.bin").write_bytes(b"\x00" * 100)
    lookup._CACHE.clear()
    with pytest.raises(DataError, match="not a multiple of the 3073-byte"):
        lookup.load("cifar10", tmp_path)


def test_npz_xy_split_and_explicit(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((100, 5)), rng.integers(0, 3, 100)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    ds = lookup.load(str(tmp_path / "a.npz"))
    assert (len(ds.x_train), len(ds.x_eval)) == (90, 10)
    assert ds.classes == 3
    np.savez(tmp_path / "b.npz", x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:])
    assert len(lookup.load(str(tmp_path / "b.npz")).x_eval) == 20
    np.savez(tmp_path / "c.npz", inputs=x)
    with pytest.raises(DataError, match=r"must hold arrays x and y .*found \['inputs'\]"):
        lookup.load(str(tmp_path / "c.npz"))


def test_gaussians_deterministic_and_paper_sized():
    a, b = formats.gaussians(seed=3), formats.gaussians(seed=3)
    assert (len(a.x_train), len(a.x_eval)) == (18000, 2000)
    assert a.y_train.sum() == 9000 and a.y_eval.sum() == 1000
    assert (a.x_train == b.x_train).all()
    assert not (formats.gaussians(seed=4).x_train == a.x_train).all()


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        lookup.load("nope")


# --- layouts already on disk ------------------------------------------------------------------


def write_cifar_dir(d, n=4, seed=0):
    """The six batch files of CIFAR-10's binary version, `n` records each."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    for name in [*formats.CIFAR_TRAIN, formats.CIFAR_TEST]:
        rec = rng.integers(0, 256, (n, formats.CIFAR_RECORD)).astype(np.uint8)
        rec[:, 0] = np.arange(n) % 10
        rec.tofile(d / name)


def write_keras_npz(path, n_train=50, n_eval=20):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
             y_train=(np.arange(n_train) % 10).astype(np.uint8),
             x_test=rng.integers(0, 256, (n_eval, 28, 28), dtype=np.uint8),
             y_test=(np.arange(n_eval) % 10).astype(np.uint8))


@pytest.mark.parametrize("name, sub, gz", [
    ("mnist", "MNIST/raw", True),  # torchvision
    ("mnist", "MNIST/raw", False),  # torchvision after extraction
    ("fashion-mnist", "FashionMNIST/raw", True),  # torchvision
    ("fashion-mnist", "fashion-mnist", True),  # Keras's ~/.keras/datasets/fashion-mnist
    ("mnist", "mnist", True),  # milr data fetch
])
def test_idx_layouts_are_found_under_a_root(tmp_path, name, sub, gz):
    (tmp_path / sub).mkdir(parents=True)
    parts = make_idx_dir(tmp_path / sub, gz=gz)
    found = lookup.locate(name, tmp_path)
    assert (found.layout, found.where) == ("idx", tmp_path / sub)
    ds = lookup.load(name, tmp_path)
    assert ds.y_eval.tolist() == parts["t10k-labels-idx1-ubyte"].tolist()


def test_keras_mnist_npz_is_found(tmp_path):
    write_keras_npz(tmp_path / "mnist.npz")
    assert lookup.locate("mnist", tmp_path).layout == "keras-npz"
    ds = lookup.load("mnist", tmp_path)
    assert (ds.x_train.shape, ds.x_eval.shape, ds.classes) == ((50, 784), (20, 784), 10)


def test_keras_root_is_searched_by_default(tmp_path, monkeypatch):
    keras = tmp_path / ".keras" / "datasets"
    (keras / "fashion-mnist").mkdir(parents=True)
    make_idx_dir(keras / "fashion-mnist")
    monkeypatch.setattr(lookup, "default_roots", lambda: [keras])
    assert lookup.locate("fashion-mnist").where == keras / "fashion-mnist"


def test_default_roots_are_milr_home_and_keras(tmp_path, monkeypatch):
    monkeypatch.undo()  # the real default_roots, with a fake home
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert lookup.default_roots() == [tmp_path / "xdg" / "milr", tmp_path / ".keras" / "datasets"]


@pytest.mark.parametrize("sub", ["cifar-10-batches-bin", "cifar10", "cifar10/cifar-10-batches-bin"])
def test_cifar_layouts_are_found(tmp_path, sub):
    write_cifar_dir(tmp_path / sub)
    assert lookup.locate("cifar10", tmp_path).where == tmp_path / sub
    assert lookup.load("cifar10", tmp_path).x_train.shape == (20, 3072)


def test_cifar_python_version_is_refused_naming_the_binary_one(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x80\x04pickle")
    with pytest.raises(DataError, match=r"cifar-10-batches-py, the Python \(pickled\) version.*"
                                        r"cifar-10-binary\.tar\.gz.*milr data fetch cifar10"):
        lookup.load("cifar10", tmp_path)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_not_found_names_fetch_and_every_directory(tmp_path, name):
    with pytest.raises(DataError) as e:
        lookup.load(name, tmp_path)
    msg = str(e.value)
    assert f"milr data fetch {name}" in msg and "\n" not in msg
    for d in lookup.search_dirs(name, tmp_path):
        assert str(d) in msg


def test_partial_idx_dir_names_the_missing_file(tmp_path):
    make_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\[\.gz\] not found in "
                                        + str(tmp_path) + ", which holds the other files"):
        lookup.load("mnist", tmp_path)


def test_missing_data_dir_is_refused(tmp_path, monkeypatch):
    # a copy elsewhere must not be used silently when the user's directory does not exist
    make_idx_dir(tmp_path)
    monkeypatch.setattr(lookup, "SYSTEM_DIRS", {"mnist": [tmp_path]})
    with pytest.raises(DataError, match=f"data directory {tmp_path / 'nope'} does not exist"):
        lookup.load("mnist", tmp_path / "nope")


# --- corrupt and truncated files, in every layout ----------------------------------------------


def test_corrupt_deflate_stream_is_one_line(tmp_path):
    make_idx_dir(tmp_path)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    raw = bytearray(gzip.compress(gzip.decompress(p.read_bytes())))  # a bare 10-byte header
    raw[10] = 0xFF  # the first deflate block header now says block type 3, which is invalid
    p.write_bytes(bytes(raw))
    with pytest.raises(zlib.error):  # what gzip raises here, not an OSError
        gzip.decompress(bytes(raw))
    with pytest.raises(DataError, match=f"cannot read {p}: error: Error -3"):
        lookup.load("mnist", tmp_path)


def test_truncated_gz_is_one_line(tmp_path):
    make_idx_dir(tmp_path)
    p = tmp_path / "train-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-12])
    with pytest.raises(DataError, match=f"cannot read {p}"):
        lookup.load("mnist", tmp_path)


@pytest.mark.parametrize("cut", [0, 30, -9])
def test_zero_byte_or_truncated_npz_is_one_line(tmp_path, cut):
    p = tmp_path / "mnist.npz"
    write_keras_npz(p)
    raw = p.read_bytes()
    p.write_bytes(raw[:cut] if cut else b"")
    with pytest.raises(DataError, match=str(p)):
        lookup.load("mnist", tmp_path)
    with pytest.raises(DataError, match=str(p)):
        lookup.load(str(p))


def test_npz_header_claiming_more_data_than_stored_is_refused(tmp_path):
    # a consistent zip whose x.npy header claims 10**12 rows: numpy would allocate 24 TB first
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 3)})
    p = tmp_path / "a.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("x.npy", buf.getvalue() + np.zeros((20, 3)).tobytes())
        zf.writestr("y.npy", b"")
    with pytest.raises(DataError, match=r"x\.npy is truncated or corrupt: shape \(10{12}, 3\)"):
        lookup.load(str(p))


def test_truncated_cifar_batch_is_one_line(tmp_path):
    write_cifar_dir(tmp_path / "cifar-10-batches-bin")
    p = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(DataError, match=f"{p} is truncated or corrupt"):
        lookup.load("cifar10", tmp_path)


# --- values that would give a plausible wrong answer -------------------------------------------


def npz(tmp_path, **arrays):
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    return str(p)


def xy(n=40, dim=3, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, dim)), np.arange(n) % classes


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_a_single_non_finite_input_is_refused(tmp_path, bad):
    x, y = xy()
    x[7, 1] = bad
    with pytest.raises(DataError, match=r"d\.npz \[x\] holds 1 non-finite value"):
        lookup.load(npz(tmp_path, x=x, y=y))


def test_non_finite_eval_input_names_the_array(tmp_path):
    x, y = xy()
    xe = x[:5].copy()
    xe[0, 0] = np.nan
    with pytest.raises(DataError, match=r"\[x_test\] holds 1 non-finite"):
        lookup.load(npz(tmp_path, x_train=x, y_train=y, x_test=xe, y_test=y[:5]))


def test_a_single_class_is_refused(tmp_path):
    x, _ = xy()
    with pytest.raises(DataError, match=r"\[y\] has a single class \(every label is 3\)"):
        lookup.load(npz(tmp_path, x=x, y=np.full(40, 3)))


def test_fractional_float_labels_are_refused_not_truncated(tmp_path):
    x, y = xy()
    yf = y.astype(float)
    yf[3] = 0.5
    with pytest.raises(DataError, match=r"1 label\(s\) that are not whole numbers \(e\.g\. 0\.5\)"):
        lookup.load(npz(tmp_path, x=x, y=yf))


def test_whole_float_labels_are_accepted(tmp_path):
    x, y = xy(classes=3)
    ds = lookup.load(npz(tmp_path, x=x, y=y.astype(np.float32)))
    assert ds.classes == 3 and ds.y_train.dtype == torch.int64


def test_huge_label_in_npz_is_refused_before_any_allocation(tmp_path):
    x, y = xy()
    y[5] = 10**9
    with pytest.raises(DataError, match=r"holds label 1000000000: with 36 training examples"):
        lookup.load(npz(tmp_path, x=x, y=y))


def test_negative_and_nan_labels_are_refused(tmp_path):
    x, y = xy()
    with pytest.raises(DataError, match=r"negative label \(-1\)"):
        lookup.load(npz(tmp_path, x=x, y=np.where(np.arange(40) == 2, -1, y)))
    lookup._CACHE.clear()
    yn = y.astype(float)
    yn[0] = np.nan
    with pytest.raises(DataError, match="1 non-finite label"):
        lookup.load(npz(tmp_path, x=x, y=yn))


def test_eval_label_outside_training_classes_is_refused(tmp_path):
    x, y = xy()
    with pytest.raises(DataError, match=r"\[y_test\] holds label 7, outside the 2 classes 0\.\.1"):
        lookup.load(npz(tmp_path, x_train=x, y_train=y, x_test=x[:4],
                        y_test=np.array([0, 1, 7, 0])))


def test_idx_label_out_of_range_is_refused(tmp_path):
    make_idx_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 200] + [0] * 17))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz holds label 200, outside"):
        lookup.load("mnist", tmp_path)


def test_idx_mismatched_lengths_name_both_files(tmp_path):
    make_idx_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(49) % 10)
    with pytest.raises(DataError, match=r"mismatched lengths: 50 inputs in .*train-images-idx3"
                                        r"-ubyte\.gz but 49 labels in .*train-labels-idx1-ubyte"):
        lookup.load("fashion-mnist", tmp_path)


def test_npz_mismatched_lengths_are_refused(tmp_path):
    x, y = xy()
    with pytest.raises(DataError, match="mismatched lengths: x has 40 rows, y has 39"):
        lookup.load(npz(tmp_path, x=x, y=y[:-1]))
    lookup._CACHE.clear()
    with pytest.raises(DataError, match="mismatched lengths: 40 inputs"):
        lookup.load(npz(tmp_path, x_train=x, y_train=y[:-1], x_test=x, y_test=y))


@pytest.mark.parametrize("key", ["x", "y"])
def test_zero_d_array_in_npz_is_refused(tmp_path, key):
    x, y = xy()
    arrays = {"x": x, "y": y, key: np.array(3.0)}
    with pytest.raises(DataError, match=rf"\[{key}\] is a 0-d array"):
        lookup.load(npz(tmp_path, **arrays))


def test_one_hot_or_text_labels_are_refused(tmp_path):
    x, y = xy()
    with pytest.raises(DataError, match=r"has shape \(36, 2\); expected one integer label"):
        lookup.load(npz(tmp_path, x=x, y=np.eye(2)[y]))
    lookup._CACHE.clear()
    with pytest.raises(DataError, match="has dtype <U1; expected numbers"):
        lookup.load(npz(tmp_path, x=x, y=np.array(list("ab") * 20)))


# --- the shape of one example (issue 32, item 3): a model that is no MLP reshapes the flattened
# inputs to it; the flattened inputs themselves (every MLP's) are as before.

@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_images_have_one_channel(tmp_path, name):
    make_idx_dir(tmp_path)
    ds = lookup.load(name, tmp_path)
    assert ds.in_shape == (1, 28, 28) and ds.x_train.shape == (50, 784)


def test_keras_mnist_npz_images_have_one_channel(tmp_path):
    write_keras_npz(tmp_path / "mnist.npz")
    assert lookup.load("mnist", tmp_path).in_shape == (1, 28, 28)


def test_cifar_examples_are_channel_planes(tmp_path):
    """A record's 3072 bytes are the red, green and blue 32 x 32 planes: x reshaped to in_shape
    puts the pixel at byte 1 + c·1024 + h·32 + w at [c, h, w]."""
    d = tmp_path / "cifar-10-batches-bin"
    write_cifar_dir(d)
    ds = lookup.load("cifar10", tmp_path)
    assert ds.in_shape == (3, 32, 32)
    raw = [np.fromfile(d / f, dtype=np.uint8).reshape(4, -1)[:, 1:]
           for f in [*formats.CIFAR_TRAIN, formats.CIFAR_TEST]]
    mean, std = formats._moments(np.concatenate(raw[:-1]).astype(np.float32))
    planes = ((raw[-1].astype(np.float32) - mean) / std).astype(np.float32).reshape(4, 3, 32, 32)
    assert np.array_equal(ds.x_eval.reshape(-1, *ds.in_shape).numpy(), planes)


def test_gaussians_are_vectors():
    assert formats.gaussians(n_train=5, n_eval=5).in_shape == (formats.GAUSS_DIM,)


def test_npz_keeps_its_arrays_shape_and_flattens_as_before(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((30, 2, 3, 4)), rng.integers(0, 3, 30)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    np.savez(tmp_path / "flat.npz", x=x.reshape(30, 24), y=y)
    ds, flat = lookup.load(str(tmp_path / "a.npz")), lookup.load(str(tmp_path / "flat.npz"))
    assert ds.in_shape == (2, 3, 4) and flat.in_shape == (24,)
    # the inputs as a (30, 24) array give them: an MLP sees what it saw before
    assert torch.equal(ds.x_train, flat.x_train) and torch.equal(ds.x_eval, flat.x_eval)
    assert ds.to("cpu").in_shape == (2, 3, 4)  # a device copy keeps it
    assert lookup.load(str(tmp_path / "a.npz")) is ds  # and the cache


def test_a_train_and_eval_shape_that_differ_are_refused(tmp_path):
    x = np.random.default_rng(0).standard_normal((20, 2, 3))
    y = np.arange(20) % 2
    np.savez(tmp_path / "a.npz", x_train=x, y_train=y, x_eval=x.reshape(20, 6), y_eval=y)
    with pytest.raises(DataError, match=r"x_train\] holds examples of shape \(2, 3\) but .*"
                                        r"x_eval\] of shape \(6,\)"):
        lookup.load(str(tmp_path / "a.npz"))


def test_a_shape_that_does_not_hold_the_inputs_is_refused(tiny):
    with pytest.raises(DataError, match=r"shape \(4, 5\) has 20 values, but the inputs hold 16"):
        formats.Dataset(tiny.name, tiny.x_train, tiny.y_train, tiny.x_eval, tiny.y_eval,
                        tiny.classes, (4, 5))
    assert formats.Dataset(tiny.name, tiny.x_train, tiny.y_train, tiny.x_eval, tiny.y_eval,
                           tiny.classes).in_shape == (16,)
