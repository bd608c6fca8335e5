"""Writers, locks and bounds (issue 19, section 3), and the grid's own messages: one writer per
file under any of its names, signals deferred while a task is written whichever thread receives
them, grids bounded before they are expanded, Ctrl-C answered with one line at every stage."""

import os
import signal
import sys
import textwrap
import threading
import time

import pytest
from hermetic import shell_signals

from milr.sweep import run as sw
from milr.sweep import store as st
from milr.sweep.grid import GridError, load_grid, parse_grid

GRID = "depths: [1, 2]\nwidths: [8]\nseeds: 2\nsteps: 120\neval_every: 20\ndevice: cpu\n"


def fake_runner(tasks):
    """Rows and trials without training."""
    for t in tasks:
        c = t.config
        seeds = range(c.seed, c.seed + c.seeds)
        yield ([{**c.row(), **dict.fromkeys(st.RESULT_FIELDS, ""), "seed": s, "status": "ok",
                 "seeds": t.cell_seeds, "lr_star": 1.0} for s in seeds],
               [{"depth": c.depth, "width": c.width, "seed": s, "lr": 1.0} for s in seeds])


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- one writer per file, under any of its names --------------------------------------------


@pytest.mark.parametrize("other", ["symlink", "hardlink"])
def test_a_second_name_of_the_results_file_cannot_write_it_at_once(tmp_path, other):
    grid = parse_grid(GRID)
    real = tmp_path / "real.csv"
    sw.run_sweep(grid, real, fake_runner)  # the file exists: a hard link can be made
    alias = tmp_path / "alias.csv"
    if other == "symlink":
        alias.symlink_to(real)
    else:
        os.link(real, alias)
    for first, second in ((real, alias), (alias, real)):
        holder = sw.plan_sweep(grid, first, lock=True)
        try:
            with pytest.raises(st.StoreError, match="in use by another milr sweep"):
                sw.plan_sweep(grid, second, lock=True).release()
        finally:
            holder.release()
    sw.plan_sweep(grid, alias, lock=True).release()  # free again once released


def test_a_hard_link_to_a_file_created_by_the_run_is_locked_too(tmp_path):
    """The file did not exist when the lock was taken: the run locks it once it writes it."""
    grid = parse_grid(GRID)
    out, link = tmp_path / "r.csv", tmp_path / "h.csv"
    refused = []

    def on_task(n, total, rows):
        if n == 1:
            os.link(out, link)
            try:
                sw.plan_sweep(grid, link, lock=True).release()
            except st.StoreError as e:
                refused.append(str(e))

    sw.run_sweep(grid, out, fake_runner, on_task=on_task)
    assert len(refused) == 1 and "hard link" in refused[0]


def test_the_lock_file_sits_beside_the_real_file(tmp_path):
    (tmp_path / "data").mkdir()
    real = tmp_path / "data" / "r.csv"
    (tmp_path / "r.csv").symlink_to(real)
    sw.run_sweep(parse_grid(GRID), tmp_path / "r.csv", fake_runner)
    assert (tmp_path / "data" / "r.csv.lock").exists() and not (tmp_path / "r.csv.lock").exists()
    assert len(st.ResultStore(real).rows()) == 4


# --- signals are deferred by a flag, not by a mask of one thread -----------------------------


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signal handlers need the main thread")
@pytest.mark.signals
@pytest.mark.parametrize("sig, raised", [(signal.SIGINT, KeyboardInterrupt),
                                         (signal.SIGTERM, sw.Terminated)])
