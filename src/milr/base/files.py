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
