"""Answering ACME validations on the listeners (server/acme_answer.py, SPEC §12.2), through a
real in-process ``Gateway`` whose ``ChallengeBoard`` the test fills, and real clients.

HTTP-01: on a plaintext entrypoint ``GET``/``HEAD /.well-known/acme-challenge/<token>`` for a
pending token is answered before redirects, routing and middlewares; a POST, an unknown token
or a TLS entrypoint is routed like any request; a token another gateway wrote into the shared
``<acme_storage_path>/challenges/`` is answered when an HTTP-01 ACME entrypoint uses that
storage. TLS-ALPN-01: while a challenge certificate is pending, a client offering
``acme-tls/1`` for that name gets it (and nothing else), every other client the normal
certificate and service.

Real sockets on 127.0.0.1 and trio's real clock; every client wait is bounded.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import h2.config
import h2.connection
import h2.events
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

import a3s_gateway.server.listeners as listeners_module
from a3s_gateway.acme.board import ChallengeBoard
from a3s_gateway.acme.keys import key_authorization_digest, tls_alpn_certificate
from a3s_gateway.acme.storage import AcmeStorage
from a3s_gateway.app import Gateway
from a3s_gateway.server import acme_answer
from tests.support.gateway import LOCAL, GatewayHandle, RawClient, RawResponse, free_port, load
from tests.support.origin import Origin
from tests.support.tls import Authority, TlsConnection, TlsResponse, served_names

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

TOKEN: Final = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
KEY_AUTHORIZATION: Final = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
OTHER_TOKEN: Final = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
CHALLENGE: Final = f"/.well-known/acme-challenge/{TOKEN}"
SHOP: Final = "shop.example.test"
#: RFC 8737 id-pe-acmeIdentifier.
ACME_IDENTIFIER: Final = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
#: Bound on one client step (connect, a response, a handshake, a close).
WAIT: Final = 5.0


# -- the gateway --------------------------------------------------------------------------


@dataclass
class Served:
    """A running gateway and its bound ports by entrypoint name."""

    gateway: Gateway
    ports: dict[str, int]

    def served_total(self, kind: str) -> float:
        """``a3s_acme_challenges_served_total{type=kind}``."""
        handle = GatewayHandle(self.gateway, 0)
        return handle.metric("a3s_acme_challenges_served_total", type=kind)


@asynccontextmanager
async def serving(text: str, board: ChallengeBoard) -> AsyncIterator[Served]:
    """Serve ``text`` with ``board`` as the gateway's challenges until the block ends."""
    gateway = Gateway(load(text), challenges=board)
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve)
        ports = {name: bound[0][1] for name, bound in gateway.addresses().items()}
        try:
            yield Served(gateway, ports)
        finally:
            with trio.move_on_after(WAIT) as cleanup:
                cleanup.shield = True
                await gateway.shutdown(0.5)
            if cleanup.cancelled_caught:
                nursery.cancel_scope.cancel()


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("app")
    await nursery.start(server.serve)
    return server


def service(origin: Origin) -> str:
    return (
        'services "app" {\n  load_balancer {\n'
        f'    servers = [{{ url = "http://{LOCAL}:{origin.port}" }}]\n  }}\n}}\n'
        "shutdown_timeout_secs = 1\n"
    )


def router(rule: str, *, middlewares: Sequence[str] = (), entrypoints: str = "") -> str:
    listed = ", ".join(f'"{name}"' for name in middlewares)
    return (
        f'routers "app" {{\n  rule = "{rule}"\n  service = "app"\n'
        f"  middlewares = [{listed}]\n{entrypoints}}}\n"
    )


def plain_entrypoint(extra: str = "") -> str:
    return f'entrypoints "web" {{\n  address = "{LOCAL}:0"\n{extra}}}\n'


def tls_entrypoint(tls: str, *, port: int = 0, name: str = "websecure") -> str:
    return (
        f'entrypoints "{name}" {{\n  address = "{LOCAL}:{port}"\n  tls {{\n{tls}  }}\n'
        '  timeouts {\n    handshake = "3s"\n  }\n}\n'
    )


def acme_tls(storage: Path, challenge: str, pair: tuple[Path, Path] | None = None) -> str:
    """The lines of a ``tls`` block with ``acme = true`` (and ``pair`` as cert_file/key_file)."""
    files = "" if pair is None else f'    cert_file = "{pair[0]}"\n    key_file = "{pair[1]}"\n'
    return (
        f"{files}    acme = true\n"
        '    acme_email = "ops@example.test"\n'
        f'    acme_storage_path = "{storage}"\n'
        f'    acme_challenge = "{challenge}"\n'
    )


