"""`--dataset mnist` and `--dataset cifar10` end to end from the layouts users have, on small
learnable fixtures written in the official formats (the real sets are not installable here)."""

import gzip
import json
import struct

import numpy as np
import pytest
from typer.testing import CliRunner

from milr.cli import app
from milr.data import lookup


def images(n, shape, seed):
    """Labels 0..9, and images whose band `label` is bright: learnable by a linear model."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 40, (n, *shape)).astype(np.uint8)
    flat = x.reshape(n, -1)
    band = flat.shape[1] // 10
    for i, label in enumerate(y):
        flat[i, label * band:(label + 1) * band] = 255
    return x, y.astype(np.uint8)


def write_idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setattr(lookup, "_CACHE", {})
    monkeypatch.delenv("MILR_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def estimate(name, root):
    res = CliRunner().invoke(app, ["estimate", "--dataset", name, "--data-dir", str(root),
                                   "--depth", "1", "--width", "16", "--steps", "200",
                                   "--eval-every", "20", "--seeds", "2", "--rtol", "0.3",
                                   "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_mnist_from_a_torchvision_root(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n, seed in (("train", 600, 0), ("t10k", 200, 1)):
        x, y = images(n, (28, 28), seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", y)
    doc = estimate("mnist", tmp_path)
    assert doc["config"]["threshold"] == 0.925  # the paper's
    assert [s["status"] for s in doc["seeds"]] == ["ok", "ok"]
    assert all(t["peak_acc"] is None or t["peak_acc"] <= 1 for t in doc["trials"])
    assert any(t["success"] and t["final_acc"] >= 0.925 for t in doc["trials"])


def test_cifar10_from_the_binary_version(tmp_path):
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for seed, name in enumerate(names):
        x, y = images(120, (3072,), seed)
        (root / name).write_bytes(np.concatenate([y[:, None], x], axis=1).tobytes())
    doc = estimate("cifar10", tmp_path)
    assert doc["config"]["threshold"] == 0.34  # the paper's
    assert [s["status"] for s in doc["seeds"]] == ["ok", "ok"]
