"""Which device runs the work, at which matmul precision, and how a result names them."""

from __future__ import annotations

import platform
import time
from contextlib import contextmanager

import torch

from ..version import __version__


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    if name in ("cpu", "cuda"):
        return torch.device(name)
    raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")


@contextmanager
def matmul_precision(name: str):
    """fp32, or tf32 for CUDA matmuls, for the duration of the block."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


# Matmul FLOPs of one training step (all members in flight) per CPU thread below which a
# second thread gives nothing: measured on the idle 2-core CI machine (benchmarks/README.md,
# "Threads"): 2 threads tie with 1 at 1-7 MFLOP a step and win from 32 MFLOP up (1.16x there,
# 1.3-2.1x at 50-1500 MFLOP). With another process busy a second thread loses at any size:
# that is the load rule's part (cpu_threads).
THREAD_FLOPS = 2e7


class _OwnLoad:
    """This process's share of the load average: its CPU seconds per wall second since the
    previous call (since milr was imported, at the first), at least 1 (it is running now)."""

    def __init__(self, wall=time.monotonic, cpu=time.process_time) -> None:
        self.wall, self.cpu = wall, cpu
        self.last = (wall(), cpu())

    def __call__(self) -> float:
        now = (self.wall(), self.cpu())
        (w0, c0), (w1, c1) = self.last, now
        self.last = now
        return max(1.0, (c1 - c0) / (w1 - w0)) if w1 > w0 else 1.0


own_load = _OwnLoad()


def cpu_threads(step_flops: float, cap: int, cpus: int | None = None,
                load: float | None = None, own: float | None = None) -> int:
    """Threads for training on the CPU: one per THREAD_FLOPS of work in a step, at most `cap`
    (torch's count when called: the worker's share under --workers, or OMP_NUM_THREADS), and
    at most the cores other processes leave free (`load`: the 1-minute load average, of which
    `own` is this process's: `own_load`, its recent CPU use; a search that just ran on two
    threads must not count itself as someone else)."""
    import os

    cpus = cpus or os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    own = own_load() if own is None else own
    free = max(1, cpus - int(max(0.0, load - own)))
    return max(1, min(cap, free, int(step_flops // THREAD_FLOPS)))


@contextmanager
def num_threads(n: int):
    """torch's CPU threads set to n for the duration of the block."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def available_memory(device: torch.device) -> float:
    """Bytes free for tensors on `device` (on the CPU: physical memory available now)."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return float(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        import os

        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict:
    return {"milr": __version__, "torch": torch.__version__, "python": platform.python_version()}
