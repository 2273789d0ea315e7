"""Dialling TLS backends (SPEC §3.10 ``upstream_tls``, §5.7 "TLS"): the handshake inside the
caller's deadline, failures named in OpenSSL's words, and one shared ``ssl.SSLContext`` per TLS
identity, rebuilt only when one of its files changed.

The backend is the real TLS origin of ``tests/support/tls_origin.py`` on 127.0.0.1 with
``trustme`` certificates; real sockets, trio's real clock, every wait bounded.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
import trio
import trustme

from a3s_gateway.upstream.connect_errors import CONNECT_REASONS, ConnectFailed
from a3s_gateway.upstream.dialer import (
    ALPN,
    TlsContexts,
    build_context,
    dial,
    handshake_failure,
)
from a3s_gateway.upstream.peer import Peer, TlsIdentity
from tests.support.tls_origin import LeafFiles, TlsOrigin, write_ca, write_leaf

WAIT = 20.0


class Files:
    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.other = trustme.CA()
        self.ca_file = write_ca(self.ca, directory / "ca.pem")
        self.other_file = write_ca(self.other, directory / "other.pem")
        self.server = write_leaf(self.ca.issue_cert("127.0.0.1", "a.test"), directory, "server")
        client = self.ca.issue_cert("client.test", common_name="dialer-client")
        self.client: LeafFiles = write_leaf(client, directory, "client")


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


async def serving(nursery: trio.Nursery, origin: TlsOrigin) -> TlsOrigin:
    await nursery.start(origin.serve)
    return origin


def tls_peer(origin: TlsOrigin, identity: TlsIdentity, server_name: str = "a.test") -> Peer:
    return Peer(
        "https", "127.0.0.1", origin.port, tls=True, server_name=server_name, identity=identity
    )


async def test_dial_completes_the_handshake_with_sni_alpn_and_client_certificate(
    nursery: trio.Nursery, files: Files
) -> None:
    origin = await serving(nursery, TlsOrigin(files.server, client_ca=files.ca_file))
    identity = TlsIdentity(
        ca_file=str(files.ca_file), cert_file=str(files.client.cert), key_file=str(files.client.key)
    )
    with trio.fail_after(WAIT):
        stream = await dial(tls_peer(origin, identity))
        async with stream:
            assert isinstance(stream, trio.SSLStream)
            assert stream.selected_alpn_protocol() == "http/1.1"
            await origin.wait_for(lambda: len(origin.connections) == 1)
    [conn] = origin.connections
    assert (conn.sni, conn.client, conn.alpn) == ("a.test", "dialer-client", "http/1.1")
    assert ALPN == ("http/1.1",)


@pytest.mark.parametrize(
    ("server_name", "trusted", "detail"),
    [
        ("a.test", "other", "certificate verify failed: unable to get local issuer certificate"),
        ("b.test", "ca", "certificate verify failed: Hostname mismatch"),
    ],
)
async def test_a_failed_verification_is_a_tls_connect_failure(
    nursery: trio.Nursery, files: Files, server_name: str, trusted: str, detail: str
) -> None:
    origin = await serving(nursery, TlsOrigin(files.server))
    ca_file = files.ca_file if trusted == "ca" else files.other_file
    peer = tls_peer(origin, TlsIdentity(ca_file=str(ca_file)), server_name)
    with trio.fail_after(WAIT), pytest.raises(ConnectFailed) as caught:
        await dial(peer)
    failure = caught.value
    assert failure.reason == "tls"
    assert failure.reason in CONNECT_REASONS
    assert failure.detail.startswith(f"TLS handshake failed: {detail}")
    assert str(failure) == failure.detail
    with trio.fail_after(WAIT):  # the origin saw the handshake fail: our socket was closed
        await origin.wait_for(lambda: origin.handshake_failures == 1)


async def test_verification_off_accepts_any_certificate(
    nursery: trio.Nursery, files: Files
) -> None:
    origin = await serving(nursery, TlsOrigin(files.server))
    peer = tls_peer(origin, TlsIdentity(ca_file=str(files.other_file), verify=False), "x.test")
    with trio.fail_after(WAIT):
        stream = await dial(peer)
        await stream.aclose()
    with trio.fail_after(WAIT):
        await origin.wait_for(lambda: len(origin.connections) == 1)
    assert origin.connections[0].sni == "x.test"  # the name is still sent


async def test_a_stalled_handshake_ends_with_the_callers_deadline() -> None:
    """No deadline of its own: the caller's scope cancels the handshake and the socket closes
    (the silent server then reads EOF)."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    peer = Peer("https", "127.0.0.1", port, tls=True, server_name="a.test")
    async with listener:
        with trio.move_on_after(0.2) as scope:
            await dial(peer)
        assert scope.cancelled_caught
        with trio.fail_after(WAIT):
            server_end = await listener.accept()
            async with server_end:
                data = b""
                while True:  # the ClientHello, then EOF
                    chunk = await server_end.receive_some()
                    if not chunk:
                        break
                    data += chunk
    assert data[:1] == b"\x16"  # a TLS handshake record was sent before the deadline