def pending_board() -> ChallengeBoard:
    board = ChallengeBoard()
    board.add_http(TOKEN, KEY_AUTHORIZATION)
    return board


# -- plaintext clients ----------------------------------------------------------------------


async def request(
    client: RawClient,
    target: str,
    method: str = "GET",
    *,
    headers: Sequence[tuple[str, str]] = (),
) -> RawResponse:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {SHOP}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if method == "POST":
        lines.append("Content-Length: 0")
    assert await client.send(("\r\n".join(lines) + "\r\n\r\n").encode())
    with trio.fail_after(WAIT):
        response = await client.response(method.encode())
    assert response is not None
    assert response.complete
    return response


async def fetch(
    port: int, target: str, method: str = "GET", *, headers: Sequence[tuple[str, str]] = ()
) -> RawResponse:
    """One request on a new connection."""
    with trio.fail_after(WAIT):
        client = await RawClient.connect(port)
    try:
        return await request(client, target, method, headers=headers)
    finally:
        await client.aclose()


def assert_answered(response: RawResponse, *, head: bool = False) -> None:
    assert response.status == 200
    assert response.header(b"content-type") == b"text/plain"
    assert response.header(b"cache-control") == b"no-store"
    assert response.header(b"content-length") == str(len(KEY_AUTHORIZATION)).encode()
    assert response.body == (b"" if head else KEY_AUTHORIZATION.encode())


# -- HTTP-01 --------------------------------------------------------------------------------


async def test_a_pending_token_is_answered_and_others_are_not(origin: Origin) -> None:
    text = plain_entrypoint() + router("PathPrefix(`/app`)") + service(origin)
    async with serving(text, pending_board()) as gw:
        port = gw.ports["web"]
        assert_answered(await fetch(port, CHALLENGE))
        assert_answered(await fetch(port, CHALLENGE, "HEAD"), head=True)
        assert_answered(await fetch(port, f"{CHALLENGE}?probe=1&x=%20"))
        # Not an answer: routed, and no route matches.
        assert (await fetch(port, CHALLENGE, "POST")).status == 404
        assert (await fetch(port, f"/.well-known/acme-challenge/{OTHER_TOKEN}")).status == 404
        assert (await fetch(port, f"{CHALLENGE}/more")).status == 404
        assert (await fetch(port, "/.well-known/acme-challenge/")).status == 404
        assert gw.served_total("http-01") == 3
        assert gw.served_total("tls-alpn-01") == 0
    assert origin.requests == []


async def test_a_catch_all_routers_backend_gets_what_is_not_pending(origin: Origin) -> None:
    text = plain_entrypoint() + router("PathPrefix(`/`)") + service(origin)
    board = pending_board()
    async with serving(text, board) as gw:
        port = gw.ports["web"]
        with trio.fail_after(WAIT):
            client = await RawClient.connect(port)
        try:  # one connection: the answer keeps it open for the next request
            assert_answered(await request(client, CHALLENGE))
            posted = await request(client, CHALLENGE, "POST")
            assert posted.status == 200
            other = await request(client, f"/.well-known/acme-challenge/{OTHER_TOKEN}")
            assert other.status == 200
            assert_answered(await request(client, CHALLENGE))
        finally:
            await client.aclose()
        board.remove_http(TOKEN)  # validated: now routed like any path
        assert (await fetch(port, CHALLENGE)).status == 200
        assert gw.served_total("http-01") == 2
    routed = [(r.method, r.target) for r in origin.completed]
    assert routed == [
        (b"POST", CHALLENGE.encode()),
        (b"GET", f"/.well-known/acme-challenge/{OTHER_TOKEN}".encode()),
        (b"GET", CHALLENGE.encode()),
    ]


