"""The sweep's results file and trials log: never touch what is not ours, one writer, every row
checked, old files resumed, kills survived. Fast: a fake runner stands in for training."""

import csv
import fcntl
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_GRID as GRID

from milr.sweep import run as sw
from milr.sweep import store as st
from milr.sweep.grid import parse_grid

# The header of sweeps/fashion-mnist/results.csv, written by the previous milr version.
OLD_HEADER = ("depth,width,dataset,data_dir,threshold,steps,batch_size,eval_every,input_lr_scale,"
              "divergence_factor,seeds,seed,lr_min,lr_max,widen,grid_per_decade,rtol,probes,"
              "midpoint,device,precision,lr_star,lo,hi,status,trials,nonmonotone,probes_used,"
              "rounds,cell_wall_time,lambda1,lambda1_eff,lambda1_residual,lambda1_converged,"
              "lambda1_samples,device_name,milr_version,torch_version,finished_at")
REPO = Path(__file__).parents[1]


def fake_runner(status=lambda key: "ok"):
    """Rows without training: lr_star from the key; records every (depth, width, seed) run."""
    calls = []

    def run(tasks):
        for t in tasks:
            c, rows, trials = t.config, [], []
            for s in range(c.seed, c.seed + c.seeds):
                key = (c.depth, c.width, s)
                calls.append(key)
                done = status(key)
                rows.append({**c.row(), **dict.fromkeys(st.RESULT_FIELDS, ""), "seed": s,
                             "seeds": t.cell_seeds, "status": done,
                             "lr_star": "" if done != "ok" else 1 + s / 10,
                             "lambda1_samples": t.lambda1_samples or ""})
                trials.append({"depth": c.depth, "width": c.width, "seed": s, "lr": 1.0})
            yield rows, trials

    return run, calls


def sweep(tmp_path, grid=GRID, out="r.csv", **kw):
    run, calls = fake_runner(**{k: kw.pop(k) for k in ("status",) if k in kw})
    report = sw.run_sweep(parse_grid(grid), tmp_path / out, run, **kw)
    return report, calls


def milr(*args, cwd):
    return subprocess.run([sys.executable, "-m", "milr", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def one_line_error(res, *parts):
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for p in parts:
        assert str(p) in lines[0], lines[0]


# 1. --out never modifies a file that is not ours; --dry-run never writes


@pytest.mark.parametrize("content", [b"my notes\nlast line without newline",
                                     bytes(range(256)) * 3])
@pytest.mark.parametrize("dry", [True, False])
def test_out_never_modifies_a_foreign_file(tmp_path, content, dry):
    (tmp_path / "g.yaml").write_text(GRID)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content)
    res = milr("sweep", "g.yaml", "--out", notes, *(["--dry-run"] if dry else []), cwd=tmp_path)
    one_line_error(res, notes, "not a milr sweep results file")
    assert notes.read_bytes() == content
    assert not Path(f"{notes}.lock").exists()


def test_dry_run_writes_nothing_to_a_torn_results_file(tmp_path):
    sweep(tmp_path)
    out = tmp_path / "r.csv"
    torn = out.read_bytes() + b"1,8,gauss"
    out.write_bytes(torn)
    (tmp_path / "g.yaml").write_text(GRID)
    listing = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir())
    res = milr("sweep", "g.yaml", "--out", out, "--dry-run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == torn
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir()) == listing


# 2. the trials log cannot be the results file


@pytest.mark.parametrize("spelling", ["r.csv", "./r.csv", "sub/../r.csv", "{tmp}/r.csv",
                                      "link.csv", "r.csv.lock"])
def test_trials_log_cannot_be_the_results_file(tmp_path, spelling):
    (tmp_path / "sub").mkdir()
    (tmp_path / "g.yaml").write_text(GRID)
    sweep(tmp_path)
    before = (tmp_path / "r.csv").read_bytes()
    os.link(tmp_path / "r.csv", tmp_path / "link.csv")
    trials = spelling.format(tmp=tmp_path)
    res = milr("sweep", "g.yaml", "--out", "r.csv", "--trials", trials, cwd=tmp_path)
    one_line_error(res, f"--trials {trials} is the same file as")
    assert (tmp_path / "r.csv").read_bytes() == before


# 4. one writer per results file


