"""The standard ``process_*`` metrics (SPEC §9.1) computed from ``/proc`` texts.

Ring 0: pure parsing. ``server/process_metrics.py`` (Ring 1) reads ``/proc/self/stat``,
``/proc/self/limits``, ``/proc/stat`` and counts ``/proc/self/fd``, then calls ``sample`` here;
``GatewayMetrics.collect`` puts the ``ProcessSample`` into the ``process_*`` families at scrape
time. The names and meanings are those of the Prometheus client libraries:
``process_cpu_seconds_total`` (user + system), ``process_resident_memory_bytes``,
``process_virtual_memory_bytes``, ``process_open_fds``, ``process_max_fds`` (the soft limit)
and ``process_start_time_seconds`` (Unix time).

Must not: open files or read the clock; raise on a text it cannot parse (it returns None: a
scrape must not fail because ``/proc`` looked unusual).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ProcessSample",
    "StatFields",
    "parse_boot_time",
    "parse_max_fds",
    "parse_stat",
    "sample",
]


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One reading of the process's resource use."""

    cpu_seconds: float
    resident_bytes: int
    virtual_bytes: int
    #: Unix time the process started; None when the boot time was unknown.
    start_time: float | None
    open_fds: int | None
    #: The soft ``RLIMIT_NOFILE``; None when unlimited or unknown.
    max_fds: int | None


@dataclass(frozen=True, slots=True)
class StatFields:
    """What ``/proc/<pid>/stat`` gives: CPU seconds, memory, start in seconds since boot."""

    cpu_seconds: float
    resident_bytes: int
    virtual_bytes: int
    started_after_boot: float


def parse_stat(text: str, *, ticks_per_second: int, page_size: int) -> StatFields | None:
    """Fields of ``/proc/<pid>/stat`` (proc(5)): ``utime`` + ``stime`` (14, 15) in clock ticks,
    ``starttime`` (22) in ticks after boot, ``vsize`` (23) in bytes, ``rss`` (24) in pages.

    The command name (field 2) is in parentheses and may itself contain spaces and
    parentheses, so the fields are counted from the *last* ``)``.
    """
    _, paren, rest = text.rpartition(")")
    if not paren or ticks_per_second <= 0:
        return None
    fields = rest.split()  # fields[0] is field 3 (state)
    try:
        utime, stime = int(fields[11]), int(fields[12])
        start, vsize, rss = int(fields[19]), int(fields[20]), int(fields[21])
    except (IndexError, ValueError):
        return None
    return StatFields(
        cpu_seconds=(utime + stime) / ticks_per_second,
        resident_bytes=rss * page_size,
        virtual_bytes=vsize,
        started_after_boot=start / ticks_per_second,
    )


def parse_boot_time(text: str) -> float | None:
    """The ``btime`` line of ``/proc/stat``: the boot time in Unix seconds."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "btime":
            try:
                return float(value.strip())
            except ValueError:
                return None
    return None


def parse_max_fds(text: str) -> int | None:
    """The soft limit of the ``Max open files`` line of ``/proc/<pid>/limits``."""
    for line in text.splitlines():
        if line.startswith("Max open files"):
            words = line[len("Max open files") :].split()
            if words and words[0].isdigit():
                return int(words[0])
            return None
    return None


def sample(
    stat: str,
    *,
    ticks_per_second: int,
    page_size: int,
    boot_time: float | None,
    open_fds: int | None,
    max_fds: int | None,
) -> ProcessSample | None:
    """Combine the parsed pieces; None when ``stat`` cannot be parsed."""
    fields = parse_stat(stat, ticks_per_second=ticks_per_second, page_size=page_size)
    if fields is None:
        return None
    return ProcessSample(
        cpu_seconds=fields.cpu_seconds,
        resident_bytes=fields.resident_bytes,
        virtual_bytes=fields.virtual_bytes,
        start_time=None if boot_time is None else boot_time + fields.started_after_boot,
        open_fds=open_fds,
        max_fds=max_fds,
    )
