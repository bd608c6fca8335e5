"""Data of one's own (issue 32, items 3b and 3c): `--dataset PATH.py:NAME` (or `--data`, grid
key `data`), a function returning (x_train, y_train, x_eval, y_eval), checked and standardised as
a .npz is; in a sweep its relative path is the grid file's, and its file travels with the tasks."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_GRID

from milr import EstimateConfig
from milr.base import spec
from milr.data import lookup
from milr.sweep import run as sw
from milr.sweep.executors import process_runner, ray_runner
from milr.sweep.grid import GridError, load_grid, parse_grid
from milr.sweep.store import ResultStore

# Two classes whose means differ by 1 in each of 24 values: an MLP trains in a few steps.
DATA_PY = """\
import numpy as np


def make():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.standard_normal((400, 2, 3, 4)) + y[:, None, None, None]
    return x[:300], y[:300], x[300:], y[300:]
"""
QUICK = ["--depth", "1", "--width", "8", "--seeds", "1", "--steps", "40", "--eval-every", "20",
         "--rtol", "0.3", "--threshold", "0.9", "--device", "cpu", "--json"]


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setattr(lookup, "_CACHE", {})
    monkeypatch.setattr(spec, "_CARRIED", {}, raising=False)


def write(path: Path, text: str = DATA_PY) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return f"{path}:make"


def same_as_npz(tmp_path) -> Path:
    """DATA_PY's arrays in a .npz: the reader every check and the standardisation come from."""
    npz = tmp_path / "same.npz"
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.standard_normal((400, 2, 3, 4)) + y[:, None, None, None]
    np.savez(npz, x_train=x[:300], y_train=y[:300], x_eval=x[300:], y_eval=y[300:])
    return npz


def test_a_function_gives_what_the_same_arrays_in_a_npz_give(tmp_path):
    target = write(tmp_path / "d.py")
    ds, npz = lookup.load(target), lookup.load(str(same_as_npz(tmp_path)))
    assert ds.name == target and ds.in_shape == (2, 3, 4) and ds.classes == 2
    for k in ("x_train", "y_train", "x_eval", "y_eval"):
        assert torch.equal(getattr(ds, k), getattr(npz, k)), k


def test_tensors_are_read_as_arrays_are(tmp_path):
    """Tensors (with grad, in bfloat16 too) are detached and read as numpy arrays are."""
    arrays = write(tmp_path / "a.py")
    tensors = write(tmp_path / "t.py", DATA_PY.replace(
        "    return x[:300]", "    import torch\n    x = torch.tensor(x, requires_grad=True)\n"
        "    y = torch.tensor(y)\n    return x[:300]"))
    a, t = lookup.load(arrays), lookup.load(tensors)
    assert torch.equal(a.x_train, t.x_train) and torch.equal(a.y_eval, t.y_eval)
    half = write(tmp_path / "h.py", DATA_PY.replace("return x[:300]",
                                                    "import torch\n    x = torch.tensor(x)"
                                                    ".bfloat16()\n    return x[:300]"))
    assert lookup.load(half).x_train.dtype == torch.float32


def test_a_changed_file_is_read_again(tmp_path):
    target = write(tmp_path / "d.py")
    first = lookup.load(target)
    write(tmp_path / "d.py", DATA_PY.replace("(0, 2,", "(0, 3,"))
    assert lookup.load(target).classes == 3 and first.classes == 2


def test_a_spec_needs_a_threshold_as_a_npz_does(tmp_path):
    target = write(tmp_path / "d.py")
    with pytest.raises(ValueError, match="has no default threshold"):
        EstimateConfig(depth=1, width=4, dataset=target)
    assert EstimateConfig(depth=1, width=4, dataset=target, threshold=0.9).dataset == target