def test_second_writer_exits_2_naming_the_holder(tmp_path):
    (tmp_path / "g.yaml").write_text(GRID)
    out = tmp_path / "r.csv"
    holder = st.ResultStore(out).lock
    holder.acquire()
    try:
        res = milr("sweep", "g.yaml", "--out", out, cwd=tmp_path)
        one_line_error(res, out, "in use by another milr sweep", f"pid {os.getpid()} on ",
                       " since ")
        assert not out.exists()
        dry = milr("sweep", "g.yaml", "--out", out, "--dry-run", cwd=tmp_path)
        assert dry.returncode == 0 and "4 task(s) to run" in dry.stdout, dry.stderr
    finally:
        holder.release()
    with pytest.raises(st.StoreError, match="in use by another milr sweep"):
        with_lock = sw.plan_sweep(parse_grid(GRID), out, lock=True)
        try:
            sw.plan_sweep(parse_grid(GRID), out, lock=True)
        finally:
            with_lock.release()


def test_a_run_holds_the_lock_throughout(tmp_path):
    out = tmp_path / "r.csv"
    seen = []

    def probe(n, total, rows):
        fd = os.open(f"{out}.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append("free")
        except BlockingIOError:
            seen.append("held")
        finally:
            os.close(fd)

    run, _ = fake_runner()
    sw.run_sweep(parse_grid(GRID), out, run, on_task=probe)
    assert seen == ["held"] * 4
    sw.plan_sweep(parse_grid(GRID), out, lock=True).release()  # released afterwards


# 5. reading never truncates


def test_reading_never_truncates_and_the_locked_run_repairs(tmp_path):
    sweep(tmp_path)
    out = tmp_path / "r.csv"
    whole = out.read_bytes()
    out.write_bytes(whole + b"2,16,gaussians,,0.9")  # another process mid-write, or a kill
    rows = st.ResultStore(out).rows()
    assert len(rows) == 8 and out.read_bytes() == whole + b"2,16,gaussians,,0.9"
    plan = sw.plan_sweep(parse_grid(GRID), out)
    assert out.read_bytes() == whole + b"2,16,gaussians,,0.9" and not plan.notes
    report, calls = sweep(tmp_path)
    assert report.repaired and calls == [] and out.read_bytes() == whole


# 6. every row is checked; duplicates are reported


def _edit(path, line, column, value):
    """Set one field of one line (1: header) of a CSV."""
    recs = list(csv.reader(path.read_text().splitlines()))
    recs[line - 1][recs[0].index(column)] = value
    path.write_text("".join(",".join(r) + "\n" for r in recs))


def test_every_row_is_checked_not_only_the_first(tmp_path):
    sweep(tmp_path)
    out = tmp_path / "r.csv"
    _edit(out, 7, "steps", "200")
    with pytest.raises(st.StoreError, match=r"line 7 was written with steps=200 but the grid "
                                             r"has steps=120"):
        sweep(tmp_path)


def test_lambda1_samples_must_match(tmp_path):
    sweep(tmp_path, grid=GRID + "lambda1_samples: 256\n")
    _edit(tmp_path / "r.csv", 5, "lambda1_samples", "1024")
    with pytest.raises(st.StoreError, match=r"line 5 was written with lambda1_samples=1024 but "
                                             r"the grid has lambda1_samples=256"):
        sweep(tmp_path, grid=GRID + "lambda1_samples: 256\n")
    with pytest.raises(st.StoreError, match=r"lambda1_samples=256 but the grid has "
                                             r"lambda1_samples=0"):
        sweep(tmp_path)


def test_duplicate_rows_are_reported(tmp_path):
    sweep(tmp_path)
    out = tmp_path / "r.csv"
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines + lines[2:4]))  # two writers without a lock
    plan = sw.plan_sweep(parse_grid(GRID), out)
    assert plan.notes == [f"warning: {out} has several rows for (depth 1, width 8, seed 1), "
                          "(depth 1, width 16, seed 0); the last of each counts, remove the "
                          "others by hand"]
    (tmp_path / "g.yaml").write_text(GRID)
    res = milr("sweep", "g.yaml", "--out", out, "--dry-run", cwd=tmp_path)
    assert res.returncode == 0 and "several rows for (depth 1, width 8, seed 1)" in res.stderr


# 7. the trials log after a kill


