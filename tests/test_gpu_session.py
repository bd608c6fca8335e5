"""benchmarks/gpu_session.py on the CPU: its cost model and plan, and a tiny session end to end
(the correctness check's CPU mode, sweeps in chunks, the budget, resuming)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_session as gs  # noqa: E402

from milr.base.cost import weight_count  # noqa: E402
from milr.sweep.grid import parse_grid  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
# Four cheap cells, and one cell that trains for minutes on any CPU (20000 steps of width 512
# under stable: every success runs the whole budget); an assumed rate predicts it cheap.
TINY = "depths: [1, 2]\nwidths: [8, 16]\nseeds: 2\ndataset: gaussians\nsteps: 120\n" \
       "eval_every: 20\nrtol: 0.3\ndevice: cuda\n"
# A cell milr refuses when it starts (its weights alone need hundreds of GiB): a failing chunk.
HUGE = "depths: [2]\nwidths: [300000]\nseeds: 1\ndataset: gaussians\nsteps: 100\ndevice: cuda\n"
LONG = "depths: [4]\nwidths: [512]\nseeds: 3\ndataset: gaussians\nsteps: 20000\n" \
       "criterion: stable\ndevice: cuda\n"
BUDGET = 36.0


def session(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_session.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin",
                               "OMP_NUM_THREADS": "1", "HOME": str(ROOT)})


def grid_entry(name: str, text: str, runs: float) -> dict:
    return {"name": name, "grid": parse_grid(text), "csv": Path("/nonexistent/x.csv"),
            "trials": None, "runs": runs, "copied": []}


def test_cost_model_orders_cells_and_sums_them():
    stable = "depths: [4, 1, 2]\nwidths: [64, 8, 32]\nseeds: 3\ndataset: gaussians\n" \
             "steps: 100\ncriterion: stable\n"
    grids = [grid_entry("s", stable, 2.0), grid_entry("t", TINY + "lambda1_samples: 64\n", 3.0)]
    rate = 1e9
    cells = gs.plan_cells(grids, None, rate)
    assert [c["grid"] for c in cells] == ["s"] * 9 + ["t"] * 4  # grids in order
    for name in ("s", "t"):
        mine = [c["predicted_s"] for c in cells if c["grid"] == name]
        assert mine == sorted(mine) and len(set(mine)) == len(mine)
    # stable: no evaluations, no λ1: seeds x runs x steps x 6 x batch x weights
    (d4,) = [c for c in cells if (c["grid"], c["depth"], c["width"]) == ("s", 4, 64)]
    cfg = grids[0]["grid"].config(4, 64)
    assert d4["predicted_s"] == pytest.approx(
        3 * 2.0 * 100 * 6 * cfg.batch_size * weight_count(cfg, 64, 2) / rate)
    assert d4["bound_s"] == pytest.approx(d4["predicted_s"] * 12 / 2.0)
    # evaluations and λ1 add to the accuracy grid's cells
    (t1,) = [c for c in cells if (c["grid"], c["depth"], c["width"]) == ("t", 1, 8)]
    tcfg = grids[1]["grid"].config(1, 8)
    assert t1["predicted_s"] > 2 * 3.0 * 120 * 6 * tcfg.batch_size * weight_count(tcfg, 64, 2) \
        / rate
    # the schedule takes the cheapest cells that fit, a start per chunk, and no more
    left = gs.CHUNK_START_S + sum(c["predicted_s"] for c in cells[:5]) \
        + cells[5]["predicted_s"] / 2
    chunks = gs.schedule(cells, left, 1.0, chunk_s=1e9)
    assert chunks == [cells[:5]]  # and grid t's first cell needs a start of its own
    text = gs.plan_text(cells, chunks, "assumed", left)
    total = sum(c["predicted_s"] for c in cells)
    assert f"# all: 13 cells, predicted {total:.0f} s" in text


def test_next_chunk_limits_a_chunk_but_not_a_single_cell():
    cells = [{"predicted_s": s} for s in (5.0, 30.0, 100.0)]
    assert gs.next_chunk(cells, 1000, 1.0, chunk_s=40) == cells[:1]  # 10 + 5 + 30 > 40
    assert gs.next_chunk(cells[2:], 1000, 1.0, chunk_s=40) == cells[2:]  # alone, over 40
    assert gs.next_chunk(cells, 14, 1.0, chunk_s=1e9) == []  # 10 + 5 > 14
    assert gs.next_chunk(cells, 25, 2.0, chunk_s=1e9) == []  # corrected: 2 x (10 + 5) > 25


@pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST is not installed here")
def test_plan_prints_every_cell_of_the_paper_scale_grids():
    r = session("--plan", "--assume-tflops", "30", "--data-dir", str(FASHION))
    assert r.returncode == 0, r.stderr
    rows = {tuple(line.split(" | ")[:3]) for line in r.stdout.splitlines()
            if line.startswith("| ") and line[2].isalpha() and "grid" not in line}
    expected = set()
    for path in gs.GRIDS:
        grid = parse_grid(path.read_text())
        expected |= {(f"| {path.stem}", str(d), str(w)) for d, w in grid.cells}
    assert len(expected) == 34 and rows == expected
    assert "assumed 30.0 TFLOP/s (not measured)" in r.stdout


def test_plan_measures_the_rate_here(tmp_path):
    grid = tmp_path / "tiny.yaml"
    grid.write_text(TINY)
    r = session("--plan", "--device", "cpu", "--grids", str(grid))
    assert r.returncode == 0, r.stderr
    assert "measured on cpu: width 8 " in r.stdout and "width 16 " in r.stdout
    assert sum(line.startswith("| tiny | ") for line in r.stdout.splitlines()) == 4


@pytest.mark.parametrize("args, says", [
    (["--plan", "--budget-s", "-1"], "--budget-s -1.0"),
    (["--plan", "--grace-s", "nan"], "--grace-s nan"),
    (["--plan", "--data-dir", "/nonexistent/fm"], "--data-dir /nonexistent/fm: no such dir"),
    ([], "--out is required"),
])
def test_bad_input_is_one_line_and_exit_2(args, says):
    r = session(*args)
    assert r.returncode == 2 and says in r.stderr and len(r.stderr.splitlines()) == 1


def test_results_not_ours_are_refused_and_left_alone(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    theirs = tmp_path / "tiny.csv"  # beside the grid: what a session would resume from
    theirs.write_text("a,b\n1,2\n")
    r = session("--plan", "--device", "cpu", "--assume-tflops", "1",
                "--grids", str(tmp_path / "tiny.yaml"))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert r.stderr.rstrip().endswith(f"(a copy of {theirs})")
    assert theirs.read_text() == "a,b\n1,2\n"


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A session on the CPU: the tiny grid, one that fails and the long one; then a rerun of
    the tiny one."""
    base = tmp_path_factory.mktemp("gpu-session")
    for name, text in (("tiny", TINY), ("huge", HUGE), ("long", LONG)):
        (base / f"{name}.yaml").write_text(text)
    out = base / "out"
    common = ["--out", str(out), "--device", "cpu", "--quick-check", "--bench-s", "0",
              "--grace-s", "5", "--assume-tflops", "1e6"]
    first = session(*common, "--budget-s", str(BUDGET), "--grids",
                    *(str(base / f"{name}.yaml") for name in ("tiny", "huge", "long")))
    after_first = {p.name: p.read_bytes() for p in out.iterdir()}
    second = session(*common, "--budget-s", "60", "--grids", str(base / "tiny.yaml"))
    return first, after_first, second, out


