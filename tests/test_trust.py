"""Silent states made visible and fragile edges closed: search, engine, λ1 and the CLI."""

import itertools
import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from hermetic import read_until
from typer.testing import CliRunner

from milr import EstimateConfig
from milr.base.config import SharpnessConfig
from milr.cli import app
from milr.engine.model import Ensemble
from milr.engine.search import SeedSearch, SyncTrainer, search
from milr.engine.sharpness import _power, hvp_operator, sharpness
from milr.engine.train import BatchedTrainer, Outcome, train


def fake(edge):
    return SyncTrainer(lambda lrs, seeds: [Outcome(lr, s, lr <= edge, lr > edge, 10, 0.9, 0.9,
                                                   0.1) for lr, s in zip(lrs, seeds,
                                                                         strict=True)])


# --- search -------------------------------------------------------------------------------


def test_fine_rtol_plans_without_recursion():
    cfg = EstimateConfig(depth=1, width=1, seeds=1, rtol=2e-4)
    results, trials, _ = search(cfg, fake(0.37), probes=1)
    r = results[0]
    assert r.status == "ok" and r.lo <= 0.37 < r.hi and r.hi / r.lo - 1 <= 2e-4
    with pytest.raises(ValueError, match=r"rtol must lie in \[0.0001, 1\], got 1e-05"):
        EstimateConfig(depth=1, width=1, rtol=1e-5)


def test_a_probe_never_equals_lo_just_above_rtol():
    for midpoint in ("weighted", "geometric"):
        st = SeedSearch(0, EstimateConfig(depth=1, width=1, midpoint=midpoint), probes=1)
        hi = 0.2 * 1.0500001  # hi / lo - 1 just above rtol = 0.05
        assert not st.converged(0.2, hi)
        assert 0.2 < st._split(0.2, hi, 0.05) < hi


def test_unfinished_is_its_own_status_and_shown():
    results, _, _ = search(EstimateConfig(depth=1, width=1, seeds=1, max_rounds=3), fake(0.37))
    assert results[0].status == "unfinished" and results[0].lr_star is None
    res = CliRunner().invoke(app, ["estimate", "--depth", "1", "--width", "8", "--seeds", "1",
                                   "--steps", "100", "--eval-every", "20", "--max-rounds", "2"])
    assert res.exit_code == 0, res.output
    assert "unfinished" in res.output and "no seed gave an η*" in res.output
    assert "η* = " not in res.output


# --- the divergence rule, with scripted losses ----------------------------------------------


def scripted(monkeypatch, losses):
    """One member whose step i reports losses[i] (weights untouched) and whose evaluations
    meet any threshold: only the divergence rule decides."""
    count = itertools.count()
    monkeypatch.setattr(Ensemble, "step", lambda self, x, y, update, loss="ce": torch.tensor(
        [losses[min(next(count), len(losses) - 1)]]))
    monkeypatch.setattr(Ensemble, "evaluate", lambda self, x, y, *a: evaluated(self, x, True))


def evaluated(net, x, finite: bool):
    """What Ensemble.evaluate returns when every answer is right: correct, seen, finite."""
    n = torch.full((net.size,), len(x))
    return n, n, torch.full((net.size,), finite)


def verdict(tiny, **kw):
    cfg = EstimateConfig(depth=1, width=4, steps=40, eval_every=20, threshold=0.75, **kw)
    out = train(cfg, tiny, [0.1], [0])[0]
    return out.success, out.diverged, out.steps


def test_a_spike_that_recovered_by_the_evaluation_is_tolerated_unless_strict(tiny, monkeypatch):
    spike = [1.0] * 5 + [50.0] + [1.0] * 40  # above 10 x 1.0 at step 5 only
    scripted(monkeypatch, spike)
    assert verdict(tiny) == (True, False, 20)
    scripted(monkeypatch, spike)
    assert verdict(tiny, divergence_check="step") == (False, True, 10)


