"""Processes of the memory benchmark: free ports, children stopped by PID, /proc readings.

Every child runs in a session of its own so that stopping it (SIGTERM, a bounded wait, then
SIGKILL to its process group) also reaches NGINX's workers. Readiness is a real condition
polled with a deadline (a log line appears and the port accepts), never a fixed sleep.
(``bench/peers/local.py`` has the same few helpers for the peers' self-check: the two packages
are run separately and import nothing from each other.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

HOST: Final = "127.0.0.1"
POLL_SECONDS: Final = 0.05
STOP_GRACE_SECONDS: Final = 10.0


class ChildError(Exception):
    """A child exited early or never became ready; the message ends with its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def port_accepts(port: int) -> bool:
    """Whether a TCP connect to 127.0.0.1:port succeeds right now."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def rss_kib(pid: int) -> int:
    """The process's resident set size (``VmRSS``) in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ChildError(f"no VmRSS for process {pid}")


def open_fds(pid: int) -> int:
    """How many file descriptors the process has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def accepted_connections(pid: int, port: int) -> int:
    """How many TCP connections the process holds with local port ``port`` (not listeners)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed since listed
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    suffix = f":{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[1].endswith(suffix) and fields[3] != "0A" and fields[9] in inodes:
                count += 1
    return count


class Child:
    """One started process; stdout and stderr go to ``log_path``. Stop it with ``stop``."""

    def __init__(
        self, name: str, argv: Sequence[str], *, log_path: Path, cwd: Path | None = None
    ) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise ChildError(
                f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def wait_ready(self, port: int, *, marker: str | None = None, timeout: float) -> None:
        """Return once ``marker`` is in the log (if given) and ``port`` accepts."""
        deadline = time.monotonic() + timeout
        while not ((marker is None or marker in self.log_text()) and port_accepts(port)):
            self.check_running()
            if time.monotonic() > deadline:
                raise ChildError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(POLL_SECONDS)

    def stop(self) -> None:
        """SIGTERM the process group, wait a bounded time, then SIGKILL it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_GRACE_SECONDS)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_GRACE_SECONDS)
