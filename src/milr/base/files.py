"""Durable files: what the results store and the downloads share."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a new or renamed file's directory entry durable (its data alone may survive a crash
    nameless); a no-op where directories cannot be opened or synced (some file systems)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not supported here: nothing more can be done
    finally:
        os.close(fd)


def _kind(p: Path) -> str:
    """What a path that is not a regular file is, in words."""
    for test, name in ((p.is_dir, "a directory"), (p.is_fifo, "a FIFO (named pipe)"),
                       (p.is_socket, "a socket"), (p.is_char_device, "a device"),
                       (p.is_block_device, "a device")):
        if test():
            return name
    return "not a regular file"


def check_regular(path: str | os.PathLike, what: str) -> None:
    """Refuse a path that exists but is no regular file: reading or appending to a FIFO blocks
    forever (until another process opens its other end), and a device holds no table."""
    p = Path(path)
    if p.exists() and not p.is_file():  # through symlinks
        raise ValueError(f"{what} {path} is {_kind(p)}, not a regular file; give a file path")


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Fail before any work if `path` cannot be written as a file: not a regular one, or its
    directory missing (where a symlink, dangling or not, leads: that is the one needed)."""
    check_regular(path, what)
    p = Path(path)
    target = Path(os.path.realpath(p))
    if not target.parent.is_dir():
        linked = str(target) != os.path.abspath(p)
        where = f"{target.parent} (where {path} leads)" if linked else str(p.parent)
        raise ValueError(f"cannot write {what} {path}: directory {where} does not exist")