def timings(files: dict) -> dict:
    return json.loads(files["timings.json"])


def test_session_writes_its_files(ran):
    first, files, _, _ = ran
    assert first.returncode == 1, first.stdout + first.stderr  # the huge grid failed
    assert {"plan.json", "timings.json", "session.log", "tiny.csv",
            "tiny.trials.jsonl"} <= set(files) and len(files) <= gs.MAX_OUT_FILES
    t = timings(files)
    check = t["check"]["summary"]
    assert check["passed"] and check["early_exit_vs_full"]["stopped_early"] > 0
    assert check["cuda_vs_cpu"] == "skipped: needs CUDA"
    plan = json.loads(files["plan.json"])
    assert {(c["grid"], c["depth"], c["width"]) for c in plan["cells"]} == {
        ("tiny", 1, 8), ("tiny", 1, 16), ("tiny", 2, 8), ("tiny", 2, 16), ("huge", 2, 300000),
        ("long", 4, 512)}
    done = {(c["depth"], c["width"]) for c in t["cells"] if c["grid"] == "tiny" and c["done"]}
    rows = {(int(r["depth"]), int(r["width"]))
            for r in csv.DictReader(files["tiny.csv"].decode().splitlines())}
    assert done == rows  # measured beside predicted for every cell that has rows
    assert all(c["measured_s"] > 0 for c in t["cells"] if c["done"])


