import gzip
import struct

import numpy as np
import pytest

from milr import data
from milr.data import DataError


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
    monkeypatch.setattr(data, "_CACHE", {})
    monkeypatch.delenv("MILR_DATA", raising=False)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip_standardised(tmp_path, gz):
    parts = make_idx_dir(tmp_path, gz=gz)
    ds = data.load("fashion-mnist", tmp_path)
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
    assert data.load("mnist").x_train.shape == (50, 784)


def test_missing_idx_names_where_it_looked(tmp_path):
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\[\.gz\] not found in .*"
                                        + str(tmp_path)):
        data.load("mnist", tmp_path)


def test_truncated_idx_is_reported(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated or corrupt"):
        data.load("fashion-mnist", tmp_path)


def test_bad_magic_is_reported(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"garbage!" * 4)
    with pytest.raises(DataError, match="bad magic number"):
        data.load("fashion-mnist", tmp_path)


def test_cifar_binary(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    labels = {}
    for name in [*data.CIFAR_TRAIN, data.CIFAR_TEST]:
        rec = rng.integers(0, 256, (4, data.CIFAR_RECORD)).astype(np.uint8)
        rec[:, 0] = rng.integers(0, 10, 4)
        labels[name] = rec[:, 0].tolist()
        rec.tofile(d / name)
    ds = data.load("cifar10", tmp_path)
    assert ds.x_train.shape == (20, 3072) and ds.x_eval.shape == (4, 3072)
    assert ds.y_eval.tolist() == labels[data.CIFAR_TEST]
    (d / "test_batch.bin").write_bytes(b"\x00" * 100)
    data._CACHE.clear()
    with pytest.raises(DataError, match="not a multiple of the 3073-byte"):
        data.load("cifar10", tmp_path)


def test_npz_xy_split_and_explicit(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((100, 5)), rng.integers(0, 3, 100)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    ds = data.load(str(tmp_path / "a.npz"))
    assert (len(ds.x_train), len(ds.x_eval)) == (90, 10)
    assert ds.classes == 3
    np.savez(tmp_path / "b.npz", x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:])
    assert len(data.load(str(tmp_path / "b.npz")).x_eval) == 20
    np.savez(tmp_path / "c.npz", inputs=x)
    with pytest.raises(DataError, match=r"must hold arrays x and y .*found \['inputs'\]"):
        data.load(str(tmp_path / "c.npz"))


def test_gaussians_deterministic_and_paper_sized():
    a, b = data.gaussians(seed=3), data.gaussians(seed=3)
    assert (len(a.x_train), len(a.x_eval)) == (18000, 2000)
    assert a.y_train.sum() == 9000 and a.y_eval.sum() == 1000
    assert (a.x_train == b.x_train).all()
    assert not (data.gaussians(seed=4).x_train == a.x_train).all()


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        data.load("nope")
