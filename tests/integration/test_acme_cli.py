"""ACME certificates through the real CLI against a real Pebble CA (SPEC §12).

``python -m a3s_gateway run`` with a plaintext entrypoint on Pebble's HTTP-01 port and a TLS
entrypoint with ``acme = true`` on its TLS-ALPN-01 port (Pebble's DNS is
``pebble-challtestsrv``, which resolves every name to 127.0.0.1, so its validation requests
reach the gateway). Each test waits until a new handshake with the router's host name gets a
certificate that chains to Pebble's root, then requests through it; nothing is restarted.
Pebble's issuing root is new at every start, so a certificate that verifies was issued in
this test.

Every wait polls under a bounded deadline; the gateway is terminated and Pebble stopped at the
end.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import ssl
import stat
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import dns.message
import dns.query
import pytest
import trio
import trustme
from cryptography import x509

from a3s_gateway.acme.storage import AcmeStorage
from tests.integration.test_providers_kubernetes_cli import start_origins
from tests.support.gateway import LOCAL
from tests.support.knot import running_knot
from tests.support.pebble import Pebble, running_pebble
from tests.support.scaling import cli_gateway, free_ports, management_block, poll_until
from tests.support.tls import TlsConnection

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from pathlib import Path

    from tests.support.origin import Origin
    from tests.support.scaling import CliGateway

pytestmark = [pytest.mark.integration, pytest.mark.time_limit(120)]

SHOP: Final = "shop.example.test"
#: Bound on an issuance seen from outside (Pebble answers at once; the debounce adds ~1 s).
WITHIN: Final = 30.0


def gateway_config(
    pebble: Pebble,
    storage: Path,
    origin: Origin,
    *,
    admin: int,
    challenge: str = "http-01",
    extra_tls: str = "",
    ports: tuple[int, int] | None = None,
) -> str:
    """Entrypoint ``web`` on Pebble's HTTP-01 port, redirecting to ``websecure`` (ACME) on its
    TLS-ALPN-01 port (``ports``: others), and a router for ``SHOP`` on both."""
    web, secure = ports if ports is not None else (pebble.http_port, pebble.tls_port)
    return (
        f'entrypoints "web" {{\n  address = "{LOCAL}:{web}"\n  redirect_to = "websecure"\n}}\n'
        f'entrypoints "websecure" {{\n  address = "{LOCAL}:{secure}"\n  tls {{\n'
        "    acme = true\n"
        '    acme_email = "ops@example.test"\n'
        f"    acme_directory_url = {json.dumps(pebble.directory_url)}\n"
        f"    acme_ca_file = {json.dumps(pebble.ca_file)}\n"
        f"    acme_storage_path = {json.dumps(str(storage))}\n"
        f'    acme_challenge = "{challenge}"\n'
        f"{extra_tls}"
        "  }\n}\n"
        f'services "shop" {{\n  load_balancer {{\n'
        f'    servers = [{{ url = "http://{LOCAL}:{origin.port}" }}]\n  }}\n}}\n'
        f'routers "shop" {{\n  rule = "Host(`{SHOP}`)"\n  service = "shop"\n}}\n'
        + management_block(admin)
    )


@asynccontextmanager
async def acme_gateway(
    tmp_path: Path,
    pebble: Pebble,
    *,
    storage: Path | None = None,
    challenge: str = "http-01",
    extra_tls: str = "",
    args: Sequence[str] = (),
) -> AsyncIterator[CliGateway]:
    """The CLI on ``gateway_config`` (the storage is ``<tmp_path>/acme`` unless given) in
    front of a ``shop`` origin, until the block ends."""
    async with trio.open_nursery() as nursery:
        (origin,) = await start_origins(nursery, "shop")
        admin = free_ports(1, avoid=(pebble.http_port, pebble.tls_port))[0]
        where = storage if storage is not None else tmp_path / "acme"
        text = gateway_config(
            pebble, where, origin, admin=admin, challenge=challenge, extra_tls=extra_tls
        )
        async with cli_gateway(
            tmp_path, text, port=pebble.http_port, admin=admin, args=args
        ) as gateway:
            yield gateway
        nursery.cancel_scope.cancel()


def pebble_client(pebble: Pebble) -> ssl.SSLContext:
    """A client that trusts Pebble's root only (and checks the host name)."""
    context = ssl.create_default_context(cadata=pebble.roots_pem().decode("ascii"))
    return context


