"""Reads this process's ``/proc`` entries for the ``process_*`` metrics (SPEC §9.1).

Ring 1: file and directory reads (``observability/process.py`` parses what they return). Called
at scrape time by whoever serves ``/metrics``; the reads are a few small ``/proc`` files and one
directory listing (tens of microseconds), so they run inline rather than in a thread.

``read_process()`` returns None where ``/proc/self/stat`` does not exist (not Linux); each other
piece that cannot be read is left out (None) rather than failing the scrape.

Must not: cache (every scrape reads afresh) or raise ``OSError``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from a3s_gateway.observability.process import (
    ProcessSample,
    parse_boot_time,
    parse_max_fds,
    sample,
)

__all__ = ["read_process"]

_PROC: Final = Path("/proc")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def _open_fds(directory: Path) -> int | None:
    try:
        return len(os.listdir(directory))
    except OSError:
        return None


def read_process(proc: Path = _PROC) -> ProcessSample | None:
    """One ``ProcessSample`` of the calling process (``proc``: the procfs mount, for tests)."""
    stat = _read(proc / "self" / "stat")
    if stat is None:
        return None
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None
    boot = _read(proc / "stat")
    limits = _read(proc / "self" / "limits")
    return sample(
        stat,
        ticks_per_second=ticks,
        page_size=page_size,
        boot_time=None if boot is None else parse_boot_time(boot),
        open_fds=_open_fds(proc / "self" / "fd"),
        max_fds=None if limits is None else parse_max_fds(limits),
    )
