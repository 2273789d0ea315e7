"""A real Pebble ACME CA (RFC 8555) with ``pebble-challtestsrv`` as its DNS, for the ACME tests
(SPEC §12.6).

``running_pebble()`` makes a ``trustme`` CA and a certificate for ``localhost`` and
``127.0.0.1`` (Pebble's own HTTPS, on its ACME and management listeners), writes Pebble's JSON
config into a temporary directory, starts ``pebble-challtestsrv`` with only its DNS server and
management API (every name it is asked about resolves to ``127.0.0.1``; no HTTP-01, HTTPS or
TLS-ALPN-01 listener, so it takes none of the ports a gateway under test needs), then
``pebble -dnsserver`` pointed at it, with validation sleeps off (``PEBBLE_VA_NOSLEEP``), no
authorization reuse (``PEBBLE_AUTHZREUSE=0``) and the given share of rejected nonces
(``PEBBLE_WFE_NONCEREJECT``). It waits (bounded by ``START_TIMEOUT``) until Pebble's directory
answers over HTTPS trusting the ``trustme`` CA and challtestsrv's management port accepts
connections, and stops both processes by their PIDs at the end (or when starting failed, then
with their logs in the error).

Pebble validates HTTP-01 on ``http_port`` and TLS-ALPN-01 on ``tls_port`` of the address
challtestsrv gives every name, ``127.0.0.1`` (free ports unless given: a test puts a gateway's
entrypoints there). DNS-01 records are set
through challtestsrv (``set_txt``/``clear_txt``). ``roots_pem()`` is Pebble's issuing root and
``intermediates_pem()`` its intermediate, both regenerated at every start, for verifying issued
chains.

Every HTTP call here has a timeout. A missing binary fails the test under ``CI=true`` and skips
it otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import pytest
import requests
import trustme

from tests.support.redis_server import free_port

PEBBLE: Final = "/usr/bin/pebble"
CHALLTESTSRV: Final = "/usr/bin/pebble-challtestsrv"
START_TIMEOUT: Final = 10.0
#: Each HTTP call to Pebble or challtestsrv.
CALL_TIMEOUT: Final = 5.0
_LOG_TAIL: Final = 2000


def pebble_binaries() -> tuple[str, str]:
    """The paths of ``pebble`` and ``pebble-challtestsrv``; fails (CI) or skips (elsewhere)
    when one is missing."""
    pebble, challtestsrv = (_binary(path) for path in (PEBBLE, CHALLTESTSRV))
    if pebble is None or challtestsrv is None:
        message = "pebble is not installed (the Debian package pebble)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return pebble, challtestsrv


def _binary(path: str) -> str | None:
    return shutil.which(Path(path).name) or (path if os.access(path, os.X_OK) else None)


@dataclass(frozen=True, slots=True)
class Pebble:
    """A running Pebble and its challtestsrv (see the module docstring)."""

    directory_url: str
    #: The ``trustme`` CA (PEM file) that Pebble's HTTPS certificate chains to.
    ca_file: str
    http_port: int
    tls_port: int
    #: challtestsrv's management API (plain HTTP).
    management_url: str
    #: challtestsrv's DNS server on ``127.0.0.1`` (UDP and TCP).
    dns_port: int
    #: Pebble's own management API (HTTPS, trusting ``ca_file``).
    pebble_management_url: str

    def roots_pem(self) -> bytes:
        """Pebble's issuing root certificate (PEM), new at every start."""
        return self._management_get("/roots/0")

    def intermediates_pem(self) -> bytes:
        """Pebble's intermediate certificate (PEM), the one that signs the leaves."""
        return self._management_get("/intermediates/0")

    def _management_get(self, path: str) -> bytes:
        response = requests.get(
            self.pebble_management_url + path, verify=self.ca_file, timeout=CALL_TIMEOUT
        )
        response.raise_for_status()
        return response.content

    def set_txt(self, host: str, value: str) -> None:
        """Add the TXT record ``value`` at ``host`` (a trailing dot is added)."""
        self._challtestsrv("/set-txt", {"host": _fqdn(host), "value": value})

    def clear_txt(self, host: str) -> None:
        """Remove every TXT record at ``host``."""
        self._challtestsrv("/clear-txt", {"host": _fqdn(host)})

    def _challtestsrv(self, path: str, body: Mapping[str, str]) -> None:
        response = requests.post(self.management_url + path, json=body, timeout=CALL_TIMEOUT)
        response.raise_for_status()


