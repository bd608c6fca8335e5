"""The tests pass however pytest was started: from a shell, from `(nohup pytest &)`, under CI."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import hermetic
import pytest

PYTHON, SCRIPT = sys.executable, hermetic.__file__
# what a child inherited: SIGINT's and SIGTERM's handlers, the signals it blocks, own group?
PROBE = ("import os, signal as s; print(s.getsignal(s.SIGINT), s.getsignal(s.SIGTERM), "
         "sorted(s.pthread_sigmask(s.SIG_BLOCK, [])), os.getpgid(0) == os.getpid())")


def probe(children, argv):
    res = children.run([*argv, PYTHON, "-c", PROBE], timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_a_child_starts_as_from_a_shell_whatever_its_parent_inherited(children):
    """A parent in the background (signals ignored, and blocked) starts a child through
    `Children`: the child has Python's handlers, blocks nothing and leads its own group."""
    background = [PYTHON, SCRIPT, "background"]
    assert probe(children, background) == (
        f"{signal.SIG_IGN} {signal.SIG_IGN} {sorted(hermetic.HELD)} True")
    shell = [PYTHON, SCRIPT, "shell", str(os.getpid())]
    assert probe(children, background + shell) == (
        f"{signal.default_int_handler} {signal.SIG_DFL} [] True")


def test_closing_kills_a_child_and_all_it_started():
    """What the `children` fixture does at teardown, whatever the test's outcome."""
    started = hermetic.Children()
    sleep = "import time; time.sleep(600)"
    proc = started.popen([PYTHON, "-c", "import subprocess, sys; p = subprocess.Popen([sys."
                          f"executable, '-c', {sleep!r}]); print(p.pid, flush=True); {sleep}"],
                         stdout=subprocess.PIPE, text=True)
    grandchild = int(proc.stdout.readline())
    started.close()
    assert proc.returncode == -signal.SIGKILL and hermetic.survivors({grandchild}) == []


@pytest.mark.parametrize("selection", [
    "signals and not slow", pytest.param("signals and slow", marks=pytest.mark.slow)])
def test_the_signal_tests_pass_when_pytest_ignores_signals(children, selection):
    """Every `signals` test, run by a pytest started as `(nohup pytest &)` starts it (SIGINT
    and SIGQUIT ignored), and SIGTERM ignored and both blocked besides."""
    tests = Path(__file__).parent
    res = children.run([PYTHON, SCRIPT, "background", PYTHON, "-m", "pytest", "-q", "-p",
                        "no:cacheprovider", "-m", selection, str(tests)],
                       cwd=tests.parent, timeout=1800)
    summary = res.stdout.strip().splitlines()[-1]
    assert res.returncode == 0, res.stdout[-4000:]
    assert re.fullmatch(r"[1-9]\d* passed, \d+ deselected in .*", summary), summary
