"""Local processes of the peers' self-check: free ports, children stopped by PID, NGINX upstream.

Every child runs in a session of its own so that stopping it (SIGTERM, a bounded wait, then
SIGKILL) reaches its whole process group: NGINX workers, proxy.py's worker processes. Readiness
is a real condition polled with a deadline (a TCP connect succeeds), never a fixed sleep.

The upstream is NGINX in the foreground (``daemon off;``) from a prefix directory of its own, so
nothing touches ``/etc/nginx``, ``/run`` or port 80: ``/`` answers a fixed 42-byte body and a
POST body is read and discarded.
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
    from collections.abc import Sequence
    from pathlib import Path

HOST: Final = "127.0.0.1"
POLL_SECONDS: Final = 0.05
STOP_GRACE_SECONDS: Final = 5.0
BODY_42: Final = "a3s bench upstream: a 42-byte body, hello\n"

assert len(BODY_42.encode()) == 42


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


class Child:
    """One started process; stdout and stderr go to ``log_path``. Stop it with ``stop``."""

    def __init__(self, name: str, argv: Sequence[str], *, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_for_port(self, port: int, *, timeout: float) -> None:
        """Return once ``port`` accepts; raise ``ChildError`` on exit or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not port_accepts(port):
            if self.process.poll() is not None:
                raise ChildError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise ChildError(
                    f"{self.name} not listening after {timeout:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(POLL_SECONDS)

    def stop(self) -> None:
        """SIGTERM the process group, wait a bounded time, then SIGKILL it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_GRACE_SECONDS)
        # The leader may be gone while workers of its group linger: kill the group regardless.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_GRACE_SECONDS)


def write_nginx_upstream(prefix: Path, port: int) -> Path:
    """Write an NGINX config answering 42 bytes on 127.0.0.1:``port``; return its path."""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    body = BODY_42.replace("\n", "\\n")
    temp_paths = "\n".join(
        f"    {kind}_temp_path {prefix}/tmp/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = prefix / "nginx.conf"
    conf.write_text(f"""\
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
{temp_paths}
    keepalive_requests 10000000;
    server {{
        listen {HOST}:{port} reuseport backlog=4096;
        location / {{
            client_max_body_size 0;
            default_type text/plain;
            return 200 "{body}";
        }}
    }}
}}
""")
    return conf


def nginx_argv(conf: Path, prefix: Path) -> list[str]:
    """Run ``conf`` in the foreground with ``prefix`` as NGINX's prefix and error log."""
    return ["nginx", "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")]