async def test_contexts_are_shared_per_identity_and_rebuilt_when_a_file_changes(
    files: Files, tmp_path: Path
) -> None:
    contexts = TlsContexts()
    ca_file = tmp_path / "rotating-ca.pem"
    ca_file.write_bytes(files.ca_file.read_bytes())
    identity = TlsIdentity(ca_file=str(ca_file))
    first = await contexts.get(identity)
    assert await contexts.get(TlsIdentity(ca_file=str(ca_file))) is first  # equal identity
    system = await contexts.get(TlsIdentity())
    assert system is not first
    assert len(contexts) == 2
    # A new CA bundle under the same name: a new context for new connections.
    ca_file.write_bytes(files.other_file.read_bytes() + files.ca_file.read_bytes())
    os.utime(ca_file, ns=(1, 1))
    second = await contexts.get(identity)
    assert second is not first
    assert await contexts.get(identity) is second
    # A broken replacement keeps the context that worked.
    ca_file.write_bytes(b"not a certificate")
    assert await contexts.get(identity) is second
    ca_file.unlink()
    assert await contexts.get(identity) is second


async def test_an_unusable_identity_is_a_tls_connect_failure(tmp_path: Path) -> None:
    contexts = TlsContexts()
    with pytest.raises(ConnectFailed) as caught:
        await contexts.get(TlsIdentity(ca_file=str(tmp_path / "missing.pem")))
    assert caught.value.reason == "tls"
    assert caught.value.detail.startswith("TLS settings unusable: ")
    assert len(contexts) == 0


def test_build_context(files: Files) -> None:
    verifying = build_context(TlsIdentity(ca_file=str(files.ca_file)))
    assert verifying.verify_mode is ssl.CERT_REQUIRED
    assert verifying.check_hostname
    assert verifying.minimum_version >= ssl.TLSVersion.TLSv1_2
    trusted = {cert["serialNumber"] for cert in verifying.get_ca_certs()}
    assert len(trusted) == 1  # only the CA file, not the system store
    insecure = build_context(TlsIdentity(verify=False))
    assert insecure.verify_mode is ssl.CERT_NONE
    assert not insecure.check_hostname
    with pytest.raises(ssl.SSLError):
        build_context(TlsIdentity(cert_file=str(files.client.cert), key_file=str(files.server.key)))


@pytest.mark.parametrize(
    ("error", "detail"),
    [
        (trio.BrokenResourceError(), "connection closed during the handshake"),
        (ssl.SSLEOFError(8, "EOF occurred"), "connection closed during the handshake"),
        (ConnectionResetError(104, "reset"), "connection reset during the handshake"),
    ],
)
def test_handshake_failure_words(error: BaseException, detail: str) -> None:
    assert handshake_failure(error) == detail


def test_an_ssl_error_reason_is_spelled_out() -> None:
    error = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    error.reason = "WRONG_VERSION_NUMBER"
    wrapped = trio.BrokenResourceError()
    wrapped.__cause__ = error
    assert handshake_failure(wrapped) == "wrong version number"
