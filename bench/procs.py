"""The benchmarks' child processes and ``/proc`` readings: the one copy every bench package uses.

Every child runs in a session of its own (``start_new_session``), so its process group, whose
id is the PID we started, holds whatever it forks (NGINX workers, the gateway's workers,
proxy.py's processes). Stopping is SIGTERM to that group, a bounded wait, then SIGKILL to the
group, which also reaches a worker that outlived its parent. Readiness is a real condition (a
TCP connect succeeds, a log line appears) polled with a deadline, never a fixed sleep.

The ``/proc`` readings: a process's resident set size and open descriptors, the TCP connections
on a port (``/proc/net/tcp``), and the CPU model. (A product's CPU time per trial is
``bench/harness/cputime.py``'s.)
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

HOST: Final = "127.0.0.1"
POLL_SECONDS: Final = 0.05
STOP_GRACE_SECONDS: Final = 10.0
#: TCP states of /proc/net/tcp counted as a connection: established, then the closing ones.
_CONNECTED_STATES: Final = frozenset({"01", "04", "05", "06", "07", "08", "09", "0B"})
_LISTEN: Final = "0A"


class ChildError(Exception):
    """A child exited early or never became ready; the message ends with its log tail."""


def free_port(*, udp: bool = False) -> int:
    """A TCP port (a UDP port with ``udp``) on 127.0.0.1 that was free a moment ago (the
    kernel's choice)."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as probe:
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


class Child:
    """One started process whose stdout and stderr go to ``log_path``; ``stop`` ends it."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                cwd=cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once it has exited (None while it runs)."""
        return self.process.poll()

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the child's output, for error messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_contains(self, marker: str) -> bool:
        return marker in self.log_text()

    def check_running(self) -> None:
        """Raise ``ChildError`` (with the log tail) if the child has exited."""
        if self.process.poll() is not None:
            raise ChildError(
                f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def wait_until(self, condition: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll ``condition`` until true; ``ChildError`` if the child exits first or
        ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while not condition():
            code = self.process.poll()
            if code is not None:
                raise ChildError(
                    f"{self.name} exited with {code} before {what}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise ChildError(
                    f"{self.name} not ready after {timeout:.0f} s ({what}):\n{self.log_tail()}"
                )
            time.sleep(POLL_SECONDS)

    def wait_for_port(self, port: int, *, timeout: float) -> None:
        self.wait_until(lambda: port_accepts(port), timeout=timeout, what=f"port {port} accepts")

    def wait_ready(self, port: int, *, marker: str | None = None, timeout: float) -> None:
        """Return once ``marker`` is in the log (if given) and ``port`` accepts."""
        if marker is not None:
            self.wait_until(
                lambda: self.log_contains(marker), timeout=timeout, what=f"log line {marker!r}"
            )
        self.wait_for_port(port, timeout=timeout)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL the group;
        the exit code (None if it could not be reaped)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        # The leader may be gone while members of its group linger: kill the group regardless.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        return self.process.returncode


class Children:
    """The processes of one scope, stopped in reverse start order when the scope ends."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def start(self, child: Child) -> Child:
        self._children.append(child)
        return child

    def stop_all(self) -> None:
        while self._children:
            self._children.pop().stop()

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()


# --- /proc ------------------------------------------------------------------------------------


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


def _tcp_rows() -> list[list[str]]:
    """The rows of /proc/net/tcp and /proc/net/tcp6, split into fields (headers dropped)."""
    rows: list[list[str]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        rows += [line.split() for line in lines]
    return rows


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
    return sum(
        1
        for fields in _tcp_rows()
        if fields[1].endswith(suffix) and fields[3] != _LISTEN and fields[9] in inodes
    )


def tcp_connections(port: int) -> set[tuple[str, str]]:
    """Open or recently closed TCP connections (both ends, any process) with ``port`` at one
    end, each as its sorted pair of ``address:port`` fields."""
    suffix = f":{port:04X}"
    found: set[tuple[str, str]] = set()
    for fields in _tcp_rows():
        local, remote, state = fields[1], fields[2], fields[3]
        if state in _CONNECTED_STATES and (local.endswith(suffix) or remote.endswith(suffix)):
            low, high = sorted((local, remote))
            found.add((low, high))
    return found


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` without it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "(unknown)"
