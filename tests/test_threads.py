"""The CPU thread count follows the work of a step: small members cannot feed two threads, and
on a busy machine a second thread only waits for a core. The count changes no outcome."""

from __future__ import annotations

import torch

from milr import EstimateConfig
from milr.base.device import THREAD_FLOPS, _OwnLoad, cpu_threads
from milr.engine.estimation import estimate


def test_the_rule():
    idle = {"cpus": 2, "load": 1.0, "own": 1.0}  # this process alone
    assert cpu_threads(5e6, 2, **idle) == 1  # (2, 16) on 64 inputs, 5 members: a tie
    assert cpu_threads(2.1e8, 2, **idle) == 2  # (2, 64) on Fashion-MNIST: 2 threads 2x faster
    assert cpu_threads(THREAD_FLOPS * 1.9, 2, **idle) == 1
    assert cpu_threads(THREAD_FLOPS * 2, 2, **idle) == 2
    assert cpu_threads(1e12, 2, **idle) == 2
    assert cpu_threads(1e12, 1, **idle) == 1  # the cap: OMP_NUM_THREADS or a worker's share
    assert cpu_threads(1e12, 2, cpus=2, load=4.0, own=1.0) == 1  # the other core is busy
    assert cpu_threads(1e12, 8, cpus=8, load=3.0, own=1.0) == 6
    assert cpu_threads(0.0, 4, cpus=4, load=0.0, own=1.0) == 1
    # the load this process made itself (2 threads a moment ago) leaves the cores free
    assert cpu_threads(1e12, 2, cpus=2, load=2.0, own=2.0) == 2
    assert cpu_threads(1e12, 2, cpus=2, load=3.0, own=2.0) == 1


def test_own_load_is_this_process_cpu_use():
    """CPU seconds per wall second since the previous call, at least 1."""
    clock = {"wall": 0.0, "cpu": 0.0}
    own = _OwnLoad(lambda: clock["wall"], lambda: clock["cpu"])
    clock.update(wall=2.0, cpu=3.0)  # two threads busy three quarters of the time
    assert own() == 1.5
    clock.update(wall=4.0, cpu=3.5)  # mostly idle: it still runs now
    assert own() == 1.0
    clock.update(wall=5.0, cpu=5.5)
    assert own() == 2.0  # since the previous call, not since the start
    assert own() == 1.0  # no time passed


def test_a_small_cell_trains_on_one_thread_and_the_count_changes_nothing(monkeypatch):
    cfg = EstimateConfig(depth=1, width=8, seeds=2, steps=60, max_rounds=4, device="cpu")
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        small = estimate(cfg)
        assert "1 threads" in small.device
        assert torch.get_num_threads() == 2  # restored
        monkeypatch.setattr("milr.engine.estimation.cpu_threads", lambda flops, cap: 2)
        forced = estimate(cfg)
        assert "2 threads" in forced.device
    finally:
        torch.set_num_threads(old)
    assert [(t.lr, t.seed, t.success, t.diverged, t.steps) for t in small.trials] == [
        (t.lr, t.seed, t.success, t.diverged, t.steps) for t in forced.trials]
    assert [s.lr_star for s in small.seeds] == [s.lr_star for s in forced.seeds]