def test_trials_log_torn_line_is_repaired_and_trials_follow_rows(tmp_path):
    report, _ = sweep(tmp_path, trials_path=tmp_path / "t.jsonl")
    log = tmp_path / "t.jsonl"
    assert len(log.read_text().splitlines()) == 1 + 8  # the header (the protocol), 8 trials
    log.write_bytes(log.read_bytes() + b'{"depth": 1, "wid')  # killed mid-write
    bigger = GRID.replace("widths: [8, 16]", "widths: [8, 16, 32]")
    report, calls = sweep(tmp_path, grid=bigger, trials_path=log)
    records = [json.loads(line) for line in log.read_text().splitlines()[1:]]
    assert len(calls) == 4 and len(records) == 12
    stored = {st.row_key(r) for r in report.rows}
    assert {(t["depth"], t["width"], t["seed"]) for t in records} <= stored


def test_a_failed_row_write_logs_no_trial(tmp_path, monkeypatch):
    log = tmp_path / "t.jsonl"

    def full_disk(self, rows):
        raise OSError(28, "No space left on device", str(self.path))

    monkeypatch.setattr(st.ResultStore, "append", full_disk)
    with pytest.raises(OSError):
        sweep(tmp_path, trials_path=log)
    assert not log.exists() or log.read_text() == ""


def test_a_foreign_trials_file_is_refused_untouched(tmp_path):
    log = tmp_path / "t.jsonl"
    log.write_bytes(b"some notes\nno newline")
    with pytest.raises(st.StoreError, match=f"{log} line 1 is not a milr trial record"):
        sweep(tmp_path, trials_path=log)
    assert log.read_bytes() == b"some notes\nno newline" and not (tmp_path / "r.csv").exists()


# 8. new files' directories are fsynced


def test_new_files_directory_is_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    sweep(tmp_path, trials_path=tmp_path / "t.jsonl")
    # results, trials log and the two lock files: each new name made durable
    assert synced.count(str(tmp_path)) >= 4


# 9. unfinished seeds are rerun on resume


def test_unfinished_seed_is_rerun_and_its_new_row_counts(tmp_path):
    first, _ = sweep(tmp_path, status=lambda k: "unfinished" if k == (2, 8, 1) else "ok")
    assert {r["status"] for r in first.rows} == {"ok", "unfinished"}
    again, calls = sweep(tmp_path)
    assert calls == [(2, 8, 1)] and again.ran == 1
    assert len(again.rows) == 8 and {r["status"] for r in again.rows} == {"ok"}
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 1 + 9  # appended, not edited
    assert sw.plan_sweep(parse_grid(GRID), tmp_path / "r.csv").notes == []  # not a duplicate
    third, calls = sweep(tmp_path)
    assert calls == [] and third.ran == 0


# 10. results files of the previous milr version


def _old_file(tmp_path):
    """A results file as the previous version wrote it: its header, its columns only."""
    report, _ = sweep(tmp_path, out="new.csv")
    cols = OLD_HEADER.split(",")
    old = tmp_path / "old.csv"
    with open(old, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for r in report.rows[:6]:
            w.writerow([r[c] for c in cols])
    return old


def test_previous_version_file_is_read_and_resumed_in_its_own_columns(tmp_path):
    old = _old_file(tmp_path)
    before = old.read_text()
    rows = st.ResultStore(old).rows()
    assert len(rows) == 6 and tuple(rows[0]) == st.COLUMNS
    assert {r["max_rounds"] for r in rows} == {"64"} and {r["midpoint_used"] for r in rows} == {""}
    report, calls = sweep(tmp_path, out="old.csv")
    assert len(calls) == 2 and len(report.rows) == 8
    text = old.read_text()
    assert text.startswith(before)  # only appended
    assert all(len(rec) == len(OLD_HEADER.split(",")) for rec in csv.reader(text.splitlines()))


def test_previous_version_file_refuses_a_changed_new_setting(tmp_path):
    _old_file(tmp_path)
    with pytest.raises(st.StoreError, match=r"old.csv has no nonfinite_every column \(written by "
                                             r"an older milr, which used nonfinite_every=10\) "
                                             r"but the grid has nonfinite_every=5"):
        sweep(tmp_path, grid=GRID + "nonfinite_every: 5\n", out="old.csv")


def test_the_repository_fashion_mnist_results_are_readable():
    rows = st.ResultStore(REPO / "sweeps" / "fashion-mnist" / "results.csv").rows()
    assert len(rows) == 175 and {r["initial_loss_floor"] for r in rows} == {"1.0"}