def test_a_failing_grid_is_recorded_and_the_next_one_runs(ran):
    _, files, _, _ = ran
    t = timings(files)
    (failure,) = t["sweep_failures"]
    assert failure.startswith("huge: milr sweep exited 2")
    assert "needs at least" in files["session.log"].decode()  # milr's own reason, kept
    assert [c["grid"] for c in t["chunks"]] == ["tiny", "huge", "long"]


def test_session_stops_before_the_budget(ran):
    _, files, _, _ = ran
    t = timings(files)
    assert t["elapsed_s"] <= BUDGET
    assert t["stopped"].startswith("budget")
    assert "long.csv" not in files or len(files["long.csv"].decode().splitlines()) <= 1
    assert not any(c["done"] for c in t["cells"] if c["grid"] == "long")


def test_second_run_skips_finished_cells(ran):
    _, files, second, out = ran
    assert second.returncode == 0, second.stdout + second.stderr
    ran_before = {(c["depth"], c["width"]) for c in timings(files)["cells"] if c["done"]}
    t = json.loads((out / "timings.json").read_text())
    ran_again = {tuple(cell) for chunk in t["chunks"] for cell in chunk["cells"]}
    assert ran_before and not ran_before & ran_again
    text = (out / "tiny.csv").read_bytes()
    assert text.startswith(files["tiny.csv"])  # rows only appended
    keys = [(r["depth"], r["width"], r["seed"]) for r in csv.DictReader(text.decode()
                                                                         .splitlines())]
    assert len(keys) == len(set(keys)) == 8  # every (cell, seed) once


def test_gpu_check_fails_each_broken_comparison():
    import gpu_check

    good = {"early_exit_vs_full": {"same": 8, "of": 8},
            "alone_vs_batch": {"identical": 3, "same_success": 3, "of": 3},
            "cuda_vs_cpu": {"same_success": 16 - gpu_check.MAX_FLIPS, "of": 16},
            "graphs_vs_eager": "skipped: needs CUDA"}
    assert gpu_check.failures(good, cuda=True) == []
    broken = [("early_exit_vs_full", {"same": 7, "of": 8}, True),
              ("alone_vs_batch", {"identical": 2, "same_success": 3, "of": 3}, False),
              ("alone_vs_batch", {"identical": 0, "same_success": 2, "of": 3}, True),
              ("cuda_vs_cpu", {"same_success": 15 - gpu_check.MAX_FLIPS, "of": 16}, True),
              ("graphs_vs_eager", {"same_success": 0, "of": 16}, True)]
    for key, value, cuda in broken:
        (line,) = gpu_check.failures({**good, key: value}, cuda)
        assert line.startswith(key)
    # on CUDA a member alone need not be bit-identical (cuBLAS picks other kernels)
    ok = {**good, "alone_vs_batch": {"identical": 0, "same_success": 3, "of": 3}}
    assert gpu_check.failures(ok, cuda=True) == []
