"""TLS termination end to end (issue #17 items 1, 2, 5; SPEC §3.8, §5.9, §9).

An in-process ``Gateway`` with a ``tls`` entrypoint in front of a plain test origin, reached by
real clients: the ``curl`` binary (``--resolve``, ``--cacert``, ``--cert``) and Python ``ssl``
clients (``tests/support/tls.py``), with certificates made by ``trustme``. Real sockets mean
trio's real clock; waits are bounded, conditions are polled with a bound, never slept on.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import pytest
import trio

from a3s_gateway.config.schema import Config
from a3s_gateway.management.api import listener_document
from a3s_gateway.management.server import GatewayAdapter
from tests.support.cli import start_gateway
from tests.support.gateway import (
    CLIENT_WAIT,
    GatewayHandle,
    config_text,
    curl,
    curl_lines,
    free_port,
    load,
    running_gateway,
    server_entry,
)
from tests.support.origin import Origin
from tests.support.tls import Authority, TlsConnection, tls_request

pytestmark = pytest.mark.integration

#: The gateway's handshake timeout in these tests.
HANDSHAKE: Final = 2.0


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("a")
    await nursery.start(server.serve)
    return server


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "pki")


def tls_block(
    pairs: list[tuple[Path, Path]], extra: str = "", *, handshake: float = HANDSHAKE
) -> str:
    """The lines of an entrypoint with ``tls``: the first pair is ``cert_file``/``key_file``,
    the others ``certificates``."""
    (cert, key), *others = pairs
    listed = ", ".join(f'{{ cert_file = "{c}", key_file = "{k}" }}' for c, k in others)
    return (
        f'  tls {{\n    cert_file = "{cert}"\n    key_file = "{key}"\n'
        f"    certificates = [{listed}]\n{extra}\n  }}\n"
        f'  timeouts {{\n    handshake = "{handshake}s"\n  }}\n'
    )


@asynccontextmanager
async def tls_gateway(
    origin: Origin, pairs: list[tuple[Path, Path]], extra: str = "", *, more: str = ""
) -> AsyncIterator[GatewayHandle]:
    text = config_text([server_entry(origin)], entrypoint=tls_block(pairs, extra), more=more)
    async with running_gateway(text) as handle:
        yield handle


def resolve(handle: GatewayHandle, *names: str) -> list[str]:
    out: list[str] = []
    for name in names:
        out += ["--resolve", f"{name}:{handle.port}:127.0.0.1"]
    return out


def echoed_headers(body: bytes) -> dict[str, str]:
    document = json.loads(body)
    return {key.lower(): value for key, value in document["headers"]}


async def metric_lines(handle: GatewayHandle, family: str) -> list[str]:
    text = await handle.gateway.metrics_exposition()
    assert text is not None
    return [line for line in text.decode().splitlines() if line.startswith(family)]


# -- certificate choice -----------------------------------------------------------------------


async def test_two_names_get_their_own_certificates_through_curl(
    origin: Origin, authority: Authority
) -> None:
    first = authority.server_pair("first", "one.example.test")
    second = authority.server_pair("second", "two.example.test")
    async with tls_gateway(origin, [first, second]) as handle:
        for name in ("one.example.test", "two.example.test"):
            url = f"https://{name}:{handle.port}/hello"
            done = await curl(*resolve(handle, name), "--cacert", str(authority.ca_file), url)
            assert done.code == 0, done.stderr
            assert done.response.status == 200
            assert echoed_headers(done.response.body)["x-forwarded-proto"] == "https"
            code, lines, stderr = await curl_lines(
                *resolve(handle, name),
                "--cacert",
                str(authority.ca_file),
                "-o",
                "/dev/null",
                "-w",
                "%{certs}",
                url,
            )
            assert code == 0, stderr
            sans = [line for line in lines if "Subject Alternative Name" in line]
            assert sans[0].endswith(f"DNS:{name}"), sans
        # Python's client: each name is verified against its own certificate.
        context = authority.client_context()
        one = await tls_request(handle.port, "one.example.test", context)
        two = await tls_request(handle.port, "two.example.test", context)
        assert one.names == ("one.example.test",)
        assert two.names == ("two.example.test",)


async def test_wildcard_then_default_choice(origin: Origin, authority: Authority) -> None:
    default = authority.server_pair("default", "www.example.test")
    wildcard = authority.server_pair("wild", "*.api.example.test")
    exact = authority.server_pair("exact", "v1.api.example.test")
    async with tls_gateway(origin, [default, wildcard, exact]) as handle:
        context = authority.client_context()
        context.check_hostname = False  # the default certificate's name differs on purpose
        assert (await tls_request(handle.port, "v1.api.example.test", context)).names == (
            "v1.api.example.test",
        )
        assert (await tls_request(handle.port, "v2.api.example.test", context)).names == (
            "*.api.example.test",
        )
        for other in ("a.v2.api.example.test", "api.example.test", "unknown.test", None):
            got = await tls_request(handle.port, other, context)
            assert got.names == ("www.example.test",), other
            assert got.status == 200


async def test_unknown_name_with_sni_strict_fails_the_handshake(
    origin: Origin, authority: Authority
) -> None:
    pair = authority.server_pair("only", "only.example.test")
    async with tls_gateway(origin, [pair], "    sni_strict = true") as handle:
        context = authority.client_context()
        context.check_hostname = False
        with pytest.raises((ssl.SSLError, trio.BrokenResourceError)):
            await tls_request(handle.port, "other.example.test", context)
        ok = await tls_request(handle.port, "only.example.test", authority.client_context())
        assert ok.status == 200
        lines = await metric_lines(handle, "a3s_tls_handshake_errors_total{")
        assert 'a3s_tls_handshake_errors_total{entrypoint="web",reason="unknown_sni"} 1.0' in lines


async def test_tls_12_is_refused_when_min_version_is_13(
    origin: Origin, authority: Authority
) -> None:
    pair = authority.server_pair("site", "site.example.test")
    async with tls_gateway(origin, [pair], '    min_version = "1.3"') as handle:
        old = authority.client_context(max_version="1.2")
        with pytest.raises((ssl.SSLError, trio.BrokenResourceError)):
            await tls_request(handle.port, "site.example.test", old)
        done = await curl(
            *resolve(handle, "site.example.test"),
            "--cacert",
            str(authority.ca_file),
            "--tls-max",
            "1.2",
            f"https://site.example.test:{handle.port}/",
        )
        assert done.code != 0
        fresh = await tls_request(handle.port, "site.example.test", authority.client_context())
        assert fresh.version == "TLSv1.3"
        lines = await metric_lines(handle, "a3s_tls_handshake_errors_total{")
        assert any('reason="protocol_version"' in line for line in lines), lines


# -- client certificates -------------------------------------------------------------------------


async def test_mtls_require(origin: Origin, authority: Authority, tmp_path: Path) -> None:
    pair = authority.server_pair("site", "site.example.test")
    clients = Authority(tmp_path / "clients", name="clients")
    stranger = Authority(tmp_path / "stranger", name="stranger")
    extra = f'    client_auth = "require"\n    client_ca_file = "{clients.ca_file}"'
    async with tls_gateway(origin, [pair], extra) as handle:
        good = clients.client_pem("alice", "alice@example.test")
        done = await curl(
            *resolve(handle, "site.example.test"),
            "--cacert",
            str(authority.ca_file),
            "--cert",
            str(good),
            f"https://site.example.test:{handle.port}/",
        )
        assert done.code == 0, done.stderr
        assert done.response.status == 200
        for client_pem in (None, stranger.client_pem("mallory", "mallory@example.test")):
            context = authority.client_context(client_pem=client_pem)
            with pytest.raises((ssl.SSLError, trio.BrokenResourceError)):
                # TLS 1.3: the client finishes first and learns of the refusal on its read.
                await tls_request(handle.port, "site.example.test", context)
        lines = await metric_lines(handle, "a3s_tls_handshake_errors_total{")
        assert 'a3s_tls_handshake_errors_total{entrypoint="web",reason="bad_certificate"} 2.0' in (
            lines
        )


async def test_mtls_request(origin: Origin, authority: Authority, tmp_path: Path) -> None:
    pair = authority.server_pair("site", "site.example.test")
    clients = Authority(tmp_path / "clients", name="clients")
    extra = f'    client_auth = "request"\n    client_ca_file = "{clients.ca_file}"'
    async with tls_gateway(origin, [pair], extra) as handle:
        anonymous = await tls_request(handle.port, "site.example.test", authority.client_context())
        assert anonymous.status == 200
        good = clients.client_pem("alice", "alice@example.test")
        context = authority.client_context(client_pem=good)
        assert (await tls_request(handle.port, "site.example.test", context)).status == 200


# -- request facts ------------------------------------------------------------------------------


async def test_request_facts_over_tls(origin: Origin, authority: Authority, tmp_path: Path) -> None:
    pair = authority.server_pair("site", "site.example.test")
    log_path = tmp_path / "access.log"
    sticky = '    sticky {\n      cookie = "lb"\n    }\n'
    text = config_text(
        [server_entry(origin)],
        entrypoint=tls_block([pair]),
        balancer=sticky,
        more=f'observability {{\n  access_log_path = "{log_path}"\n}}\n',
    )
    async with running_gateway(text) as handle:
        got = await tls_request(handle.port, "Site.Example.Test", authority.client_context())
        assert got.status == 200
        assert echoed_headers(got.body)["x-forwarded-proto"] == "https"
        cookie = got.headers[b"set-cookie"].decode()
        assert "; Secure" in cookie
    # The drain at the end of the block flushed the access log.
    line = json.loads(log_path.read_text().splitlines()[0])
    assert line["scheme"] == "https"
    assert line["tls_version"] == "1.3"
    assert line["sni"] == "site.example.test"
    assert line["client_ip"] == "127.0.0.1"


# -- hot certificate reload -----------------------------------------------------------------------


def replace_pair(authority: Authority, target: tuple[Path, Path], *names: str) -> None:
    """Renew ``target`` in place the way certificate tools do: new files renamed over it."""
    cert, key = authority.server_pair("renewed", *names)
    os.replace(cert, target[0])
    os.replace(key, target[1])


async def test_rotation_keeps_open_connections_and_a_broken_pair_keeps_the_old_one(
    origin: Origin, authority: Authority, tmp_path: Path
) -> None:
    pair = authority.server_pair("site", "site.example.test", "v1.example.test")
    text = config_text([server_entry(origin)], entrypoint=tls_block([pair]))
    async with running_gateway(text) as handle:
        gateway = handle.gateway
        context = authority.client_context()
        kept = await TlsConnection.open(handle.port, "site.example.test", context)
        try:
            assert (await kept.get()).names == ("site.example.test", "v1.example.test")
            replace_pair(authority, pair, "site.example.test", "v2.example.test")
            await gateway.reload(load_text_config(text))  # a reload re-checks the files
            # The open connection keeps its certificate and keeps working ...
            again = await kept.get()
            assert again.status == 200
            assert again.names == ("site.example.test", "v1.example.test")
            # ... and a new handshake gets the new one.
            fresh = await tls_request(handle.port, "site.example.test", context)
            assert fresh.names == ("site.example.test", "v2.example.test")
        finally:
            await kept.aclose()

        # A broken replacement (a key that does not fit) keeps the last good certificate.
        other_cert, _ = authority.server_pair("other", "site.example.test", "v3.example.test")
        os.replace(other_cert, pair[0])
        await gateway.reload(load_text_config(text))
        still = await tls_request(handle.port, "site.example.test", context)
        assert still.names == ("site.example.test", "v2.example.test")
        errors = await metric_lines(handle, "a3s_tls_reload_errors_total{")
        assert errors == ['a3s_tls_reload_errors_total{entrypoint="web"} 1.0']
        expiry = await metric_lines(handle, "a3s_tls_certificate_not_after_seconds{")
        assert len(expiry) == 1
        assert expiry[0].startswith(
            'a3s_tls_certificate_not_after_seconds{entrypoint="web",name="site.example.test"}'
        )
        [listener] = GatewayAdapter(gateway).listeners()
        document = listener_document(listener)
        tls = document["tls"]
        assert isinstance(tls, dict)
        assert tls["names"] == ["site.example.test", "v2.example.test"]
        assert isinstance(tls["not_after"], str)
        assert tls["not_after"].endswith("Z")


def load_text_config(text: str) -> Config:
    return load(text)


# -- bad input ------------------------------------------------------------------------------------


async def raw_until_closed(port: int, payload: bytes, *, then_close: bool = False) -> float:
    """Send ``payload`` on a plain TCP connection and wait (bounded) for the gateway to close
    it; returns how long that took."""
    started = trio.current_time()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(payload)
        if then_close:
            await stream.send_eof()
        with trio.fail_after(HANDSHAKE + CLIENT_WAIT):
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not data:
                    break
    finally:
        await trio.aclose_forcefully(stream)
    return trio.current_time() - started


#: The first bytes of a TLS ClientHello record (handshake, TLS 1.0 record version, 512 bytes).
HELLO_START: Final = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


async def test_bad_input_is_closed_counted_and_harms_no_one(
    origin: Origin, authority: Authority
) -> None:
    pair = authority.server_pair("site", "site.example.test")
    async with tls_gateway(origin, [pair]) as handle:
        context = authority.client_context()
        good = await TlsConnection.open(handle.port, "site.example.test", context)
        try:
            # A plain-HTTP client on the TLS port, and garbage.
            await raw_until_closed(handle.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await raw_until_closed(handle.port, b"\x00" * 64)
            # A truncated ClientHello: the client gives up half way.
            await raw_until_closed(handle.port, HELLO_START, then_close=True)
            # A client that stalls mid-handshake is closed at the handshake timeout, and a
            # client meanwhile is served as usual.
            async with trio.open_nursery() as nursery:
                stalled: list[float] = []

                async def stall() -> None:
                    stalled.append(await raw_until_closed(handle.port, HELLO_START))

                nursery.start_soon(stall)
                ok = await tls_request(handle.port, "site.example.test", context)
                assert ok.status == 200
            assert HANDSHAKE - 0.5 <= stalled[0] <= HANDSHAKE + 5
            # The connection opened before all this still works.
            assert (await good.get()).status == 200
        finally:
            await good.aclose()
        lines = await metric_lines(handle, "a3s_tls_handshake_errors_total{")
        counts = {line.split('reason="')[1].split('"')[0]: line.rsplit(" ", 1)[1] for line in lines}
        assert counts == {"not_tls": "2.0", "eof": "1.0", "timeout": "1.0"}, lines


# -- through the CLI ------------------------------------------------------------------------------


async def test_https_through_the_cli(origin: Origin, authority: Authority, tmp_path: Path) -> None:
    first = authority.server_pair("first", "one.example.test")
    second = authority.server_pair("second", "*.two.example.test")
    port = free_port()
    config = tmp_path / "gateway.hcl"
    config.write_text(
        config_text([server_entry(origin)], entrypoint=tls_block([first, second]), port=port)
    )
    gateway = await start_gateway(str(config))
    try:
        with trio.fail_after(CLIENT_WAIT):
            line = await gateway.wait_for_line("listening entrypoint=web")
        assert "tls=yes" in line
        for name in ("one.example.test", "a.two.example.test"):
            done = await curl(
                *["--resolve", f"{name}:{port}:127.0.0.1"],
                "--cacert",
                str(authority.ca_file),
                f"https://{name}:{port}/",
            )
            assert done.code == 0, done.stderr
            assert echoed_headers(done.response.body)["x-forwarded-proto"] == "https"
        gateway.process.send_signal(signal.SIGTERM)
        with trio.fail_after(CLIENT_WAIT):
            code = await gateway.process.wait()
        assert code == 0
    finally:
        if gateway.process.returncode is None:
            gateway.process.kill()
        with trio.CancelScope(shield=True):
            await gateway.process.wait()


async def test_entrypoints_show_the_certificates_with_two_workers(
    origin: Origin, authority: Authority, tmp_path: Path
) -> None:
    """With ``--workers 2`` the supervisor's ``/entrypoints`` shows the names and expiry of the
    certificates the workers serve (they report them with their state)."""
    first = authority.server_pair("first", "one.example.test")
    second = authority.server_pair("second", "*.two.example.test")
    port, admin = free_port(), free_port()
    management = f'management {{\n  address = "127.0.0.1:{admin}"\n}}\n'
    config = tmp_path / "gateway.hcl"
    config.write_text(
        config_text([server_entry(origin)], entrypoint=tls_block([first, second]), port=port)
        + management
    )
    gateway = await start_gateway(str(config), "--workers", "2")
    try:
        with trio.fail_after(CLIENT_WAIT * 3):
            await gateway.wait_for_line("workers ready: 2")
        with trio.fail_after(CLIENT_WAIT):
            listed = await curl(f"http://127.0.0.1:{admin}/api/gateway/entrypoints")
        assert listed.response.status == 200, listed.response.body
        (web,) = [e for e in json.loads(listed.response.body) if e["name"] == "web"]
        tls = web["tls"]
        served = [c["names"] for c in tls["certificates"]]
        assert served == [["one.example.test"], ["*.two.example.test"]]
        assert tls["names"] == ["one.example.test", "*.two.example.test"]
        assert tls["not_after"]
        assert all(c["not_after"] for c in tls["certificates"])
        gateway.process.send_signal(signal.SIGTERM)
        with trio.fail_after(CLIENT_WAIT * 3):
            assert await gateway.process.wait() == 0
    finally:
        if gateway.process.returncode is None:
            gateway.process.kill()
        with trio.CancelScope(shield=True):
            await gateway.process.wait()
