"""A real ``redis-server`` for tests (SPEC §8.7 "Tested against a real redis-server").

``running_redis()`` starts one on a free loopback port with no persistence (``--save ""
--appendonly no``), optionally with ``requirepass``, ACL users or TLS, waits for its "Ready to
accept connections" log line and a PING answer, and stops it by its PID at the end. The server
can be stopped and started again on the same port (``stop``/``start``) to test reconnects and
outages.

``command()`` talks to the server with a plain blocking socket and ``hiredis.Reader``; it shares
no code with the client under test (``upstream/redis.py``), so assertions about what Redis holds
do not depend on that client.

A missing ``redis-server`` binary fails the test under ``CI=true`` and skips it otherwise.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import hiredis
import pytest

READY_LINE: Final = b"Ready to accept connections"
START_TIMEOUT: Final = 10.0


def redis_server_binary() -> str:
    """The path of ``redis-server``; fails (CI) or skips (elsewhere) when it is missing."""
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (scripts/debian-packages.txt lists it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _encode(args: Sequence[bytes | str | int]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port`` (TCP, or TLS when ``tls`` is given)."""

    def __init__(
        self,
        *,
        password: str | None = None,
        users: Sequence[Sequence[str]] = (),
        tls: tuple[Path, Path] | None = None,
        client_context: ssl.SSLContext | None = None,
    ) -> None:
        self.binary = redis_server_binary()
        self.port = free_port()
        self.password = password
        self.tls = tls
        self._client_context = client_context
        self._args: list[str] = ["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
        if password is not None:
            self._args += ["--requirepass", password]
        for user in users:
            self._args += ["--user", *user]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` (``rediss`` with TLS), with the password if any."""
        scheme = "rediss" if self.tls else "redis"
        auth = f":{self.password}@" if self.password is not None else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server (again) on ``port`` and wait until it answers PING."""
        assert self.process is None, "already running"
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            cert, key = self.tls
            listen = ["--port", "0", "--tls-port", str(self.port)]
            listen += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            listen += ["--tls-auth-clients", "no"]
        self.process = subprocess.Popen(
            [self.binary, *listen, *self._args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready(self.process)
            assert self.command("PING") == b"PONG"
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        """Read the server's log until its ready line (bounded by ``START_TIMEOUT``)."""
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        log = b""
        while READY_LINE not in log:
            left = deadline - time.monotonic()
            assert left > 0, f"redis-server not ready after {START_TIMEOUT}s: {log.decode()}"
            readable, _, _ = select.select([process.stdout], [], [], left)
            if readable:
                chunk = os.read(process.stdout.fileno(), 65536)
                assert chunk, f"redis-server exited: {log.decode()}"
                log += chunk

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL after 10 s) and reap it."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def connect(self) -> socket.socket:
        """A blocking connection to the server (TLS when the server is), authenticated."""
        sock: socket.socket = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        if self.tls is not None:
            assert self._client_context is not None, "a TLS server needs a client_context"
            sock = self._client_context.wrap_socket(sock, server_hostname="localhost")
        return sock

    def command(self, *args: bytes | str | int, db: int = 0) -> object:
        """Run one command on a fresh connection (after AUTH and SELECT when needed)."""
        commands: list[Sequence[bytes | str | int]] = []
        if self.password is not None:
            commands.append(("AUTH", self.password))
        if db:
            commands.append(("SELECT", db))
        commands.append(args)
        reader = hiredis.Reader()
        replies: list[object] = []
        with contextlib.closing(self.connect()) as sock:
            sock.sendall(b"".join(_encode(c) for c in commands))
            while len(replies) < len(commands):
                reply = reader.gets()
                if reply is not False:
                    replies.append(reply)
                    continue
                data = sock.recv(65536)
                assert data, "redis-server closed the connection"
                reader.feed(data)
        for reply in replies[:-1]:
            assert not isinstance(reply, hiredis.ReplyError), reply
        return replies[-1]


@contextlib.contextmanager
def running_redis(
    *,
    password: str | None = None,
    users: Sequence[Sequence[str]] = (),
    tls: tuple[Path, Path] | None = None,
    client_context: ssl.SSLContext | None = None,
) -> Iterator[RedisServer]:
    """A started ``RedisServer``, stopped at the end (whatever state the test left it in).

    ``users`` are ACL rules, e.g. ``[("alice", "on", ">pw", "~*", "&*", "+@all")]``.
    """
    server = RedisServer(password=password, users=users, tls=tls, client_context=client_context)
    server.start()
    try:
        yield server
    finally:
        server.stop()