def _fqdn(host: str) -> str:
    return host if host.endswith(".") else host + "."


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """``(ca, cert, key)`` PEM files: a ``trustme`` CA and a leaf for Pebble's listeners."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(paths[0]))
    leaf.cert_chain_pems[0].write_to_path(str(paths[1]))
    leaf.private_key_pem.write_to_path(str(paths[2]))
    return paths


class _Processes:
    """The started processes, each with its log file, stopped by PID at the end."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._running: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        log = (self._directory / f"{name}.log").open("wb")
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
        )
        self._running.append((name, process, log))

    def check_alive(self) -> None:
        for name, process, _ in self._running:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}: {self.logs()}")

    def logs(self) -> str:
        parts = []
        for name, _, _ in self._running:
            text = (self._directory / f"{name}.log").read_bytes()[-_LOG_TAIL:]
            parts.append(f"[{name}] {text.decode(errors='replace')}")
        return "\n".join(parts)

    def stop(self) -> None:
        running, self._running = self._running, []
        for _, process, log in reversed(running):
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


def _wait_ready(pebble: Pebble, processes: _Processes) -> None:
    """Poll (bounded) until Pebble's directory answers and challtestsrv's API accepts."""
    deadline = time.monotonic() + START_TIMEOUT
    problem = "not tried"
    while time.monotonic() < deadline:
        processes.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", _port_of(pebble.management_url)), 1):
                pass
            response = requests.get(pebble.directory_url, verify=pebble.ca_file, timeout=1)
            if response.ok and "newNonce" in response.json():
                return
            problem = f"HTTP {response.status_code}"
        except (OSError, requests.RequestException, ValueError) as exc:
            problem = str(exc)
        time.sleep(0.05)
    raise AssertionError(f"pebble not ready after {START_TIMEOUT}s ({problem}): {processes.logs()}")


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def _config(directory: Path, cert: Path, key: Path, ports: Mapping[str, int]) -> Path:
    path = directory / "pebble-config.json"
    settings = {
        "listenAddress": f"127.0.0.1:{ports['acme']}",
        "managementListenAddress": f"127.0.0.1:{ports['management']}",
        "certificate": str(cert),
        "privateKey": str(key),
        "httpPort": ports["http"],
        "tlsPort": ports["tls"],
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }
    path.write_text(json.dumps({"pebble": settings}))
    return path


@contextlib.contextmanager
def running_pebble(
    *,
    http_port: int | None = None,
    tls_port: int | None = None,
    nonce_reject: int = 0,
    env: Mapping[str, str] | None = None,
    dns_server: str | None = None,
) -> Iterator[Pebble]:
    """A started Pebble with its challtestsrv, both stopped at the end.

    ``nonce_reject`` is the percentage of valid nonces Pebble rejects as ``badNonce``; ``env``
    adds to Pebble's environment (e.g. ``PEBBLE_CHAIN_LENGTH``). ``dns_server`` (``ip:port``)
    is the DNS server Pebble asks instead of challtestsrv (a Knot server for RFC 2136 tests).
    """
    pebble_path, challtestsrv_path = pebble_binaries()
    ports = {
        "acme": free_port(),
        "management": free_port(),
        "http": free_port() if http_port is None else http_port,
        "tls": free_port() if tls_port is None else tls_port,
        "dns": free_port(),
        "challtestsrv": free_port(),
    }
    with tempfile.TemporaryDirectory(prefix="a3s-pebble-") as temp:
        directory = Path(temp)
        ca, cert, key = _certificates(directory)
        config = _config(directory, cert, key, ports)
        pebble = Pebble(
            directory_url=f"https://127.0.0.1:{ports['acme']}/dir",
            ca_file=str(ca),
            http_port=ports["http"],
            tls_port=ports["tls"],
            management_url=f"http://127.0.0.1:{ports['challtestsrv']}",
            dns_port=ports["dns"],
            pebble_management_url=f"https://127.0.0.1:{ports['management']}",
        )
        pebble_env = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": str(nonce_reject),
            "PEBBLE_AUTHZREUSE": "0",
            **(env or {}),
        }
        processes = _Processes(directory)
        try:
            processes.start(
                "pebble-challtestsrv",
                [
                    challtestsrv_path,
                    *("-http01", "", "-https01", "", "-tlsalpn01", ""),
                    *("-dns01", f"127.0.0.1:{ports['dns']}"),
                    *("-management", f"127.0.0.1:{ports['challtestsrv']}"),
                    *("-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""),
                ],
            )
            processes.start(
                "pebble",
                [
                    *(pebble_path, "-config", str(config)),
                    *("-dnsserver", dns_server or f"127.0.0.1:{ports['dns']}"),
                ],
                env=pebble_env,
            )
            _wait_ready(pebble, processes)
            yield pebble
        finally:
            processes.stop()