@pytest.mark.parametrize("returned, words", [
    ("{'x': 1}", "returned dict; expected a tuple (x_train, y_train, x_eval, y_eval)"),
    ("x[:300], y[:300], x[300:]", "returned 3 values; expected a tuple"),
    ("x[:300].tolist(), y[:300], x[300:], y[300:]", "[x_train] is a list; expected a tensor"),
    ("x[:300] * np.nan, y[:300], x[300:], y[300:]", "[x_train] holds 7200 non-finite value(s)"),
    ("x[:300], y[:300], x[300:], y[300:] + 5", "[y_eval] holds label 6, outside the 2 classes"),
    ("x[:300], y[:300] - 1, x[300:], y[300:]", "[y_train] holds a negative label"),
    ("x[:300], y[:300] + 0.5, x[300:], y[300:]", "[y_train] holds 300 label(s) that are not "
                                                 "whole numbers"),
    ("x[:300], y[:299], x[300:], y[300:]", "mismatched lengths: 300 inputs in"),
    ("x[:300], y[:300] * 0, x[300:], y[300:] * 0", "[y_train] has a single class"),
    ("x[:1], y[:1], x[300:], y[300:]", "[y_train] holds label 1: with 1 training examples"),
    ("x[:0], y[:0], x[300:], y[300:]", "[x_train] is empty (0 examples)"),
    ("x[:300], y[:300], x[300:].reshape(100, 4, 3, 2), y[300:]", "holds examples of shape "
                                                                 "(2, 3, 4) but"),
])
def test_bad_returns_are_one_line_naming_the_spec(tmp_path, returned, words):
    target = write(tmp_path / "d.py", DATA_PY.replace("x[:300], y[:300], x[300:], y[300:]",
                                                      returned))
    with pytest.raises(ValueError) as e:
        lookup.load(target)
    assert words in str(e.value) and target in str(e.value) and "\n" not in str(e.value)


def test_cli_data_is_dataset_and_rows_name_the_spec(tmp_path, run_milr):
    """`--data` is another name of `--dataset`; the η* is that of the same arrays in a .npz."""
    target = write(tmp_path / "d.py")
    code, out, err = run_milr(["estimate", *QUICK, "--data", target])
    assert code == 0, err
    got = json.loads(out)
    code, out, err = run_milr(["estimate", *QUICK, "--dataset", str(same_as_npz(tmp_path))])
    assert code == 0, err
    npz = json.loads(out)
    assert got["config"]["dataset"] == target
    assert [s["lr_star"] for s in got["seeds"]] == [s["lr_star"] for s in npz["seeds"]]


# --- grids: the key `data`, relative paths ----------------------------------------------------

def test_grid_key_data_is_dataset():
    spec_grid = "depths: [1]\nwidths: [4]\nthreshold: 0.9\n"
    assert parse_grid(spec_grid + "data: x.py:make\n").params["dataset"] == "x.py:make"
    with pytest.raises(GridError, match=r"grid line 5: data and dataset \(line 4\) are the "
                                        "same key; give one"):
        parse_grid(spec_grid + "dataset: gaussians\ndata: gaussians\n")


def test_a_relative_spec_is_the_grid_files_and_must_exist(tmp_path, monkeypatch):
    write(tmp_path / "g" / "d.py")
    grid = tmp_path / "g" / "grid.yaml"
    grid.write_text("depths: [1]\nwidths: [4]\nthreshold: 0.9\ndataset: d.py:make\n")
    monkeypatch.chdir(tmp_path)  # not the grid file's directory
    assert load_grid(grid).params["dataset"] == f"{tmp_path / 'g' / 'd.py'}:make"
    grid.write_text(grid.read_text().replace("d.py", "nope.py"))
    with pytest.raises(GridError, match=rf"grid.yaml line 4: dataset nope.py:make: no such file "
                                        rf"\(relative to the grid file: {tmp_path}/g/nope.py\)"):
        load_grid(grid)
    grid.write_text(grid.read_text().replace("dataset: nope.py", "dataset: milr.nope"))
    assert load_grid(grid).params["dataset"] == "milr.nope:make"  # a module: Python finds it


# --- the file travels with a sweep's tasks ----------------------------------------------------

def test_a_carried_file_is_loaded_where_its_path_is_missing_or_changed(tmp_path):
    target = write(tmp_path / "d.py", "def make():\n    return 'first'\n")
    carried = spec.carry(target)
    assert carried[0] == str(tmp_path / "d.py") and spec.carry("gaussians") is None
    os.remove(tmp_path / "d.py")  # as on another machine
    spec.receive([carried])
    got = spec.load(target, "dataset")
    assert got.obj() == "first" and got.path == carried[0] and got.sha256 == carried[1]
    write(tmp_path / "d.py", "def make():\n    return 'edited'\n")  # edited meanwhile
    spec.receive([carried])
    assert spec.load(target, "dataset").obj() == "first"
    write(tmp_path / "d.py", "def make():\n    return 'first'\n")  # as it was: the file itself
    spec.receive([carried])
    assert spec.load(target, "dataset").path == str(tmp_path / "d.py") and not spec._CARRIED


