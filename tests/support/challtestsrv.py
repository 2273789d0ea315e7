"""A real ``pebble-challtestsrv`` for the DNS-01 tests (SPEC §12.6): its management API takes
``POST /set-txt`` and ``/clear-txt`` and its DNS server answers the TXT records set there.

``running_challtestsrv()`` starts ``pebble-challtestsrv`` with only the DNS-01 server (on
``127.0.0.1:<free port>``, UDP and TCP) and the management API (``127.0.0.1:<free port>``),
the HTTP-01, HTTPS-01 and TLS-ALPN-01 servers disabled, waits until the management port
accepts connections (bounded by ``START_TIMEOUT``), and kills it by its PID at the end.

``txt_values(server, name)`` asks its DNS server directly (dnspython, over UDP), sharing no
code with the providers under test.

A missing ``pebble-challtestsrv`` (Debian package ``pebble``) fails the test under ``CI=true``
and skips it otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import dns.message
import dns.query
import dns.rdatatype
import pytest
from dns.rdtypes.ANY.TXT import TXT

from tests.support.knot import free_port

START_TIMEOUT: Final = 10.0
QUERY_TIMEOUT: Final = 2.0


def challtestsrv_binary() -> str:
    """The path of ``pebble-challtestsrv``; fails (CI) or skips (elsewhere) when missing."""
    path = shutil.which("pebble-challtestsrv") or next(
        (p for p in ("/usr/bin/pebble-challtestsrv",) if os.access(p, os.X_OK)), None
    )
    if path is None:
        message = "pebble-challtestsrv is not installed (Debian package pebble)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass(frozen=True, slots=True)
class ChallTestSrv:
    """A running ``pebble-challtestsrv``: where its DNS server and management API listen."""

    dns_port: int
    management_port: int
    log: Path

    @property
    def dns_address(self) -> str:
        """``127.0.0.1:<port>`` of the DNS server (``acme_dns.resolver``'s form)."""
        return f"127.0.0.1:{self.dns_port}"

    @property
    def management_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the management API."""
        return f"http://127.0.0.1:{self.management_port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _wait_ready(process: subprocess.Popen[bytes], server: ChallTestSrv) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert process.poll() is None, f"pebble-challtestsrv exited: {server.log_text()}"
        assert time.monotonic() < deadline, (
            f"pebble-challtestsrv not answering after {START_TIMEOUT}s: {server.log_text()}"
        )
        try:
            with socket.create_connection(("127.0.0.1", server.management_port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)


@contextlib.contextmanager
def running_challtestsrv() -> Iterator[ChallTestSrv]:
    """A started ``pebble-challtestsrv``, killed (and reaped) at the end whatever happened."""
    binary = challtestsrv_binary()
    with tempfile.TemporaryDirectory(prefix="a3s-challtestsrv-") as directory:
        dns_port = free_port()
        management_port = next(p for p in iter(free_port, None) if p != dns_port)
        server = ChallTestSrv(dns_port, management_port, Path(directory) / "challtestsrv.log")
        with server.log.open("wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    *("-http01", "", "-https01", "", "-tlsalpn01", ""),
                    *("-dns01", server.dns_address),
                    *("-management", f"127.0.0.1:{server.management_port}"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_ready(process, server)
            yield server
        finally:
            process.kill()
            process.wait(timeout=10)


def txt_values(server: ChallTestSrv, name: str) -> list[str]:
    """The TXT strings the server answers for ``name`` (absolute), each record's strings
    joined."""
    query = dns.message.make_query(name, dns.rdatatype.TXT)
    answer = dns.query.udp(query, "127.0.0.1", port=server.dns_port, timeout=QUERY_TIMEOUT)
    return [
        b"".join(rdata.strings).decode()
        for rrset in answer.answer
        for rdata in rrset
        if isinstance(rdata, TXT)
    ]