def test_a_signal_received_by_another_thread_waits_for_the_trials(tmp_path, monkeypatch, sig,
                                                                  raised):
    """A process-directed signal goes to a thread that does not block it (as torch's do); the
    handler then runs in the main thread. The task's trials must still follow its rows."""
    out, trials = tmp_path / "r.csv", tmp_path / "t.jsonl"
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, daemon=True)
    helper.start()
    real_append = st.ResultStore.append
    sent = []

    def append_then_signal(self, rows):
        real_append(self, rows)
        if not sent:
            sent.append(sig)
            os.kill(os.getpid(), sig)
            time.sleep(0.2)  # the handler has run by now, wherever it was going to

    monkeypatch.setattr(st.ResultStore, "append", append_then_signal)
    try:
        with shell_signals(), sw.sigterm_as_interrupt(), pytest.raises(raised):
            sw.run_sweep(parse_grid(GRID), out, fake_runner, trials)
    finally:
        stop.set()
        helper.join()
    assert len(st.ResultStore(out).rows()) == 2
    # the header and both trials, written before the signal took effect
    assert len(trials.read_text().splitlines()) == 1 + 2
    sw.plan_sweep(parse_grid(GRID), out, trials, lock=True).release()  # the locks were released


# --- grids are bounded before they are expanded ----------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("depths: {start: 1, stop: 1000000000, step: 1}\nwidths: [8]\n",
     "grid line 1: depths {'start': 1, 'stop': 1000000000, 'step': 1} has 1000000000 values, "
     "more than 1000"),
    ("depths: {start: 1, stop: 100000, step: 1}\nwidths: {start: 1, stop: 100000, step: 1}\n"
     "where: depth < width\n", "has 100000 values, more than 1000"),
    ("depths: {start: 1, stop: 1000, step: 1}\nwidths: {start: 8, stop: 8000, step: 8}\n"
     "where: depth < width\n", "1000 depths x 1000 widths = 1000000 cells before the "
                              "where/exclude filters, more than 10000"),
    (f"depths: {{start: 1, stop: {10 ** 400}, factor: 2}}\nwidths: [8]\n",
     "depths has 1329 values, more than 1000"),
    (f"depths: [{', '.join(map(str, range(1, 100001)))}]\nwidths: [8]\n",
     "characters, more than 20000"),
])
def test_huge_grids_are_refused_in_one_line_at_once(text, message):
    start = time.process_time()
    with pytest.raises(GridError) as exc:
        parse_grid(text)
    assert time.process_time() - start < 1.0
    assert message in str(exc.value) and "\n" not in str(exc.value)


# --- the grid's own messages -----------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ('depths: [1]\nwidths: [8]\nthreshold: "0.8"\n',
     "grid line 3: threshold must be a number, got the string '0.8'"),
    ("depths: [1]\nwidths: [8]\nsteps: '100'\n",
     "grid line 3: steps must be a number, got the string '100'"),
    ("depths: [1, 2]\nwidths: [8]\nexclude: [[true, 8]]\n",
     "grid line 3: exclude holds [depth, width] pairs of integers, got true (a YAML boolean)"),
    ("depths: [1, 2]\nwidths: [8]\nexclude: [[2, false]]\n", "got false (a YAML boolean)"),
])
def test_grid_values_of_the_wrong_kind_are_named(text, message):
    with pytest.raises(GridError) as exc:
        parse_grid(text)
    assert message in str(exc.value)


def test_a_binary_grid_file_is_refused_by_name(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00\xd0\xff\xfe")
    with pytest.raises(GridError) as exc:
        load_grid(path)
    assert str(exc.value) == f"{path} is not a grid file (not UTF-8 text)"


def _npz(path):
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.normal(size=(64, 4)).astype("float32"),
             y_train=np.arange(64) % 2, x_test=rng.normal(size=(32, 4)).astype("float32"),
             y_test=np.arange(32) % 2)


def test_a_relative_npz_path_is_relative_to_the_grid_file(tmp_path, monkeypatch):
    (tmp_path / "grids" / "data").mkdir(parents=True)
    _npz(tmp_path / "grids" / "data" / "d.npz")
    grid_file = tmp_path / "grids" / "g.yaml"
    grid_file.write_text("depths: [1]\nwidths: [8]\ndataset: data/d.npz\nthreshold: 0.6\n")
    monkeypatch.chdir(tmp_path)  # data/d.npz does not exist from here
    grid = load_grid("grids/g.yaml")
    assert grid.config(1, 8).dataset == str(tmp_path / "grids" / "data" / "d.npz")
    (tmp_path / "grids" / "data" / "d.npz").unlink()
    with pytest.raises(GridError) as exc:
        load_grid("grids/g.yaml")
    assert str(exc.value) == ("grids/g.yaml line 3: dataset data/d.npz: no such .npz file "
                              f"(relative to the grid file: {tmp_path}/grids/data/d.npz)")