def spec_grid(tmp_path) -> Path:
    """TINY_GRID on DATA_PY's data, given by a path relative to the grid file."""
    write(tmp_path / "g" / "d.py")
    grid = tmp_path / "g" / "grid.yaml"
    grid.write_text(TINY_GRID.replace("dataset: gaussians", "data: d.py:make\nthreshold: 0.9"))
    return grid


def table(rows):
    return sorted((r["depth"], r["width"], r["seed"], r["lr_star"], r["status"], r["dataset"])
                  for r in rows)


@pytest.mark.slow
def test_worker_processes_run_a_spec_grid_from_another_directory(tmp_path, monkeypatch):
    grid = spec_grid(tmp_path)
    ref = sw.run_sweep(load_grid(grid), tmp_path / "a.csv")
    monkeypatch.chdir(tmp_path)  # the workers' working directory too: not the grid file's
    par = sw.run_sweep(load_grid("g/grid.yaml"), tmp_path / "b.csv", process_runner(2))
    assert table(par.rows) == table(ref.rows) and len(ref.rows) == 8
    assert {r["dataset"] for r in ref.rows} == {f"{tmp_path / 'g' / 'd.py'}:make"}


@pytest.mark.slow
def test_ray_tasks_carry_the_file_where_it_is_not(tmp_path):
    """The file is removed once the sweep has read it: the local cluster's workers can load it
    only from what their tasks carry, as on machines that never had it."""
    ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")
    grid = spec_grid(tmp_path)
    ref = sw.run_sweep(load_grid(grid), tmp_path / "a.csv")
    loaded = load_grid(grid)
    ray_run = ray_runner(None)

    def moved_away(tasks):
        def first_then_remove():
            for i, t in enumerate(tasks):
                if i == 0:
                    assert t.sources and t.sources[0][0] == str(tmp_path / "g" / "d.py")
                    (tmp_path / "g" / "d.py").rename(tmp_path / "elsewhere.py")
                yield t
        yield from ray_run(first_then_remove())

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(sw.__file__).parents[2])}})
    try:
        res = sw.run_sweep(loaded, tmp_path / "b.csv", moved_away)
    finally:
        ray.shutdown()
    assert not (tmp_path / "g" / "d.py").exists()
    assert table(res.rows) == table(ref.rows) == table(ResultStore(tmp_path / "b.csv").rows())


def test_a_path_with_brackets_is_printed_as_it_is(tmp_path, run_milr):
    """Paths are text, not rich markup: `[/]` once crashed the table after training, `[old]`
    vanished from it."""
    target = write(tmp_path / "[old]" / "[/]" / "d.py")
    quick = [a for a in QUICK if a != "--json"]
    code, out, err = run_milr(["estimate", "--data", target, *quick])
    assert code in (0, None) and "Traceback" not in err, err
    assert "[old]/[/]/d.py" in " ".join(out.split()).replace(" ", ""), out


# --- the data's identity: the arrays returned, not only the function's source ------------------

# The same source whatever it reads: the arrays come from a file beside it, or are drawn unseeded.
READS_NPZ = """\
from pathlib import Path

import numpy as np


def make():
    z = np.load(Path(__file__).with_name("arrays.npz"))
    return z["x"][:300], z["y"][:300], z["x"][300:], z["y"][300:]
"""
READS_NPY = """\
from pathlib import Path

import numpy as np


def make():
    here = Path(__file__).parent
    x, y = np.asfortranarray(np.load(here / "x.npy")), np.load(here / "y.npy")
    return x[:300], y[:300], x[300:], y[300:]
"""
UNSEEDED = DATA_PY.replace("default_rng(0)", "default_rng()")


def save_arrays(where: Path, shift: float) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    np.savez(where / "arrays.npz", x=rng.standard_normal((400, 6)) + y[:, None] + shift, y=y)


