"""A real Knot DNS server (``knotd``) for the DNS provider's tests (SPEC §10.4), and a
nameserver that never answers.

``running_knot(zone="test.", records=[...])`` writes a knotd config into a temporary directory
(listening on ``127.0.0.1@<free port>`` for UDP and TCP, run directory and databases in the
temporary directory, no ``user:`` so it runs as the current user, one zone with a SOA whose
negative TTL is 1 s, an NS record and the given records, a journal, and a TSIG key allowed to
update the zone), starts ``knotd -c <conf>`` in the foreground, waits until it answers a SOA
query (bounded by ``START_TIMEOUT``) and stops it by its PID at the end. Records change while it
runs through RFC 2136 dynamic updates signed with the TSIG key (``replace``, ``delete``); the
server can be stopped and started again on the same port (``stop``/``start``). Records are
zone-file lines relative to the zone (``"api 1 A 10.0.0.1"``).

The context manager is synchronous and its calls block briefly (a local UDP or TCP exchange),
so trio tests use it as is. The TSIG secret is random per server and never printed.

``silent_udp_nameserver(port)`` binds a UDP socket on ``127.0.0.1`` that reads nothing and
answers nothing: queries sent there time out.

A missing ``knotd`` fails the test under ``CI=true`` and skips it otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest

START_TIMEOUT: Final = 10.0
#: Each dynamic update and each readiness probe.
EXCHANGE_TIMEOUT: Final = 5.0
_KEY_NAME: Final = "a3s-test-update"


def knotd_binary() -> str:
    """The path of ``knotd``; fails (CI) or skips (elsewhere) when it is missing."""
    path = shutil.which("knotd") or next(
        (p for p in ("/usr/sbin/knotd", "/usr/local/sbin/knotd") if os.access(p, os.X_OK)), None
    )
    if path is None:
        message = "knotd is not installed (Debian package knot; scripts/debian-packages.txt)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    """A loopback port free for both TCP and UDP right now."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no port free for both TCP and UDP")


class KnotServer:
    """One ``knotd`` serving ``zone`` on ``127.0.0.1:<port>``."""

    def __init__(self, directory: Path, *, zone: str, records: Sequence[str]) -> None:
        self.binary = knotd_binary()
        self.directory = directory
        self.zone = zone if zone.endswith(".") else zone + "."
        self.port = free_port()
        self._secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self._keyring = dns.tsigkeyring.from_text(
            {_KEY_NAME: (dns.tsig.HMAC_SHA256.to_text(), self._secret)}
        )
        self._config = directory / "knot.conf"
        self._log = directory / "knotd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._write(records)

    def __repr__(self) -> str:
        return f"KnotServer({self.zone} on {self.address})"

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, as ``providers.dns.nameservers`` takes it."""
        return f"127.0.0.1:{self.port}"

    @property
    def tsig_key_name(self) -> str:
        """The name of the TSIG key allowed to update the zone (for an RFC 2136 client under
        test)."""
        return _KEY_NAME

    @property
    def tsig_secret(self) -> str:
        """That key's secret, base64 (random per server; never printed, not in the repr)."""
        return self._secret

    @property
    def tsig_algorithm(self) -> str:
        """That key's algorithm as ``acme_dns.tsig_algorithm`` names it."""
        return "hmac-sha256"

    def _write(self, records: Sequence[str]) -> None:
        for sub in ("run", "db", "zones"):
            (self.directory / sub).mkdir()
        zone_lines = [
            f"$ORIGIN {self.zone}",
            "$TTL 60",
            "@ SOA ns hostmaster 1 3600 600 86400 1",
            "@ NS ns",
            "ns A 127.0.0.1",
            *records,
        ]
        (self.directory / "zones" / f"{self.zone}zone").write_text("\n".join(zone_lines) + "\n")
        self._config.write_text(
            "\n".join(
                [
                    "server:",
                    f'    rundir: "{self.directory / "run"}"',
                    f"    listen: 127.0.0.1@{self.port}",
                    "    udp-workers: 1",
                    "    tcp-workers: 1",
                    "    background-workers: 1",
                    "log:",
                    "  - target: stderr",
                    "    any: info",
                    "database:",
                    f'    storage: "{self.directory / "db"}"',
                    "key:",
                    f"  - id: {_KEY_NAME}",
                    "    algorithm: hmac-sha256",
                    f"    secret: {self._secret}",
                    "acl:",
                    "  - id: update",
                    f"    key: {_KEY_NAME}",
                    "    action: update",
                    "zone:",
                    f"  - domain: {self.zone}",
                    f'    storage: "{self.directory / "zones"}"',
                    '    file: "%s.zone"',
                    "    acl: update",
                    "    zonefile-sync: -1",
                    "    journal-content: changes",
                    "",
                ]
            )
        )

    def start(self) -> None:
        """Start knotd (again) on ``port`` and wait until it answers a SOA query."""
        assert self.process is None, "already running"
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self._config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_ready(self.process)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        query = dns.message.make_query(self.zone, dns.rdatatype.SOA)
        while True:
            assert process.poll() is None, f"knotd exited: {self.log_text()}"
            left = deadline - time.monotonic()
            assert left > 0, f"knotd not answering after {START_TIMEOUT}s: {self.log_text()}"
            try:
                answer = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=min(left, 0.2))
            except (dns.exception.Timeout, OSError):
                time.sleep(0.02)
                continue
            if answer.rcode() == dns.rcode.NOERROR and answer.answer:
                return
            time.sleep(0.02)

    def log_text(self) -> str:
        """What knotd logged so far (it never logs the TSIG secret)."""
        try:
            return self._log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Stop knotd by its PID (SIGTERM, then SIGKILL after 10 s) and reap it."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _update(self, update: dns.update.UpdateMessage) -> None:
        answer = dns.query.tcp(update, "127.0.0.1", port=self.port, timeout=EXCHANGE_TIMEOUT)
        rcode = answer.rcode()
        assert rcode == dns.rcode.NOERROR, f"update refused: {dns.rcode.to_text(rcode)}"

    def _new_update(self) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(
            self.zone,
            keyring=self._keyring,
            keyname=dns.name.from_text(_KEY_NAME),
            keyalgorithm=dns.tsig.HMAC_SHA256,
        )

    def replace(self, name: str, rtype: str, ttl: int, *rdata: str) -> None:
        """Make ``name``'s ``rtype`` records exactly ``rdata`` (``name`` relative to the zone,
        or absolute with a trailing dot)."""
        update = self._new_update()
        update.replace(name, ttl, rtype, *rdata)
        self._update(update)

    def delete(self, name: str, rtype: str | None = None) -> None:
        """Delete ``name``'s ``rtype`` records, or the whole name when ``rtype`` is None."""
        update = self._new_update()
        if rtype is None:
            update.delete(name)
        else:
            update.delete(name, rtype)
        self._update(update)


@contextlib.contextmanager
def running_knot(*, zone: str = "test.", records: Sequence[str] = ()) -> Iterator[KnotServer]:
    """A started ``KnotServer`` serving ``zone`` with ``records``, stopped (and its directory
    removed) at the end, whatever state the test left it in."""
    with tempfile.TemporaryDirectory(prefix="a3s-knot-") as directory:
        server = KnotServer(Path(directory), zone=zone, records=records)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def silent_udp_nameserver(port: int = 0) -> Iterator[str]:
    """``127.0.0.1:<port>`` (a free port when 0) where a UDP socket is bound and never answers;
    closed at the end."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        yield f"127.0.0.1:{sock.getsockname()[1]}"