def test_a_loss_above_ten_times_the_initial_at_an_evaluation_is_divergence(tiny, monkeypatch):
    scripted(monkeypatch, [1.0] * 19 + [10.5] + [1.0] * 40)  # step 19 is the evaluation's loss
    assert verdict(tiny) == (False, True, 20)
    scripted(monkeypatch, [1.0] * 19 + [9.5] + [1.0] * 40)  # just below the limit
    assert verdict(tiny) == (True, False, 20)


def test_the_initial_loss_is_clamped_at_log_c(tiny, monkeypatch):
    # initial 0.01: the limit is 10 x log 2 = 6.93, not 10 x 0.01
    scripted(monkeypatch, [0.01] * 19 + [5.0] + [0.01] * 40)
    assert verdict(tiny) == (True, False, 20)
    scripted(monkeypatch, [0.01] * 19 + [7.0] + [0.01] * 40)
    assert verdict(tiny) == (False, True, 20)
    scripted(monkeypatch, [0.01] * 19 + [5.0] + [0.01] * 40)  # a floor of 0.5 log C: 3.47
    assert verdict(tiny, initial_loss_floor=0.5) == (False, True, 20)


def test_an_overflow_in_the_last_update_is_not_a_success(tiny, monkeypatch):
    # the last step's loss is finite, but its update made the network's outputs infinite
    monkeypatch.setattr(Ensemble, "evaluate", lambda self, x, y, *a: evaluated(self, x, False))
    cfg = EstimateConfig(depth=1, width=4, steps=20, eval_every=20, threshold=0.5)
    out = train(cfg, tiny, [0.1], [0])[0]
    assert out.diverged and not out.success and out.final_acc is None


def test_retiring_members_in_place_changes_no_outcome_on_the_cpu(tiny, monkeypatch):
    cfg = EstimateConfig(depth=2, width=16, steps=200, eval_every=20, batch_size=32,
                         input_lr_scale=1.0, threshold=0.75)
    lrs = [1e-4, 0.3, 1e4, 0.05, 0.5, 0.02, 0.1, 2e-4, 3e-4, 0.03, 0.04, 0.2]
    seeds = [i % 3 for i in range(12)]
    retired = []
    drop = BatchedTrainer._drop_finished

    def spy(self):
        before = len(self.members)
        drop(self)
        retired.append(before == len(self.members) and any(m.outcome for m in self.members))

    monkeypatch.setattr(BatchedTrainer, "_drop_finished", spy)
    in_place = train(cfg, tiny, lrs, seeds, retire_in_place=True)
    assert any(retired)  # finished rows stayed in the stack with a zero learning rate
    compact = train(cfg, tiny, lrs, seeds, retire_in_place=False)
    assert [repr(o) for o in in_place] == [repr(o) for o in compact]
    assert len({o.steps for o in in_place}) > 2  # members finished at different times


# --- λ1 -------------------------------------------------------------------------------------


def test_power_fallback_never_reports_the_most_negative_eigenvalue():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    a = torch.tensor(q @ np.diag([-10.0, 0.5, 1.0, 2.0, 5.0, 3.0]) @ q.T)
    theta = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    op, _ = hvp_operator(lambda p: 0.5 * p[0] @ a @ p[0], [theta])
    for start in range(40):
        v = np.random.default_rng(start).standard_normal(6)
        lam, residual, certified = _power(op, v, 400, 1e-6)
        assert not (certified and residual <= 1e-6) or lam == pytest.approx(5.0, rel=1e-4)
        assert lam > -9  # the shift keeps -10 from winning at all