def test_the_recorded_identity_changes_with_the_data_a_function_reads(tmp_path, run_milr):
    """One source, two data sets: `dataset_sha256` tells them apart (it hashed the source only,
    so a resume or a fit would have mixed them)."""
    target = write(tmp_path / "d.py", READS_NPZ)
    got = []
    for shift in (0.0, 0.5):
        save_arrays(tmp_path, shift)
        lookup._CACHE.clear()  # as a new process would
        code, out, err = run_milr(["estimate", *QUICK, "--data", target])
        assert code == 0, err
        got.append(json.loads(out)["dataset_sha256"])
    assert got[0] != got[1] and None not in got


def test_the_identity_is_source_and_arrays_in_one_byte_order(tmp_path):
    """dataset_sha256 as docs/protocol.md §8 defines it: SHA-256 over the source's hash, then per
    array its name, little-endian dtype, shape and C-order bytes: the same values give the same
    hash whatever byte order or memory layout the function returned them in."""
    import hashlib

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.standard_normal((400, 2, 3)) + y[:, None, None]
    parts = (x[:300], y[:300], x[300:], y[300:])
    np.save(tmp_path / "x.npy", x.astype(">f8"))  # big-endian, read back Fortran-ordered
    np.save(tmp_path / "y.npy", y)
    write(tmp_path / "n.py", READS_NPY)
    cfg = EstimateConfig(depth=1, width=4, dataset=f"{tmp_path / 'n.py'}:make",
                         threshold=0.9)
    source = hashlib.sha256((tmp_path / "n.py").read_bytes()).hexdigest()
    want = hashlib.sha256(source.encode())
    for key, a in zip(("x_train", "y_train", "x_eval", "y_eval"), parts, strict=True):
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        want.update(f"\n{key} {a.dtype.str} {list(a.shape)}\n".encode() + a.tobytes())
    assert lookup.identities(cfg)["dataset_sha256"] == want.hexdigest()
    assert lookup.identities(EstimateConfig(depth=1, width=4)) == {"model_sha256": None,
                                                                   "dataset_sha256": None}


def test_a_resume_refuses_rows_of_other_data_from_the_same_source(tmp_path):
    from milr.sweep.store import COLUMNS, StoreError

    target = write(tmp_path / "d.py", READS_NPZ)
    save_arrays(tmp_path, 0.0)
    cfg = EstimateConfig(depth=1, width=4, dataset=target, threshold=0.9)
    row = {c: "" for c in COLUMNS} | {k: "" if v is None else str(v)
                                      for k, v in {**cfg.row(), **lookup.identities(cfg)}.items()}
    store = ResultStore(tmp_path / "r.csv")
    store.check_compatible([row], cfg)  # the same data: accepted
    save_arrays(tmp_path, 0.5)
    lookup._CACHE.clear()  # a resume is a new process
    with pytest.raises(StoreError, match="dataset_sha256=.* changed"):
        store.check_compatible([row], cfg)


def fresh_workers(tasks):
    """Tasks run here, each as in a new worker process: the data loaded again."""
    from milr.sweep.tasks import run_task

    for task in tasks:
        lookup._CACHE.clear()
        yield run_task(task)


def test_a_worker_whose_data_differ_from_the_sweeps_refuses(tmp_path):
    """An unseeded function gives each worker other data: the task refuses before it trains,
    rather than rows of two data sets under one name in one file."""
    grid = tmp_path / "grid.yaml"
    write(tmp_path / "d.py", UNSEEDED)
    grid.write_text("depths: [1]\nwidths: [4]\nseeds: 1\nsteps: 20\neval_every: 10\n"
                    "device: cpu\nthreshold: 0.9\ndata: d.py:make\n")
    with pytest.raises(ValueError, match=r"dataset '.*d.py:make' returned other data here than "
                                         r"when the sweep began .*seed its randomness"):
        sw.run_sweep(load_grid(grid), tmp_path / "r.csv", fresh_workers)
    assert ResultStore(tmp_path / "r.csv").rows() == []
    write(tmp_path / "d.py")  # seeded: every worker agrees
    lookup._CACHE.clear()
    assert len(sw.run_sweep(load_grid(grid), tmp_path / "r.csv", fresh_workers).rows) == 1