def any_certificate() -> ssl.SSLContext:
    """A client that takes any certificate (to see which one is served)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def served(port: int, context: ssl.SSLContext) -> x509.Certificate | str:
    """The leaf a new handshake with SNI ``SHOP`` gets, or why the handshake failed."""
    try:
        connection = await TlsConnection.open(port, SHOP, context)
    except (ssl.SSLError, trio.BrokenResourceError, OSError) as error:
        return f"handshake failed: {error}"
    try:
        der = connection.stream.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)
    finally:
        await connection.aclose()


async def shop_body(port: int, context: ssl.SSLContext) -> str:
    """The body (or the failure) of GET / for ``SHOP`` over a new verified connection."""
    try:
        connection = await TlsConnection.open(port, SHOP, context)
    except (ssl.SSLError, trio.BrokenResourceError, OSError) as error:
        return f"handshake failed: {error}"
    try:
        response = await connection.get("/", host=SHOP)
    finally:
        await connection.aclose()
    return response.body.decode(errors="replace")


def issued_by_pebble(pebble: Pebble) -> x509.Name:
    return x509.load_pem_x509_certificate(pebble.intermediates_pem()).subject


async def wait_issued(gateway: CliGateway, pebble: Pebble) -> None:
    """Until a verified handshake for ``SHOP`` reaches the origin."""
    client = pebble_client(pebble)
    await poll_until(
        "a certificate from Pebble",
        lambda: shop_body(pebble.tls_port, client),
        "from-shop".__eq__,
        within=WITHIN,
    )


async def test_http01_issues_serves_and_stores_a_certificate(tmp_path: Path) -> None:
    storage = tmp_path / "acme"
    with running_pebble() as pebble:
        async with acme_gateway(tmp_path, pebble, storage=storage) as gateway:
            await wait_issued(gateway, pebble)
            leaf = await served(pebble.tls_port, any_certificate())
            assert isinstance(leaf, x509.Certificate)
            assert leaf.issuer == issued_by_pebble(pebble)
            names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            assert names.value.get_values_for_type(x509.DNSName) == [SHOP]
            assert await gateway.metric("a3s_acme_orders_total", result="success") == 1
            served_http = await gateway.metric("a3s_acme_challenges_served_total", type="http-01")
            assert served_http is not None
            assert served_http >= 1
            assert "acme: certificate for shop.example.test issued" in gateway.log()
            # Other paths on the plaintext entrypoint are still redirected.
            assert (await gateway.get("/shop")).status == 308
    # SPEC §12.4: the layout and the modes.
    assert stat.S_IMODE(os.stat(storage).st_mode) == 0o700
    for name in ("account.key.pem", f"{SHOP}/key.pem"):
        assert stat.S_IMODE(os.stat(storage / name).st_mode) == 0o600
    account = json.loads((storage / "account.json").read_text())
    assert account["email"] == "ops@example.test"
    assert account["directory"] == pebble.directory_url
    meta = json.loads((storage / SHOP / "meta.json").read_text())
    assert meta["not_after"] == leaf.not_valid_after_utc.timestamp()
    assert not (storage / ".lock").exists()


async def test_tls_alpn01_issues_and_serves_a_certificate(tmp_path: Path) -> None:
    with running_pebble() as pebble:
        async with acme_gateway(tmp_path, pebble, challenge="tls-alpn-01") as gateway:
            await wait_issued(gateway, pebble)
            answered = await gateway.metric("a3s_acme_challenges_served_total", type="tls-alpn-01")
            assert answered is not None
            assert answered >= 1
            assert await gateway.metric("a3s_acme_challenges_served_total", type="http-01") in (
                None,
                0.0,
            )


async def test_dns01_through_challtestsrv(tmp_path: Path) -> None:
    with running_pebble() as pebble:
        dns = (
            '    acme_dns {\n      provider = "challtestsrv"\n'
            f"      management_url = {json.dumps(pebble.management_url)}\n"
            f'      resolver = "127.0.0.1:{pebble.dns_port}"\n'
            "      propagation_wait_secs = 10\n    }\n"
        )
        async with acme_gateway(tmp_path, pebble, challenge="dns-01", extra_tls=dns) as gateway:
            await wait_issued(gateway, pebble)
            assert await gateway.metric("a3s_acme_challenges_served_total") in (None, 0.0)


async def test_dns01_through_rfc2136_against_knot(tmp_path: Path) -> None:
    """The TXT record goes to a real Knot server by a TSIG-signed dynamic update; Pebble
    resolves through that server."""
    with (
        running_knot(zone="example.test.") as knot,
        running_pebble(dns_server=knot.address) as pebble,
    ):
        block = (
            '    acme_dns {\n      provider = "rfc2136"\n'
            f'      nameserver = "{knot.address}"\n'
            f'      tsig_key_name = "{knot.tsig_key_name}"\n'
            f'      tsig_secret = "{knot.tsig_secret}"\n'
            f'      tsig_algorithm = "{knot.tsig_algorithm}"\n'
            f'      resolver = "{knot.address}"\n'
            "      propagation_wait_secs = 10\n    }\n"
        )
        async with acme_gateway(tmp_path, pebble, challenge="dns-01", extra_tls=block) as gateway:
            await wait_issued(gateway, pebble)
            assert knot.tsig_secret not in gateway.log()
        # The record was removed after the validation.
        answer = dns.query.udp(
            dns.message.make_query(f"_acme-challenge.{SHOP}.", "TXT"),
            "127.0.0.1",
            port=knot.port,
            timeout=2,
        )
        assert answer.answer == []


def short_lived(storage: Path) -> x509.Certificate:
    """Store a certificate for ``SHOP`` that ends in two days (another CA's), as if issued
    long ago: inside the 30-day renewal window."""
    ca = trustme.CA()
    now = datetime.datetime.now(datetime.UTC)
    leaf = ca.issue_cert(SHOP, not_after=now + datetime.timedelta(days=2))
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    AcmeStorage(str(storage)).save_certificate(
        SHOP, chain, leaf.private_key_pem.bytes(), directory="old", issued_at=0.0
    )
    return x509.load_pem_x509_certificate(chain)


async def test_a_short_lived_certificate_is_renewed_while_a_client_stays_connected(
    tmp_path: Path,
) -> None:
    storage = tmp_path / "acme"
    old = short_lived(storage)
    with running_pebble() as pebble:
        async with acme_gateway(tmp_path, pebble, storage=storage) as gateway:
            # Served from the first moment (loaded at start), then renewed at once.
            kept = await TlsConnection.open(pebble.tls_port, SHOP, any_certificate())
            try:
                der = kept.stream.getpeercert(binary_form=True)
                assert der is not None
                first = x509.load_der_x509_certificate(der)
                await wait_issued(gateway, pebble)
                # The keep-alive connection made before the swap still serves.
                for _ in range(3):
                    response = await kept.get("/", host=SHOP)
                    assert response.body == b"from-shop"
            finally:
                await kept.aclose()
            assert first.serial_number in (old.serial_number, _serial_of_new(storage))
            renewed = await served(pebble.tls_port, any_certificate())
            assert isinstance(renewed, x509.Certificate)
            assert renewed.serial_number != old.serial_number
            assert renewed.issuer == issued_by_pebble(pebble)
            # A forced renewal replaces it again, without a restart.
            renewal = await gateway.api("/acme/renew-all", method="POST")
            assert renewal.status == 202, renewal
            await poll_until(
                "the forced renewal",
                lambda: served(pebble.tls_port, any_certificate()),
                lambda leaf: (
                    isinstance(leaf, x509.Certificate)
                    and leaf.serial_number != renewed.serial_number
                ),
                within=WITHIN,
            )
            assert await gateway.metric("a3s_acme_orders_total", result="success") == 2


def _serial_of_new(storage: Path) -> int:
    stored = AcmeStorage(str(storage)).certificate(SHOP)
    assert stored is not None
    return x509.load_pem_x509_certificate(stored.cert_pem).serial_number


async def test_the_fallback_serves_while_the_ca_is_down(tmp_path: Path) -> None:
    """No certificate yet and a CA that does not answer: the self-signed fallback is served,
    the failure counted and shown, and the gateway keeps running."""
    with running_pebble() as pebble:
        down = pebble.directory_url.replace(str(_port(pebble.directory_url)), str(free_ports(1)[0]))
        pebble = dataclasses.replace(pebble, directory_url=down)
        async with acme_gateway(tmp_path, pebble) as gateway:
            failed = await poll_until(
                "a failed order",
                lambda: gateway.metric("a3s_acme_orders_total", result="ca_error"),
                lambda value: value is not None and value >= 1,
                within=WITHIN,
            )
            assert failed == 1
            leaf = await served(pebble.tls_port, any_certificate())
            assert isinstance(leaf, x509.Certificate)
            common = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            assert [attribute.value for attribute in common] == ["a3s-gateway default"]
            response = await gateway.api("/providers")
            [acme] = [entry for entry in json.loads(response.body) if entry["name"] == "acme"]
            assert acme["state"] == "error"
            assert "shop.example.test" in acme["last_error"]


def _port(url: str) -> int:
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


async def test_two_gateways_sharing_the_storage_order_once(tmp_path: Path) -> None:
    """Both start at once on one storage directory: one takes the lock and orders, the other
    waits and loads that certificate. Pebble validates HTTP-01 on the first gateway's port
    only: when the second one orders, the first answers from the shared storage."""
    storage = tmp_path / "acme"
    with running_pebble() as pebble:
        async with trio.open_nursery() as nursery:
            (origin,) = await start_origins(nursery, "shop")
            avoid = (pebble.http_port, pebble.tls_port)
            admin_a, admin_b, web_b, secure_b = free_ports(4, avoid=avoid)
            first = gateway_config(pebble, storage, origin, admin=admin_a)
            second = gateway_config(pebble, storage, origin, admin=admin_b, ports=(web_b, secure_b))
            (tmp_path / "a").mkdir()
            (tmp_path / "b").mkdir()
            async with (
                cli_gateway(tmp_path / "a", first, port=pebble.http_port, admin=admin_a) as a,
                cli_gateway(tmp_path / "b", second, port=web_b, admin=admin_b) as b,
            ):
                await wait_issued(a, pebble)
                client = pebble_client(pebble)
                await poll_until(
                    "the second gateway serving it",
                    lambda: shop_body(secure_b, client),
                    "from-shop".__eq__,
                    within=WITHIN,
                )
                leaf_a = await served(pebble.tls_port, any_certificate())
                leaf_b = await served(secure_b, any_certificate())
                assert isinstance(leaf_a, x509.Certificate)
                assert isinstance(leaf_b, x509.Certificate)
                assert leaf_a.serial_number == leaf_b.serial_number
                orders = [
                    await gateway.metric("a3s_acme_orders_total", result="success") or 0.0
                    for gateway in (a, b)
                ]
                assert sorted(orders) == [0.0, 1.0], orders
            nursery.cancel_scope.cancel()


async def test_workers_answer_the_challenges_the_supervisor_presents(tmp_path: Path) -> None:
    """``--workers 2``: the supervisor orders, its TLS-ALPN-01 challenge is pushed to the
    workers (only they listen), and the certificate reaches both."""
    with running_pebble() as pebble:
        async with acme_gateway(
            tmp_path, pebble, challenge="tls-alpn-01", args=("--workers", "2")
        ) as gateway:
            await wait_issued(gateway, pebble)
            client = pebble_client(pebble)
            for _ in range(8):  # connections spread over both workers
                assert await shop_body(pebble.tls_port, client) == "from-shop"
            assert await gateway.metric("a3s_acme_orders_total", result="success") == 1


async def test_a_configured_certificate_for_the_name_gives_way_to_the_acme_one(
    tmp_path: Path,
) -> None:
    """``cert_file`` lists ``SHOP`` too: it serves until the ACME certificate exists, then
    stays the default for other names while the ACME one answers for ``SHOP``."""
    ca = trustme.CA()
    leaf = ca.issue_cert(SHOP, "default.example.test")
    cert_file, key_file = tmp_path / "static.pem", tmp_path / "static.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert_file))
    leaf.private_key_pem.write_to_path(str(key_file))
    static = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    extra = (
        f"    cert_file = {json.dumps(str(cert_file))}\n"
        f"    key_file = {json.dumps(str(key_file))}\n"
    )
    with running_pebble() as pebble:
        async with acme_gateway(tmp_path, pebble, extra_tls=extra) as gateway:
            await wait_issued(gateway, pebble)
            other = await TlsConnection.open(
                pebble.tls_port, "default.example.test", any_certificate()
            )
            try:
                der = other.stream.getpeercert(binary_form=True)
            finally:
                await other.aclose()
            assert der is not None
            assert x509.load_der_x509_certificate(der).serial_number == static.serial_number
