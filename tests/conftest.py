import os

import numpy as np
import pytest
import torch

from milr.data.formats import Dataset, gaussians

pytest_plugins = ("pytester",)

# The tiny sweep of the sweep, store and warm-start tests: 2 x 2 cells, 2 seeds, seconds on a CPU.
TINY_GRID = """\
depths: [1, 2]
widths: [8, 16]
seeds: 2
dataset: gaussians
steps: 120
eval_every: 20
rtol: 0.3
device: cpu
"""


@pytest.fixture(autouse=True)
def _fixed_seeds():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def tiny() -> Dataset:
    """A small, quick instance of the paper's two-Gaussian task (16 dims, 600 + 200 samples)."""
    return gaussians(seed=1, dim=16, delta=2.0, n_train=300, n_eval=100)



@pytest.fixture
def run_milr(capsys):
    """Run the real entry point (what the console script calls) on `args`: exit code, stdout,
    stderr."""
    import sys

    from milr.cli import main

    def run(args: list[str]) -> tuple[int | None, str, str]:
        old = sys.argv
        sys.argv = ["milr", *args]
        try:
            with pytest.raises(SystemExit) as exc:
                main()
        finally:
            sys.argv = old
        cap = capsys.readouterr()
        return exc.value.code, cap.out, cap.err

    return run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI (CI or MILR_REQUIRE_ALL set) a skipped test is a failure: a missing data set
    or Ray must fail the run, never pass it silently."""
    report = (yield).get_result()
    if report.skipped and (os.environ.get("CI") or os.environ.get("MILR_REQUIRE_ALL")):
        report.outcome = "failed"
        report.longrepr = f"skipped, but CI must run every test: {report.longrepr}"


@pytest.fixture
def children():
    """Start child processes as from an interactive shell, whatever started pytest
    (hermetic.py); their process groups are killed at teardown, whatever the outcome."""
    from hermetic import Children

    started = Children()
    yield started
    started.close()