async def test_answered_before_the_redirect_and_not_on_the_tls_entrypoint(
    origin: Origin, tmp_path: Path
) -> None:
    authority = Authority(tmp_path / "pki")
    cert, key = authority.server_pair("shop", SHOP)
    tls_port = free_port()
    text = (
        plain_entrypoint('  redirect_to = "websecure"\n')
        + tls_entrypoint(f'    cert_file = "{cert}"\n    key_file = "{key}"\n', port=tls_port)
        + router("PathPrefix(`/`)")
        + service(origin)
    )
    async with serving(text, pending_board()) as gw:
        port = gw.ports["web"]
        assert_answered(await fetch(port, CHALLENGE))
        assert_answered(await fetch(port, CHALLENGE, "HEAD"), head=True)
        moved = await fetch(port, "/shop")
        assert moved.status == 308
        assert moved.header(b"location") == f"https://{SHOP}:{tls_port}/shop".encode()
        # A challenge path that is not pending is routed as before (never redirected).
        other = await fetch(port, f"/.well-known/acme-challenge/{OTHER_TOKEN}")
        assert other.status == 200
        # Over TLS the same path is an ordinary request: routed to the backend.
        client = authority.client_context()
        with trio.fail_after(WAIT):
            connection = await TlsConnection.open(tls_port, SHOP, client)
        try:
            routed = await connection.get(CHALLENGE, host=SHOP)
        finally:
            await connection.aclose()
        assert routed.status == 200
        assert routed.body != KEY_AUTHORIZATION.encode()
        assert gw.served_total("http-01") == 2
    assert [r.target for r in origin.completed] == [
        f"/.well-known/acme-challenge/{OTHER_TOKEN}".encode(),
        CHALLENGE.encode(),
    ]


@pytest.mark.parametrize(
    "middleware",
    [
        'middlewares "guard" {\n  type = "ip-allow"\n  allowed_ips = ["192.0.2.0/24"]\n}\n',
        'middlewares "guard" {\n  type = "basic-auth"\n  username = "ops"\n'
        '  password = "not-sent-by-the-ca"\n}\n',
    ],
    ids=["ip-allow", "basic-auth"],
)
async def test_a_guarded_catch_all_router_does_not_hide_the_answer(
    origin: Origin, middleware: str
) -> None:
    text = (
        plain_entrypoint()
        + router("PathPrefix(`/`)", middlewares=["guard"])
        + middleware
        + service(origin)
    )
    async with serving(text, pending_board()) as gw:
        port = gw.ports["web"]
        assert_answered(await fetch(port, CHALLENGE))
        refused = await fetch(port, f"/.well-known/acme-challenge/{OTHER_TOKEN}")
        assert refused.status in (401, 403)
        assert (await fetch(port, "/anything")).status == refused.status
    assert origin.requests == []


async def test_a_token_in_the_shared_storage_is_answered(origin: Origin, tmp_path: Path) -> None:
    storage = tmp_path / "acme"
    text = (
        plain_entrypoint()
        + tls_entrypoint(acme_tls(storage, "http-01"))
        + router("PathPrefix(`/`)")
        + service(origin)
    )
    board = ChallengeBoard()  # nothing pending in this process
    async with serving(text, board) as gw:
        port = gw.ports["web"]
        assert (await fetch(port, CHALLENGE)).status == 200  # not stored yet: routed
        await trio.to_thread.run_sync(
            AcmeStorage(str(storage)).write_challenge, TOKEN, KEY_AUTHORIZATION
        )
        assert_answered(await fetch(port, CHALLENGE))
        assert_answered(await fetch(port, f"{CHALLENGE}?x=1"))
        assert_answered(await fetch(port, CHALLENGE, "HEAD"), head=True)
        assert (await fetch(port, CHALLENGE, "POST")).status == 200  # routed
        assert gw.served_total("http-01") == 3
    assert [r.method for r in origin.completed] == [b"GET", b"POST"]


async def test_the_storage_of_a_non_http01_entrypoint_is_not_read(
    origin: Origin, tmp_path: Path
) -> None:
    storage = tmp_path / "acme"
    AcmeStorage(str(storage)).write_challenge(TOKEN, KEY_AUTHORIZATION)
    text = (
        plain_entrypoint()
        + tls_entrypoint(acme_tls(storage, "tls-alpn-01"))
        + router("PathPrefix(`/`)")
        + service(origin)
    )
    async with serving(text, ChallengeBoard()) as gw:
        response = await fetch(gw.ports["web"], CHALLENGE)
        assert response.status == 200
        assert response.body != KEY_AUTHORIZATION.encode()
        assert gw.served_total("http-01") == 0
    assert [r.target for r in origin.completed] == [CHALLENGE.encode()]


# -- TLS-ALPN-01 ----------------------------------------------------------------------------


