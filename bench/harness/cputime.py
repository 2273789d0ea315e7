"""CPU time of a product's processes, from ``/proc/<pid>/stat``: CPU per request of a trial.

A product is the process the harness started and every process descending from it (NGINX's
master and workers; the gateway's supervisor and its ``spawn``-started workers with
multiprocessing's helpers; a peer and whatever it forks). ``sample(root)`` scans ``/proc`` once,
finds that tree by parent PID and sums, over it, ``utime + stime`` (fields 14 and 15: the
process's own CPU in user and kernel mode, all threads) plus ``cutime + cstime`` (16 and 17: its
children that exited and were waited for). Counting the reaped children keeps the sum monotonic
when a worker exits inside a trial: its time moves from its own fields into its parent's.

The runner samples just before and just after each measured wrk run, so
``(after - before) / CLK_TCK`` is the CPU the product spent in that window; divided by the
requests wrk completed it is the CPU cost per request in µs. Unlike req/s it barely depends on
how much of the two shared cores wrk and the upstream left the product, which makes it the
steadier figure for comparing one build of the request path with another on a busy machine.
Resolution: one tick (``CLK_TCK``, 100 per second on Linux), i.e. 10 ms per trial.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PROC: Final = Path("/proc")
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Sample:
    """CPU ticks of a process tree at one moment, and the PIDs it summed."""

    ticks: int
    pids: tuple[int, ...]


def _stat(pid: int) -> tuple[int, int] | None:
    """``(ppid, utime + stime + cutime + cstime)`` of ``pid``; None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may hold spaces or ')': split after the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    # fields[0] is field 3 (state): field n is fields[n - 3].
    ppid = int(fields[1])
    ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return ppid, ticks


def sample(root: int) -> Sample | None:
    """Ticks of ``root`` and its descendants now; None when ``root`` is gone."""
    own = _stat(root)
    if own is None:
        return None
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {root: own[1]}
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or entry.name == str(root):
            continue
        stat = _stat(int(entry.name))
        if stat is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
            ticks[int(entry.name)] = stat[1]
    tree = [root]
    for pid in tree:  # grows while it is walked: breadth-first over the descendants
        tree.extend(children.get(pid, ()))
    return Sample(sum(ticks[pid] for pid in tree), tuple(tree))


def seconds(before: Sample, after: Sample) -> float:
    """CPU seconds the tree spent between two samples."""
    return (after.ticks - before.ticks) / CLK_TCK
