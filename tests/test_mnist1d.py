"""MNIST-1D: built offline by its package, cached with its arguments and SHA-256, refused when
the cache was changed, and measurable end to end."""

import importlib.util
import json
import os
import random

import numpy as np
import pytest

from milr import EstimateConfig, estimate
from milr.base.config import DEFAULT_THRESHOLDS
from milr.data import lookup, mnist1d
from milr.data.formats import DataError

pytest.importorskip("mnist1d", reason="needs the mnist1d package (pip install 'milr[mnist1d]')")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The default MNIST-1D, built once into a fresh root (from an empty working directory)."""
    root = tmp_path_factory.mktemp("root")
    cwd = tmp_path_factory.mktemp("cwd")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        arrays, b, fresh = mnist1d.arrays("mnist1d", root)
    finally:
        os.chdir(old)
    return root, cwd, arrays, b, fresh


def test_the_default_set_has_the_packages_shapes_classes_and_milrs_checksum(built):
    _, _, arrays, b, fresh = built
    assert fresh
    assert arrays["x_train"].shape == (4000, 40) and arrays["x_eval"].shape == (1000, 40)
    assert sorted(np.unique(arrays["y_train"])) == list(range(10))
    assert np.bincount(arrays["y_train"]).min() > 350  # classes balanced (400 per class drawn)
    if b.versions == mnist1d.REFERENCE_VERSIONS:
        assert b.sha256 == mnist1d.REFERENCE["mnist1d"]
        assert b.mismatch() == ""
    else:  # other numpy/scipy: the difference must be explained, naming both sets of versions
        assert b.matches_reference or (
            "numpy" in b.mismatch() and mnist1d.REFERENCE_VERSIONS["numpy"] in b.mismatch())


def test_building_uses_milrs_arguments_writes_nothing_else_and_keeps_global_generators(built):
    from mnist1d.data import get_dataset_args

    root, cwd, *_ = built
    package = get_dataset_args(as_dict=True)
    package.pop("url")
    assert mnist1d.DEFAULT_ARGS == package  # the package's defaults, written out
    assert list(cwd.iterdir()) == []  # no pickle dropped into the working directory
    assert sorted(p.name for p in (root / "mnist1d").iterdir()) == ["mnist1d.json",
                                                                   "mnist1d.npz"]
    np.random.seed(123)
    random.seed(123)
    mnist1d.generate("mnist1d")
    assert np.random.rand() == np.random.RandomState(123).rand()
    assert random.random() == random.Random(123).random()


def test_a_second_load_reads_the_verified_cache(built):
    root, _, arrays, b, _ = built
    again, b2, fresh = mnist1d.arrays("mnist1d", root)
    assert not fresh and b2 == b
    assert all(np.array_equal(again[k], arrays[k]) for k in mnist1d.KEYS)


def _copy_cache(src_root, dst_root):
    d = dst_root / "mnist1d"
    d.mkdir(parents=True)
    for p in (src_root / "mnist1d").iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    return mnist1d.cache_paths(dst_root, "mnist1d")


def test_a_tampered_cache_is_refused_naming_the_file(built, tmp_path):
    data, _ = _copy_cache(built[0], tmp_path)
    with np.load(data) as z:
        arrays = {k: z[k] for k in mnist1d.KEYS}
    arrays["y_train"][0] = (arrays["y_train"][0] + 1) % 10  # one label changed
    np.savez(data, **arrays)
    before = data.read_bytes()
    with pytest.raises(DataError, match=r"mnist1d\.npz does not match its recorded SHA-256"):
        mnist1d.arrays("mnist1d", tmp_path)
    assert data.read_bytes() == before  # refused, never rebuilt over


def test_a_cache_made_with_other_arguments_is_refused(built, tmp_path):
    _, record = _copy_cache(built[0], tmp_path)
    meta = json.loads(record.read_text())
    meta["args"]["seed"] = 7
    record.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"other arguments \(seed\)"):
        mnist1d.read_cache("mnist1d", tmp_path)


def test_without_the_package_and_without_a_cache_one_line_names_the_extra(monkeypatch,
                                                                         tmp_path, run_milr):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mnist1d" else real(name, *a))
    monkeypatch.setenv("MILR_DATA", str(tmp_path))
    code, _, err = run_milr(["estimate", "--dataset", "mnist1d", "--depth", "1", "--width", "8"])
    assert code == 2
    assert "pip install 'milr[mnist1d]'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_data_list_shows_whether_it_is_built_and_how_to_build_it(monkeypatch, tmp_path,
                                                                 run_milr, built):
    monkeypatch.setenv("MILR_DATA", str(tmp_path))
    code, out, err = run_milr(["data", "list"])
    assert code == 0
    assert "mnist1d: not built yet" in err and "milr data build mnist1d" in err
    _copy_cache(built[0], tmp_path)
    code, out, err = run_milr(["data", "list"])
    assert code == 0 and "mnist1d: not built" not in err
    row = next(line for line in out.splitlines() if line.startswith("│ mnist1d "))
    assert "yes" in row


def test_an_estimate_on_mnist1d_finds_an_eta_star(monkeypatch, built):
    monkeypatch.setenv("MILR_DATA", str(built[0]))
    lookup._CACHE.clear()
    cfg = EstimateConfig(depth=1, width=32, dataset="mnist1d", seeds=1, steps=400, rtol=0.2)
    assert cfg.threshold == DEFAULT_THRESHOLDS["mnist1d"] == 0.40
    est = estimate(cfg)
    (s,) = est.seeds
    assert s.status == "ok" and s.lo < s.lr_star < s.hi
    ds = lookup.load("mnist1d")
    assert ds.n_inputs == 40 and ds.classes == 10
    assert abs(float(ds.x_train.mean())) < 1e-5 and abs(float(ds.x_train.std()) - 1) < 1e-3


def test_mnist1d_examples_are_vectors_of_40(monkeypatch, built):
    """The shape a model that is no MLP receives them in (issue 32, item 3)."""
    monkeypatch.setenv("MILR_DATA", str(built[0]))
    monkeypatch.setattr(lookup, "_CACHE", {})
    assert lookup.load("mnist1d").in_shape == (40,)
