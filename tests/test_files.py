"""Results files, trials logs, fits and paths as a hostile user gives them (issue 28, item 7):
a log must match its results, a search logged in part is never drawn as complete, a file that
is not what it should be is named. Fast: hand-written files and a fake runner, no training."""

import json
import os
import subprocess
import sys

import pytest
from conftest import TINY_GRID as GRID

from milr.analysis.plot import search_view_from_log
from milr.sweep import run as sw
from milr.sweep import store as st
from milr.sweep.grid import parse_grid


def counting_runner(tasks):
    """Rows without training that record their trial count (2), and those 2 trials per seed."""
    for t in tasks:
        c, rows, trials = t.config, [], []
        for s in range(c.seed, c.seed + c.seeds):
            rows.append({**c.row(), **dict.fromkeys(st.RESULT_FIELDS, ""), "seed": s,
                         "seeds": t.cell_seeds, "status": "ok", "lr_star": 1.0, "lo": 0.9,
                         "hi": 1.1, "trials": 2})
            trials += [{"depth": c.depth, "width": c.width, "seed": s, "lr": lr,
                        "success": lr < 1, "diverged": lr > 1, "steps": 10} for lr in (0.9, 1.1)]
        yield rows, trials


def swept(tmp_path, grid=GRID):
    """A finished sweep of `grid` to r.csv with its trials in t.jsonl."""
    out, log = tmp_path / "r.csv", tmp_path / "t.jsonl"
    sw.run_sweep(parse_grid(grid), out, counting_runner, log)
    return out, log


# --- the trials log records its protocol, and is checked against its results -----------------

def test_a_new_log_records_its_protocol_and_a_sweep_of_another_is_refused(tmp_path):
    out, log = swept(tmp_path)
    first = json.loads(log.read_text().splitlines()[0])
    assert first[st.LOG_HEADER] == 1 and first["protocol"]["optimizer"] == "sgd"
    before = log.read_bytes()
    adam = parse_grid(GRID + "optimizer: adam\n")
    with pytest.raises(st.StoreError, match="another protocol than this sweep's "
                                            r"\(optimizer=sgd, not adam"):
        sw.plan_sweep(adam, tmp_path / "a.csv", log, lock=True)
    assert log.read_bytes() == before


def test_a_log_without_header_still_reads_and_resumes(tmp_path):
    out, log = swept(tmp_path)
    log.write_text("".join(log.read_text().splitlines(keepends=True)[1:]))  # an older log
    plan = sw.plan_sweep(parse_grid(GRID), out, log)
    assert plan.tasks == [] and plan.notes == []
    assert [s.lo for s in search_view_from_log(str(log), 1, 8, str(out)).seeds] == [0.9, 0.9]


def test_trials_lost_in_a_kill_are_reported_on_resume(tmp_path):
    out, log = swept(tmp_path)
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:-1]))  # the last one lost
    plan = sw.plan_sweep(parse_grid(GRID), out, log)
    assert plan.notes == [
        f"warning: {log} lacks trials of 1 seed(s) stored in {out} ((depth 2, width 16, seed "
        "1): 1 of 2 logged): they were lost in a kill or run without this log; milr plot search "
        "marks those searches incomplete"]


def test_a_log_with_more_trials_than_its_rows_is_another_runs(tmp_path):
    out, log = swept(tmp_path)
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines + lines[1:2]))  # a trial of (1, 8, 0) twice
    with pytest.raises(st.StoreError, match=r"holds 3 trials of \(depth 1, width 8, seed 0\) "
                                            f"but its rows in {out} record 2"):
        sw.plan_sweep(parse_grid(GRID), out, log)


# --- milr plot search: the log against its results --------------------------------------------

ROWS = ("depth,width,seed,status,lr_star,lo,hi,trials,optimizer\n"
        "1,4,0,ok,0.9,0.8,1.0,2,sgd\n1,4,1,ok,1.225,1.2,1.25,3,sgd\n1,4,2,ok,1.5,1.4,1.6,2,sgd\n")


def trial(seed, lr, ok):
    return {"depth": 1, "width": 4, "seed": seed, "lr": lr, "success": ok, "diverged": not ok,
            "steps": 10}


def test_a_search_logged_in_part_is_not_drawn_as_complete(tmp_path):
    """Seed 1 has 1 of its 3 trials in the log (a kill), seed 2 none: their brackets are the
    results file's, and the figure says so; seed 0, complete, keeps the trials' bracket."""
    log, csv = tmp_path / "t.jsonl", tmp_path / "r.csv"
    log.write_text("".join(json.dumps(t) + "\n" for t in (
        trial(0, 0.8, True), trial(0, 1.0, False), trial(1, 0.5, True))))
    csv.write_text(ROWS)
    view = search_view_from_log(str(log), 1, 4, str(csv))
    assert [(s.seed, s.lo, s.hi) for s in view.seeds] == [
        (0, 0.8, 1.0), (1, 1.2, 1.25), (2, 1.4, 1.6)]
    assert [n for n in view.notes if "trials are in" in n] == [
        f"seed {s}: only {k} of its {n} trials are in {log} (lost in a kill, or run without "
        f"this log): its bracket is {csv}'s, not drawn from its trials"
        for s, k, n in ((1, 1, 3), (2, 0, 2))]


