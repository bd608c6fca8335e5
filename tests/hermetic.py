"""Child processes that tests signal, started as from an interactive shell whatever started
pytest, and never left running.

A runner passes on more than its environment: `cmd &` in a script starts it with SIGINT and
SIGQUIT ignored, a service manager may block signals, and an ignored or blocked disposition
survives fork and exec. A child that the test interrupts must not inherit them, so every child
starts through this file run as a script ("shell" mode): SIGINT and SIGTERM back to their
defaults and unblocked, then exec. Each child gets its own process group, which `Children`
kills at teardown whatever the outcome, and (Linux) dies with pytest even if pytest is killed.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

HELD = {signal.SIGINT, signal.SIGTERM}  # what the signal tests send and expect to act
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Children:
    """Start commands as from a shell, each in its own process group; close() kills the groups."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """subprocess.Popen(argv), with stdin from /dev/null (a background pytest reading the
        terminal would stop)."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen([sys.executable, __file__, "shell", str(os.getpid()), *argv],
                                start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
        """subprocess.run(argv, capture_output=True, text=True, timeout=timeout)."""
        proc = self.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **kwargs)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def close(self) -> None:
        """Kill every child's whole group (workers included), reap the children, close pipes."""
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # the group is empty: all of it has exited
            proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


def read_until(proc: subprocess.Popen, prefix: str, timeout: float = 600) -> str:
    """What `proc` wrote on stderr up to its first whole line that starts with `prefix` (its
    readiness line), maybe a little beyond. Fails if the child exits first, or hangs for
    `timeout` seconds (a guard, not a wait: it returns as soon as the line is there)."""
    fd, seen = proc.stderr.fileno(), b""
    deadline = time.monotonic() + timeout
    while not any(line.startswith(prefix.encode()) for line in seen.splitlines(keepends=True)
                  if line.endswith(b"\n")):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no line {prefix!r}... in {timeout} s; stderr so far: {seen!r}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"exited with {proc.wait()} before a line {prefix!r}...: "
                                 f"{seen!r}")
        seen += chunk
    return seen.decode(errors="replace")


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie has ended), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def survivors(pids: set[int], timeout: float = 60) -> list[int]:
    """Those of `pids` still running: none as soon as all have ended, else those left after
    `timeout` seconds (a guard: a loaded machine may take a while to end a killed process)."""
    deadline = time.monotonic() + timeout
    while (running := sorted(p for p in pids if alive(p))) and time.monotonic() < deadline:
        time.sleep(0.05)
    return running


@contextmanager
def shell_signals() -> Iterator[None]:
    """In this process: SIGINT raises KeyboardInterrupt and SIGINT and SIGTERM are unblocked
    for the duration, whatever pytest inherited; put back after."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, signal.SIG_DFL if old is None else old)


def _die_with(parent: int) -> None:
    """Linux: be SIGKILLed when `parent` (pytest) ends, even by SIGKILL, so no child outlives
    a killed test run; the setting survives the exec."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # pytest ended before it was armed
            os._exit(1)


def _exec(argv: list[str], disposition, how: int) -> None:
    """Become `argv` with SIGINT and SIGTERM at `disposition` and `how` applied to their mask;
    SIGQUIT too where they are ignored (as `cmd &` leaves it)."""
    for sig in HELD | ({signal.SIGQUIT} if disposition is signal.SIG_IGN else set()):
        signal.signal(sig, disposition)
    signal.pthread_sigmask(how, HELD)
    os.execv(argv[0], argv)


if __name__ == "__main__":  # shell PID ARGV...: as a shell starts ARGV; background ARGV...: as
    # `(nohup ARGV &)` would, and with SIGINT and SIGTERM ignored and blocked besides: the worst
    # a runner can pass on
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "shell":
        _die_with(int(rest[0]))
        _exec(rest[1:], signal.SIG_DFL, signal.SIG_UNBLOCK)
    else:
        _exec(rest, signal.SIG_IGN, signal.SIG_BLOCK)
