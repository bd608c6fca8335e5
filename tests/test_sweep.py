import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_GRID as TINY
from hermetic import read_until, survivors

from milr.sweep import run as sw
from milr.sweep.executors import local_runner, process_runner, ray_runner
from milr.sweep.grid import load_grid, parse_grid
from milr.sweep.store import ResultStore

COMPARED = ("depth", "width", "seed", "lr_star", "lo", "hi", "status", "trials", "nonmonotone")


def counting(runner=local_runner):
    """Wrap a runner to record every (depth, width, seed) it is asked to run."""
    calls = []

    def run(tasks):
        def seen():  # tasks arrive one at a time (a warm start predicts from the cells done)
            for t in tasks:
                c = t.config
                calls.extend((c.depth, c.width, s) for s in range(c.seed, c.seed + c.seeds))
                yield t
        yield from runner(seen())

    return run, calls


def table(rows):
    return sorted(tuple(r[c] for c in COMPARED) for r in rows)


def test_rerun_runs_nothing_and_extension_runs_only_new_cells(tmp_path):
    out = tmp_path / "r.csv"
    run, calls = counting()
    first = sw.run_sweep(parse_grid(TINY), out, run)
    assert first.ran == 8 and len(calls) == 8 and len(set(calls)) == 8
    again = sw.run_sweep(parse_grid(TINY), out, run)
    assert again.ran == 0 and len(calls) == 8
    bigger = TINY.replace("widths: [8, 16]", "widths: [8, 16, 32]").replace("seeds: 2", "seeds: 3")
    ext = sw.run_sweep(parse_grid(bigger), out, run)
    # new width: 2 depths x 3 seeds; old cells: only the new seed 2
    assert ext.ran == 6 + 4
    assert sorted(calls[8:]) == sorted([(d, 32, s) for d in (1, 2) for s in range(3)]
                                       + [(d, w, 2) for d in (1, 2) for w in (8, 16)])
    keys = [(r["depth"], r["width"], r["seed"]) for r in ext.rows]
    assert len(keys) == len(set(keys)) == 18


def test_refuses_to_mix_fixed_parameters(tmp_path):
    out = tmp_path / "r.csv"
    sw.run_sweep(parse_grid(TINY), out)
    with pytest.raises(ValueError, match=r"written with steps=120 but the grid has steps=200"):
        sw.run_sweep(parse_grid(TINY.replace("steps: 120", "steps: 200")), out)


def test_execution_settings_never_block_a_resume_and_are_recorded_per_row(tmp_path):
    """probes, edge probes and the like are how a search runs, not what it measures: a grid that
    changes them resumes the file, its new rows record their own, and milr fit reads them all;
    the η* of a seed is the same either way."""
    from milr.analysis.table import cells_from_rows, read_table

    out = tmp_path / "r.csv"
    first = TINY.replace("depths: [1, 2]", "depths: [1]")
    sw.run_sweep(parse_grid(first + "probes: 1\n"), out)
    sw.run_sweep(parse_grid(TINY + "probes: 3\nedge_probes: 2\nedge_factor: 1.5\n"), out)
    rows = read_table(out)
    assert {(r["depth"], r["probes"], r["edge_probes"]) for r in rows} == {
        ("1", "1", "4"), ("2", "3", "2")}
    cells_from_rows(rows)  # one protocol: no refusal
    again = tmp_path / "again.csv"
    sw.run_sweep(parse_grid(first + "probes: 3\n"), again)
    key = ("depth", "width", "seed", "lr_star", "lo", "hi", "status", "edge_trained")
    assert [[r[k] for k in key] for r in read_table(again)] == \
        [[r[k] for k in key] for r in rows if r["depth"] == "1"]


def test_half_written_last_line_is_repaired(tmp_path):
    out = tmp_path / "r.csv"
    full = sw.run_sweep(parse_grid(TINY), out)
    text = out.read_text()
    lines = text.splitlines(keepends=True)
    out.write_text("".join(lines[:-1]) + lines[-1][:25])  # a kill in the middle of a row
    run, calls = counting()
    again = sw.run_sweep(parse_grid(TINY), out, run)
    assert again.repaired and len(calls) == 1
    assert table(again.rows) == table(full.rows)
    assert len(out.read_text().splitlines()) == len(lines)
    assert {r["seeds"] for r in again.rows} == {"2"}


def test_pandas_reads_results(tmp_path):
    pd = pytest.importorskip("pandas")
    out = tmp_path / "r.csv"
    sw.run_sweep(parse_grid(TINY), out)
    df = pd.read_csv(out)
    assert len(df) == 8 and df["lr_star"].dtype.kind == "f" and (df["lr_star"] > 0).all()
    assert set(df["status"]) == {"ok"} and (df["steps"] == 120).all()


def _sweep_cmd(grid, out):
    return [sys.executable, "-m", "milr", "sweep", str(grid), "--out", str(out)]