def test_a_log_of_another_protocol_is_refused_by_plot_search(tmp_path, run_milr):
    log, csv = tmp_path / "t.jsonl", tmp_path / "r.csv"
    log.write_text(json.dumps({st.LOG_HEADER: 1, "protocol": {"optimizer": "adam"}}) + "\n"
                   + json.dumps(trial(0, 0.8, True)) + "\n")
    csv.write_text(ROWS)
    code, _, err = run_milr(["plot", "search", str(log), "--cell", "1", "4", "--results",
                             str(csv), "--out", str(tmp_path / "s.png")])
    assert code == 2 and err.strip() == (
        f"milr: error: {log} holds trials of another protocol than {csv} (optimizer=adam, not "
        "sgd): the log of another sweep")


@pytest.mark.parametrize("field, value, says", [
    ("lr", "NaN", "lr must be a finite positive number, got 'NaN'"),
    ("lr", -1, "lr must be a finite positive number, got -1"),
    ("success", "yes", "success must be true or false, got 'yes'"),
    ("steps", 2.5, "steps must be a non-negative integer, got 2.5"),
    ("curve_loss", "abc", "curve_loss must be a list of numbers or nulls, got 'abc'"),
    ("curve_acc", [0.5, 0.6], "curve_acc has 2 values but curve_steps has 1"),
    ("seed", "0", "seed must be a non-negative integer, got '0'"),
])
def test_a_malformed_trial_is_named_by_file_line_and_field(field, value, says, tmp_path,
                                                           run_milr):
    log = tmp_path / "t.jsonl"
    bad = {**trial(0, 1.0, False), "curve_steps": [10], "curve_acc": [0.5], field: value}
    log.write_text(json.dumps(trial(0, 0.8, True)) + "\n" + json.dumps(bad) + "\n")
    code, _, err = run_milr(["plot", "search", str(log), "--cell", "1", "4", "--out",
                             str(tmp_path / "s.png")])
    assert code == 2 and err.strip() == f"milr: error: {log} line 2: {says}", err


# --- files that are not what they should be ---------------------------------------------------

def test_superseded_rows_of_another_protocol_are_refused_by_line(tmp_path, run_milr):
    """The last row per seed was kept before the protocol check: a file of SGD rows followed by
    Adam's fitted Adam's alone."""
    csv = tmp_path / "sa.csv"
    cells = [(d, w) for d in (1, 2) for w in (16, 32)]
    csv.write_text("depth,width,seed,lr_star,status,optimizer\n" + "".join(
        f"{d},{w},0,{k / d / w},ok,{opt}\n" for opt, k in (("sgd", 90), ("adam", 9))
        for d, w in cells))
    code, _, err = run_milr(["fit", str(csv)])
    assert code == 2 and "optimizer=sgd (lines 2-5) and optimizer=adam (lines 6-9)" in err, err


@pytest.mark.parametrize("command", [["fit"], ["plot", "sweep"], ["sweep", "GRID", "--out"]])
def test_a_trials_log_given_as_results_is_named(command, tmp_path, run_milr):
    out, log = swept(tmp_path)
    (tmp_path / "g.yaml").write_text(GRID)
    args = [str(tmp_path / "g.yaml") if a == "GRID" else a for a in command] + [str(log)]
    code, _, err = run_milr(args + (["--dry-run"] if command[0] == "sweep" else []))
    assert code == 2 and f"{log} holds JSON lines (a" in err and "trials log?)" in err, err


@pytest.mark.parametrize("args", [
    ["sweep", "g.yaml", "--out", "q", "--dry-run"],
    ["sweep", "g.yaml", "--out", "r.csv", "--trials", "q", "--dry-run"],
    ["fit", "q"],
])
def test_a_fifo_is_refused_not_waited_on(args, tmp_path):
    """A FIFO blocks its reader until a writer opens it: the command hung, even --dry-run. Run
    apart, so that a hang fails this test rather than stop the suite."""
    os.mkfifo(tmp_path / "q")
    (tmp_path / "g.yaml").write_text(GRID)
    try:
        res = subprocess.run([sys.executable, "-m", "milr", *args], capture_output=True,
                             text=True, cwd=tmp_path, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(f"milr {' '.join(args)} waited on the FIFO")
    assert res.returncode == 2 and "q is a FIFO (named pipe), not a regular file" in res.stderr


def test_a_dangling_link_names_the_directory_it_leads_to(tmp_path, run_milr):
    (tmp_path / "g.yaml").write_text(GRID)
    (tmp_path / "r.csv").symlink_to(tmp_path / "gone" / "r.csv")
    code, _, err = run_milr(["sweep", str(tmp_path / "g.yaml"), "--out", str(tmp_path / "r.csv"),
                             "--dry-run"])
    assert code == 2 and err.strip().endswith(
        f"directory {tmp_path / 'gone'} (where {tmp_path / 'r.csv'} leads) does not exist"), err