def test_unconverged_lambda1_is_never_a_number(tiny):
    cfg = EstimateConfig(depth=2, width=8)
    s = sharpness(cfg, tiny, 0, SharpnessConfig(samples=64, tol=1e-9, max_hvps=2))
    assert not s.converged and s.lambda1 is None and math.isfinite(s.last_estimate)
    res = CliRunner().invoke(app, ["sharpness", "--depth", "2", "--width", "8", "--seeds", "1",
                                   "--samples", "64", "--tol", "1e-9", "--max-hvps", "2",
                                   "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["results"][0]["lambda1"] is None
    text = CliRunner().invoke(app, ["sharpness", "--depth", "2", "--width", "8", "--seeds", "1",
                                    "--samples", "64", "--tol", "1e-9", "--max-hvps", "2"])
    assert "not converged" in text.output and "λ1 = " not in text.output


def test_sharpness_records_the_samples_used_and_needs_no_threshold(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.standard_normal((300, 5)), y=rng.integers(0, 3, 300))
    res = CliRunner().invoke(app, ["sharpness", "--depth", "1", "--width", "4", "--seeds", "1",
                                   "--dataset", str(path), "--samples", "100000000", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["results"][0]["samples"] == 270  # the 90% training split


# --- interruption ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.signals
@pytest.mark.parametrize("command, ready", [
    # rates far too small to ever train: every run goes to its full budget (minutes in all)
    (["estimate", "--depth", "4", "--width", "512", "--steps", "20000", "--lr-min", "1e-6",
      "--lr-max", "1e-5", "--widen", "1"], "round 1: "),
    (["sharpness", "--depth", "4", "--width", "512", "--seeds", "50", "--samples", "4096"],
     "measuring "),
])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_a_command_with_one_line(children, command, ready, sig):
    """Sent as soon as the command says it has begun its work."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = children.popen([sys.executable, "-m", "milr", *command, "--device", "cpu"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    said = read_until(proc, ready)
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=60)
    lines = (said + rest.decode()).strip().splitlines()
    assert proc.returncode == 130, lines
    assert lines[0].startswith(ready) and lines[1:] == ["milr: interrupted"]


def test_fit_counts_the_last_row_of_a_rerun_seed_once(tmp_path):
    from milr.analysis.table import cells_from_rows, read_table

    lines = ["depth,width,seed,lr_star,status"]
    for d, w in [(1, 16), (2, 16), (1, 64), (4, 64)]:
        lines += [f"{d},{w},0,,unfinished", f"{d},{w},0,{(d * w) ** -0.5},ok",
                  f"{d},{w},1,{(d * w) ** -0.5},ok"]
    path = tmp_path / "r.csv"
    path.write_text("\n".join(lines) + "\n")
    cells, excluded = cells_from_rows(read_table(path))
    assert [c.seeds for c in cells] == [2, 2, 2, 2] and not excluded


def test_a_read_only_results_file_fails_before_any_training(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("depths: [1]\nwidths: [4, 8]\nseeds: 1\nsteps: 20\neval_every: 10\n"
                    "device: cpu\n")
    out = tmp_path / "r.csv"
    assert subprocess.run([sys.executable, "-m", "milr", "sweep", str(grid), "--out", str(out),
                           "--dry-run"], capture_output=True).returncode == 0
    ok = subprocess.run([sys.executable, "-m", "milr", "sweep", str(grid), "--out", str(out)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    grid.write_text(grid.read_text().replace("[4, 8]", "[4, 8, 16]"))
    before = out.read_bytes()
    # Even root may not append to an immutable file (chattr +i); another user may not append
    # to a read-only one.
    lock = ["chattr", "+i", str(out)] if os.geteuid() == 0 else ["chmod", "444", str(out)]
    subprocess.run(lock, check=True)
    try:
        res = subprocess.run([sys.executable, "-m", "milr", "sweep", str(grid), "--out",
                              str(out)], capture_output=True, text=True)
    finally:
        subprocess.run(["chattr", "-i", str(out)] if os.geteuid() == 0
                       else ["chmod", "644", str(out)], check=True)
    assert res.returncode == 2 and "not permitted" in res.stderr.lower() or \
        "permission denied" in res.stderr.lower(), res.stderr
    assert len(res.stderr.strip().splitlines()) <= 2 and "Traceback" not in res.stderr
    assert "task(s) to run" not in res.stderr  # refused before any training
    assert out.read_bytes() == before
