"""Child processes of the harness: free loopback ports, start, wait until ready, stop by PID.

Every process runs in a session of its own (``start_new_session``) so that stopping it can also
reach its children (NGINX workers, gateway workers) through its process group, whose id is the
PID we started. Stopping is SIGTERM, a bounded wait, then SIGKILL to the group. Every wait has a
deadline; readiness is a real condition (a TCP connect succeeds, a log line appears), polled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

HOST: Final = "127.0.0.1"
POLL_SECONDS: Final = 0.05
STOP_GRACE_SECONDS: Final = 10.0


class StartError(Exception):
    """A child process exited or never became ready; the message ends with its log tail."""


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


class Child:
    """One started process whose stdout and stderr go to ``log_path``."""

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
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the child's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_contains(self, marker: str) -> bool:
        try:
            return marker in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def wait_until(self, condition: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll ``condition`` until true; fail if the child exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            if condition():
                return
            code = self.popen.poll()
            if code is not None:
                raise StartError(
                    f"{self.name} exited with {code} before {what}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise StartError(
                    f"{self.name} not ready after {timeout:.0f} s ({what}):\n{self.log_tail()}"
                )
            time.sleep(POLL_SECONDS)

    def wait_for_port(self, port: int, *, timeout: float) -> None:
        self.wait_until(lambda: port_accepts(port), timeout=timeout, what=f"port {port} accepts")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL the process group; the exit code."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        # The group may hold workers that outlived their parent; its id is our child's PID.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.popen.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        return self.popen.returncode


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