def test_a_missing_npz_is_refused_under_dry_run(tmp_path, run_milr):
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text("depths: [1]\nwidths: [8]\ndataset: missing.npz\nthreshold: 0.6\n")
    code, _, err = run_milr(["sweep", str(grid_file), "--out", str(tmp_path / "r.csv"),
                             "--dry-run"])
    assert code == 2 and "dataset missing.npz: no such .npz file" in one_line(err)


# --- options that do not apply, and Ray missing ----------------------------------------------


def test_ray_missing_is_one_line_before_the_lock(tmp_path, run_milr, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if not installed
    (tmp_path / "g.yaml").write_text(GRID)
    out = tmp_path / "r.csv"
    code, _, err = run_milr(["sweep", str(tmp_path / "g.yaml"), "--out", str(out),
                             "--ray", "local"])
    assert code == 2 and one_line(err) == "milr: error: --ray needs Ray: pip install 'milr[ray]'"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.yaml"]  # no r.csv, no r.csv.lock


# --- Ctrl-C at every stage: one line, exit 130 -----------------------------------------------


@pytest.mark.signals
@pytest.mark.parametrize("module", ["milr.base.config", "typer", "torch"])
def test_ctrl_c_while_milr_starts_is_one_line(tmp_path, children, module):
    """SIGINT delivered exactly while `module` is imported, before milr's main() starts (torch
    takes seconds)."""
    code = textwrap.dedent("""\
        import os, signal, sys

        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == MODULE:
                    os.kill(os.getpid(), signal.SIGINT)
                return None

        sys.meta_path.insert(0, Interrupt())
        sys.argv = ["milr", "data", "list"]
        from milr.cli import main
        main()
    """).replace("MODULE", repr(module))
    res = children.run([sys.executable, "-c", code], cwd=tmp_path, timeout=120)
    assert res.returncode == 130 and res.stderr.strip() == "milr: interrupted", res.stderr


def test_ctrl_c_in_data_fetch_says_so(tmp_path, run_milr, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("milr.cli.datacmd.fetch", interrupted)
    code, _, err = run_milr(["data", "fetch", "mnist", "--to", str(tmp_path)])
    assert code == 130 and one_line(err) == "milr: interrupted"


def test_ctrl_c_while_the_grid_is_expanded_says_so(tmp_path, run_milr, monkeypatch):
    def interrupted(record):
        raise KeyboardInterrupt

    monkeypatch.setattr("milr.sweep.grid.compile_filter", lambda text, names: interrupted)
    (tmp_path / "g.yaml").write_text(GRID + "where: depth < width\n")
    code, _, err = run_milr(["sweep", str(tmp_path / "g.yaml"), "--out",
                             str(tmp_path / "r.csv"), "--dry-run"])
    assert code == 130 and one_line(err) == "milr: interrupted"


# --- a failing cell does not lose the other worker's cell -------------------------------------


@pytest.mark.slow
def test_a_failing_cell_lets_the_other_workers_cell_finish(tmp_path):
    from milr.base.config import EstimateConfig
    from milr.sweep.executors import process_runner
    from milr.sweep.tasks import TaskConfig

    # the good cell trains for seconds; the bad one fails as soon as it loads its data
    good = EstimateConfig(depth=2, width=64, seeds=1, steps=1500, eval_every=50, rtol=0.05,
                          device="cpu")
    bad = EstimateConfig(depth=1, width=8, seeds=1, dataset=str(tmp_path / "missing.npz"),
                         threshold=0.6, device="cpu")
    got = []
    with pytest.raises(ValueError, match="missing.npz"):
        for rows, _ in process_runner(2)([TaskConfig(c, 1) for c in (good, bad, good)]):
            got.append(rows)
    assert [(r["depth"], r["width"], r["status"]) for rows in got for r in rows] == [
        (2, 64, "ok")]  # the cell in flight finished; the third never started