def any_certificate(protocols: Sequence[str]) -> ssl.SSLContext:
    """A client that accepts any certificate (to see which one is served)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(list(protocols))
    return context


async def handshake(
    port: int, server_name: str, context: ssl.SSLContext
) -> trio.SSLStream[trio.SocketStream]:
    with trio.fail_after(WAIT):
        tcp = await trio.open_tcp_stream(LOCAL, port)
        stream = trio.SSLStream(tcp, context, server_hostname=server_name)
        try:
            await stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    return stream


def leaf_of(stream: trio.SSLStream[trio.SocketStream]) -> x509.Certificate:
    der = stream.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def closed_by_server(stream: trio.SSLStream[trio.SocketStream]) -> bool:
    """Whether the server ends the connection (EOF, with or without close_notify)."""
    with trio.fail_after(WAIT):
        try:
            data = await stream.receive_some(4096)
        except trio.BrokenResourceError:
            return True
    return data == b""


async def h2_get(stream: trio.SSLStream[trio.SocketStream], path: str) -> int:
    """One HTTP/2 GET on ``stream``; its status."""
    connection = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    connection.initiate_connection()
    headers = [(":method", "GET"), (":scheme", "https"), (":authority", SHOP), (":path", path)]
    connection.send_headers(1, headers, end_stream=True)
    await stream.send_all(connection.data_to_send())
    status = 0
    with trio.fail_after(WAIT):
        while True:
            data = await stream.receive_some(65536)
            assert data, "the gateway closed the connection before the response ended"
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamEnded):
                    return status
            await stream.send_all(connection.data_to_send())


@dataclass
class AlpnSetup:
    authority: Authority
    board: ChallengeBoard
    text: str
    challenge: tuple[bytes, bytes]


@pytest.fixture
def alpn_setup(origin: Origin, tmp_path: Path) -> AlpnSetup:
    authority = Authority(tmp_path / "pki")
    pair = authority.server_pair("shop", SHOP)
    text = (
        tls_entrypoint(acme_tls(tmp_path / "acme", "tls-alpn-01", pair))
        + router(f"Host(`{SHOP}`)")
        + service(origin)
    )
    now = datetime.datetime.now(datetime.UTC)
    challenge = tls_alpn_certificate(SHOP, KEY_AUTHORIZATION, now)
    return AlpnSetup(authority, ChallengeBoard(), text, challenge)


def dns_names(leaf: x509.Certificate) -> list[str]:
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return names.value.get_values_for_type(x509.DNSName)


def is_challenge_certificate(leaf: x509.Certificate) -> bool:
    try:
        extension = leaf.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    except x509.ExtensionNotFound:
        return False
    assert extension.critical
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    # The DER OCTET STRING of the SHA-256 of the key authorization (RFC 8737 §3).
    assert extension.value.value == b"\x04\x20" + key_authorization_digest(KEY_AUTHORIZATION)
    return True


async def test_a_validation_gets_the_challenge_certificate_then_the_connection_closes(
    alpn_setup: AlpnSetup, origin: Origin
) -> None:
    board = alpn_setup.board
    board.add_alpn(SHOP, alpn_setup.challenge)
    async with serving(alpn_setup.text, board) as gw:
        port = gw.ports["websecure"]
        for server_name in (SHOP, "Shop.Example.TEST"):
            stream = await handshake(port, server_name, any_certificate(["acme-tls/1"]))
            try:
                assert stream.selected_alpn_protocol() == "acme-tls/1"
                leaf = leaf_of(stream)
                assert is_challenge_certificate(leaf)
                assert dns_names(leaf) == [SHOP]
                assert leaf.public_bytes(Encoding.PEM) == alpn_setup.challenge[0]
                assert await closed_by_server(stream)
            finally:
                await trio.aclose_forcefully(stream)
        assert gw.served_total("tls-alpn-01") == 2
        assert gw.served_total("http-01") == 0
    assert origin.requests == []


async def test_other_clients_get_the_normal_certificate_while_a_challenge_is_pending(
    alpn_setup: AlpnSetup, origin: Origin
) -> None:
    board = alpn_setup.board
    board.add_alpn(SHOP, alpn_setup.challenge)
    verified = alpn_setup.authority.client_context()
    verified.set_alpn_protocols(["h2", "http/1.1"])
    async with serving(alpn_setup.text, board) as gw:
        port = gw.ports["websecure"]
        # A browser-like client for the pending name: the real certificate, verified, and h2.
        stream = await handshake(port, SHOP, verified)
        try:
            assert stream.selected_alpn_protocol() == "h2"
            assert served_names(stream) == [SHOP]
            assert not is_challenge_certificate(leaf_of(stream))
            assert await h2_get(stream, "/over-h2") == 200
        finally:
            await trio.aclose_forcefully(stream)
        # An HTTP/1.1 client too.
        http1 = alpn_setup.authority.client_context()
        http1.set_alpn_protocols(["http/1.1"])
        with trio.fail_after(WAIT):
            connection = await TlsConnection.open(port, SHOP, http1)
        try:
            response = await connection.get("/over-http1", host=SHOP)
        finally:
            await connection.aclose()
        assert response.status == 200
        assert response.names == (SHOP,)
        # acme-tls/1 for a name that is not pending: the normal certificate, no ALPN, and the
        # connection serves HTTP/1.1 (the peeked hello was replayed into the handshake).
        stream = await handshake(port, "other.example.test", any_certificate(["acme-tls/1"]))
        try:
            assert stream.selected_alpn_protocol() is None
            leaf = leaf_of(stream)
            assert not is_challenge_certificate(leaf)
            assert dns_names(leaf) == [SHOP]
            assert await http1_get(stream, "/not-pending") == 200
        finally:
            await trio.aclose_forcefully(stream)
        assert gw.served_total("tls-alpn-01") == 0
    paths = sorted(r.target for r in origin.completed)
    assert paths == [b"/not-pending", b"/over-h2", b"/over-http1"]


async def http1_get(stream: trio.SSLStream[trio.SocketStream], path: str) -> int:
    """One HTTP/1.1 GET on ``stream``; its status (the body is read to its end)."""
    client = RawClient(stream)  # type: ignore[arg-type] # it only sends and receives bytes
    lines = f"GET {path} HTTP/1.1\r\nHost: {SHOP}\r\n\r\n"
    assert await client.send(lines.encode())
    with trio.fail_after(WAIT):
        response = await client.response()
    assert response is not None
    assert response.complete
    return response.status


async def test_the_fallback_certificate_serves_beside_a_pending_challenge(
    origin: Origin, tmp_path: Path
) -> None:
    storage = tmp_path / "acme"
    text = (
        tls_entrypoint(acme_tls(storage, "tls-alpn-01"))
        + router(f"Host(`{SHOP}`)")
        + service(origin)
    )
    board = ChallengeBoard()
    now = datetime.datetime.now(datetime.UTC)
    board.add_alpn(SHOP, tls_alpn_certificate(SHOP, KEY_AUTHORIZATION, now))
    async with serving(text, board) as gw:
        port = gw.ports["websecure"]
        stream = await handshake(port, SHOP, any_certificate(["acme-tls/1"]))
        try:
            assert stream.selected_alpn_protocol() == "acme-tls/1"
            assert is_challenge_certificate(leaf_of(stream))
            assert await closed_by_server(stream)
        finally:
            await trio.aclose_forcefully(stream)
        stream = await handshake(port, SHOP, any_certificate(["http/1.1"]))
        try:
            leaf = leaf_of(stream)
            assert not is_challenge_certificate(leaf)
            common = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            assert [attribute.value for attribute in common] == ["a3s-gateway default"]
            assert await http1_get(stream, "/fallback") == 200
        finally:
            await trio.aclose_forcefully(stream)
        assert gw.served_total("tls-alpn-01") == 1
    assert (storage / "fallback").is_dir()  # its files: tests/server/test_tls_fallback.py


async def test_nothing_pending_means_no_peek(
    alpn_setup: AlpnSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    peeked: list[str] = []
    real = acme_answer.tls_alpn_challenge

    async def recording(*args: Any) -> trio.abc.HalfCloseableStream | None:
        peeked.append("peek")
        return await real(*args)

    monkeypatch.setattr(listeners_module, "tls_alpn_challenge", recording)
    board = alpn_setup.board
    async with serving(alpn_setup.text, board) as gw:
        port = gw.ports["websecure"]
        client = alpn_setup.authority.client_context()
        client.set_alpn_protocols(["http/1.1"])
        with trio.fail_after(WAIT):
            response = (await tls_get(port, client, "/plain")).status
        assert response == 200
        assert peeked == []
        # The same request while a challenge is pending goes through the peek (and is served).
        board.add_alpn(SHOP, alpn_setup.challenge)
        assert (await tls_get(port, client, "/peeked")).status == 200
        assert peeked == ["peek"]
        board.remove_alpn(SHOP)
        assert (await tls_get(port, client, "/plain-again")).status == 200
        assert peeked == ["peek"]


async def tls_get(port: int, context: ssl.SSLContext, path: str) -> TlsResponse:
    with trio.fail_after(WAIT):
        connection = await TlsConnection.open(port, SHOP, context)
        try:
            return await connection.get(path, host=SHOP)
        finally:
            await connection.aclose()