@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted(tmp_path, children):
    grid = tmp_path / "g.yaml"
    grid.write_text(TINY.replace("widths: [8, 16]", "widths: [8, 16, 24, 32]"))
    ref = sw.run_sweep(load_grid(grid), tmp_path / "ref.csv")
    out = tmp_path / "killed.csv"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = children.popen(_sweep_cmd(grid, out), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    read_until(proc, "[2/")  # two of its eight tasks are written
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(ResultStore(out).rows())
    assert 0 < partial < 16, "the kill should land mid-sweep"
    res = subprocess.run(_sweep_cmd(grid, out), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"{partial} row(s) already in" in res.stderr
    rows = ResultStore(out).rows()
    keys = [(r["depth"], r["width"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys)) == 16
    assert table(rows) == table(ref.rows)


def test_cli_bad_grid_is_one_line_exit_2(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("depths: [1]\nwidths: [8]\nbatchsize: 3\n")
    res = subprocess.run(_sweep_cmd(grid, tmp_path / "o.csv"), capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip() == (f"milr: error: {grid} line 3: unknown key 'batchsize' "
                                  "(did you mean 'batch_size'?)")
    missing = subprocess.run(_sweep_cmd(tmp_path / "nope.yaml", "o.csv"), capture_output=True,
                             text=True)
    assert missing.returncode == 2 and "cannot read grid file" in missing.stderr


def test_cli_dry_run_lists_cells_and_trains_nothing(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(TINY)
    res = subprocess.run(_sweep_cmd(grid, tmp_path / "o.csv") + ["--dry-run"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "4 task(s) to run" in res.stdout
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.slow
def test_worker_processes_give_the_same_rows(tmp_path):
    ref = sw.run_sweep(parse_grid(TINY), tmp_path / "a.csv")
    par = sw.run_sweep(parse_grid(TINY), tmp_path / "b.csv", process_runner(2))
    assert table(par.rows) == table(ref.rows)


@pytest.mark.slow
def test_ray_local_cluster_gives_the_same_rows(tmp_path):
    ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")
    ref = sw.run_sweep(parse_grid(TINY), tmp_path / "a.csv")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(sw.__file__).parents[2])}})
    try:
        assert ray.cluster_resources()["CPU"] == 2  # a real (local) cluster is up
        run, calls = counting(ray_runner(None))
        res = sw.run_sweep(parse_grid(TINY), tmp_path / "b.csv", run)
    finally:
        ray.shutdown()
    assert len(calls) == 8
    assert table(res.rows) == table(ref.rows)


def test_lambda1_recorded_per_seed_when_asked(tmp_path):
    grid = parse_grid(TINY.replace("depths: [1, 2]", "depths: [1]") + "lambda1_samples: 256\n")
    rows = sw.run_sweep(grid, tmp_path / "r.csv").rows
    assert len(rows) == 4
    for r in rows:
        assert r["lambda1_converged"] == "True" and r["lambda1_samples"] == "256"
        assert float(r["lambda1"]) > float(r["lambda1_eff"]) > 0  # input layer at 0.1 x lr
    plain = sw.run_sweep(parse_grid(TINY), tmp_path / "p.csv").rows
    assert all(r["lambda1"] == "" for r in plain)


@pytest.mark.slow
@pytest.mark.signals
def test_ctrl_c_stops_cleanly_and_keeps_rows(tmp_path, children):
    grid = tmp_path / "g.yaml"
    grid.write_text(TINY.replace("widths: [8, 16]", "widths: [8, 16, 24, 32, 40, 48]"))
    out = tmp_path / "r.csv"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = children.popen(_sweep_cmd(grid, out), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    said = read_until(proc, "[1/")  # its first task is written
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    stderr = said + stderr
    kept = len(ResultStore(out).rows())
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert f"interrupted; {kept} finished row(s) are kept" in stderr and 0 < kept < 24


def test_cli_reports_the_repair_of_a_half_written_line(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(TINY)
    out = tmp_path / "r.csv"
    sw.run_sweep(parse_grid(TINY), out)
    text = out.read_text()
    out.write_text(text[: text.rstrip("\n").rfind("\n") + 30])  # the last row cut mid-way
    res = subprocess.run(_sweep_cmd(grid, out), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "1 task(s) to run" in res.stderr and f"repaired {out}" in res.stderr


def test_cli_refuses_unwritable_outputs_before_training(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(TINY)
    res = subprocess.run(_sweep_cmd(grid, tmp_path / "missing" / "r.csv"), capture_output=True,
                         text=True)
    assert res.returncode == 2
    assert res.stderr.strip().endswith(f"directory {tmp_path / 'missing'} does not exist")


def _descendants(pid):
    """Every process below `pid`, from /proc (psutil is not a dependency)."""
    kids = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        below = kids.get(todo.pop(), [])
        found.update(below)
        todo += below
    return found


@pytest.mark.slow
@pytest.mark.signals
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_sweep_leaves_no_worker_holding_stdout(tmp_path, children, sig):
    grid = tmp_path / "g.yaml"
    grid.write_text(TINY.replace("widths: [8, 16]", "widths: [8, 16, 24, 32, 40, 48, 56, 64]"))
    out = tmp_path / "r.csv"
    proc = children.popen(_sweep_cmd(grid, out) + ["--workers", "2"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    workers = set()
    deadline = time.time() + 180
    while time.time() < deadline and not (out.exists() and out.read_text().count("\n") >= 2):
        workers |= _descendants(proc.pid)
        time.sleep(0.05)
    workers |= _descendants(proc.pid)
    assert len(workers) >= 2, "the workers should be up"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=20)  # returns once nobody holds stdout and stderr
    assert survivors(workers) == []
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "Traceback" not in stderr, stderr
        kept = len(ResultStore(out).rows())
        said = " ".join(stderr.split())  # unwrap the console's line breaks
        assert f"milr: terminated; {kept} finished row(s) are kept in {out}" in said
