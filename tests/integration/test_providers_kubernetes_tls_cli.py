"""TLS Secrets of the Kubernetes provider through the real CLI (SPEC §10.6, §5.9 SNI).

``python -m a3s_gateway run`` with an https entrypoint whose own certificate (``cert_file``,
a ``trustme`` certificate for ``default.example.test``) is the default, and the Kubernetes
provider pointed at the fake API server (``tests/support/fake_kube.py``). An Ingress for
``shop.example.test`` names a ``kubernetes.io/tls`` Secret holding another ``trustme``
certificate: a handshake with that SNI gets the Secret's certificate (and the request reaches
the origin behind the Ingress), any other name the default. The Secret is then rotated to a
new certificate (another serial number): new handshakes get it within the debounce. A Secret
whose key does not match its certificate is skipped, named in ``/providers``, and the name
falls back to the default certificate while its routes still serve. A Secret that exists
before any Ingress names it (so the provider did not keep its key) is loaded, by one more LIST
of the Secrets, when an Ingress starts naming it.

Every wait polls under a bounded deadline; the gateway is terminated and the fake server
stopped at the end.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Final

import pytest
import trio
import trustme
from cryptography import x509

from tests.integration.test_providers_kubernetes_cli import (
    FIRST,
    NAMESPACE,
    WITHIN,
    backed_by,
    config,
    ingress,
    kube_status,
    lists_of,
    start_origins,
)
from tests.support.fake_kube import fake_kube_in_thread
from tests.support.gateway import LOCAL
from tests.support.scaling import cli_gateway, free_ports, poll_until
from tests.support.tls import Authority, TlsConnection

if TYPE_CHECKING:
    import ssl
    from pathlib import Path

    from tests.support.fake_kube import JsonObject

pytestmark = pytest.mark.integration

SHOP: Final = "shop.example.test"
DEFAULT: Final = "default.example.test"


def tls_secret(
    name: str, leaf: trustme.LeafCert, *, key_of: trustme.LeafCert | None = None
) -> JsonObject:
    """A ``kubernetes.io/tls`` Secret with ``leaf``'s chain and key (``key_of``'s key: a
    pair that does not match)."""
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    key = (key_of or leaf).private_key_pem.bytes()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(chain).decode(),
            "tls.key": base64.b64encode(key).decode(),
        },
    }


def serial_of(leaf: trustme.LeafCert) -> int:
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number


async def handshake(port: int, server_name: str, context: ssl.SSLContext) -> tuple[int, str]:
    """The serial number of the certificate a new handshake with ``server_name`` gets, and
    the body of a GET ``/shop`` on that connection (its status when not 200)."""
    connection = await TlsConnection.open(port, server_name, context)
    try:
        der = connection.stream.getpeercert(binary_form=True)
        assert der is not None
        serial = x509.load_der_x509_certificate(der).serial_number
        response = await connection.get("/shop", host=server_name)
    finally:
        await connection.aclose()
    body = (
        response.body.decode(errors="replace") if response.status == 200 else str(response.status)
    )
    return serial, body


def any_name(authority: Authority) -> ssl.SSLContext:
    """A client trusting ``authority`` that does not check the name (the serial number says
    which certificate was served: before the Secret loads, SNI shop.example.test gets the
    default one)."""
    context = authority.client_context()
    context.check_hostname = False
    return context


def https_entrypoint(port: int, cert_file: Path, key_file: Path) -> str:
    return (
        f'entrypoints "websecure" {{\n  address = "{LOCAL}:{port}"\n'
        f"  tls {{\n    cert_file = {json.dumps(str(cert_file))}\n"
        f"    key_file  = {json.dumps(str(key_file))}\n  }}\n}}\n"
    )


async def test_a_tls_secret_is_served_by_sni_and_its_rotation_is_followed(
    tmp_path: Path,
) -> None:
    authority = Authority(tmp_path / "pki")
    default_pair = authority.server_pair("default", DEFAULT)
    default_serial = x509.load_pem_x509_certificate(default_pair[0].read_bytes()).serial_number
    first, second = authority.ca.issue_cert(SHOP), authority.ca.issue_cert(SHOP)
    assert serial_of(first) != serial_of(second)
    client = any_name(authority)
    port, secure, admin = free_ports(3)
    with fake_kube_in_thread(tmp_path / "kube") as kube:
        kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
        async with trio.open_nursery() as nursery:
            (a,) = await start_origins(nursery, "a")
            backed_by(kube, "shop", a)
            kube.apply(tls_secret("shop-tls", first))
            kube.apply(ingress("shop", [("/shop", "shop")], host=SHOP, tls_secret="shop-tls"))
            text = config(
                port, admin, kubeconfig, entrypoints=https_entrypoint(secure, *default_pair)
            )
            async with cli_gateway(tmp_path, text, port=port, admin=admin) as gateway:
                # SNI shop.example.test: the Secret's certificate, and the Ingress's origin.
                await poll_until(
                    "the Secret's certificate",
                    lambda: handshake(secure, SHOP, client),
                    (serial_of(first), "from-a").__eq__,
                    within=FIRST,
                )
                # Any other name: the entrypoint's own certificate (the default).
                assert await handshake(secure, DEFAULT, authority.client_context()) == (
                    default_serial,
                    "404",
                )
                status = await kube_status(gateway)
                objects = status["objects"]
                assert isinstance(objects, dict), status
                assert objects["certificates"] == 1, status

                # Rotated: new handshakes get the new certificate.
                kube.apply(tls_secret("shop-tls", second))
                await poll_until(
                    "the rotated certificate",
                    lambda: handshake(secure, SHOP, client),
                    (serial_of(second), "from-a").__eq__,
                    within=WITHIN,
                )

                # A key that is not the certificate's: skipped with a message naming the
                # Secret; the Ingress still serves (with the default certificate).
                kube.apply(tls_secret("shop-tls", first, key_of=second))
                status = await poll_until(
                    "the bad Secret in /providers",
                    lambda: kube_status(gateway),
                    lambda status: "Secret default/shop-tls" in str(status["skipped"]),
                    within=WITHIN,
                )
                assert "PRIVATE KEY" not in json.dumps(status)
                await poll_until(
                    "the default certificate",
                    lambda: handshake(secure, SHOP, client),
                    (default_serial, "from-a").__eq__,
                    within=WITHIN,
                )
            nursery.cancel_scope.cancel()


async def test_a_secret_first_named_after_it_was_listed_is_loaded(tmp_path: Path) -> None:
    # The provider keeps the key of named Secrets only: "late-tls" is listed while nothing
    # names it, so when an Ingress names it the Secrets are listed again to load it.
    authority = Authority(tmp_path / "pki")
    default_pair = authority.server_pair("default", DEFAULT)
    default_serial = x509.load_pem_x509_certificate(default_pair[0].read_bytes()).serial_number
    late = authority.ca.issue_cert(SHOP)
    client = any_name(authority)
    port, secure, admin = free_ports(3)
    with fake_kube_in_thread(tmp_path / "kube") as kube:
        kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
        async with trio.open_nursery() as nursery:
            (a,) = await start_origins(nursery, "a")
            backed_by(kube, "shop", a)
            kube.apply(tls_secret("late-tls", late))
            kube.apply(ingress("shop", [("/shop", "shop")], host=SHOP))
            text = config(
                port, admin, kubeconfig, entrypoints=https_entrypoint(secure, *default_pair)
            )
            async with cli_gateway(tmp_path, text, port=port, admin=admin) as gateway:
                await poll_until(
                    "the Ingress, with the default certificate",
                    lambda: handshake(secure, SHOP, client),
                    (default_serial, "from-a").__eq__,
                    within=FIRST,
                )
                listed = lists_of(kube, "secrets")
                kube.apply(ingress("shop", [("/shop", "shop")], host=SHOP, tls_secret="late-tls"))
                await poll_until(
                    "the Secret named later",
                    lambda: handshake(secure, SHOP, client),
                    (serial_of(late), "from-a").__eq__,
                    within=WITHIN,
                )
                assert lists_of(kube, "secrets") == listed + 1
                status = await kube_status(gateway)
                assert status["skipped"] == [], status
            nursery.cancel_scope.cancel()
