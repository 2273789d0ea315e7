"""``redirect_to`` end to end (SPEC §3.7, §5.14 step 3; issue #17 item 4): a plaintext
entrypoint answers 308 towards the TLS entrypoint, real clients (curl without ``-L``, a Python
client over a socket) see it, following it over TLS reaches the origin, and ACME HTTP-01
challenge paths are routed as before. Through an in-process ``Gateway`` and the real CLI."""

from __future__ import annotations

import json
import signal
import ssl
from typing import TYPE_CHECKING

import pytest
import trio
import trustme

from tests.support.cli import run_cli, start_gateway
from tests.support.gateway import (
    CLIENT_WAIT,
    LOCAL,
    RawClient,
    curl,
    curl_lines,
    free_port,
    load,
    running_gateway,
)
from tests.support.origin import Origin

if TYPE_CHECKING:
    from pathlib import Path

ACME_PATH = "/.well-known/acme-challenge/LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"


def redirect_config(origin_port: int, tls_port: int, directory: Path, web_port: int = 0) -> str:
    """``web`` (plain, port ``web_port``) redirects to ``websecure`` (TLS on ``tls_port``, a
    trustme certificate for localhost and 127.0.0.1); both route everything to the origin."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(directory / "both.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(directory / "key.pem"))
    return f"""
entrypoints "web" {{
  address     = "{LOCAL}:{web_port}"
  redirect_to = "websecure"
}}
entrypoints "websecure" {{
  address = "{LOCAL}:{tls_port}"
  tls {{
    cert_file = "{directory / "cert.pem"}"
    key_file  = "{directory / "key.pem"}"
  }}
}}
routers "all" {{
  rule    = "PathPrefix(`/`)"
  service = "origin"
}}
services "origin" {{
  load_balancer {{
    servers = [{{ url = "http://{LOCAL}:{origin_port}" }}]
  }}
}}
shutdown_timeout_secs = 2
"""


async def test_curl_gets_308_and_following_it_over_tls_reaches_the_origin(
    tmp_path: Path,
) -> None:
    tls_port = free_port()
    with trio.fail_after(CLIENT_WAIT * 2):
        origin = Origin()
        async with trio.open_nursery() as nursery:
            await nursery.start(origin.serve)
            config = load(redirect_config(origin.port, tls_port, tmp_path))
            async with running_gateway(config) as gw:
                plain = f"http://{LOCAL}:{gw.port}"
                found = (await curl(f"{plain}/a/b?x=1&y=%20z")).response
                assert found.status == 308
                assert found.header(b"location") == (
                    f"https://{LOCAL}:{tls_port}/a/b?x=1&y=%20z".encode()
                )
                assert found.json() == {
                    "location": f"https://{LOCAL}:{tls_port}/a/b?x=1&y=%20z",
                    "status": 308,
                }
                # The Host's own port goes; its name stays.
                named = await curl("-H", "Host: localhost:80", f"{plain}/p")
                assert (
                    named.response.header(b"location") == f"https://localhost:{tls_port}/p".encode()
                )
                posted = await curl("--data", "name=demo", f"{plain}/orders")
                assert posted.response.status == 308
                head = await curl("-I", f"{plain}/h", head=True)
                assert head.response.status == 308
                assert origin.completed == []  # nothing was routed
                # ACME HTTP-01 challenges are routed as before.
                acme = (await curl(f"{plain}{ACME_PATH}")).response
                assert acme.status == 200
                assert [r.path for r in origin.completed] == [ACME_PATH.encode()]
                # curl follows the redirect (a POST stays a POST) and trusts the test CA.
                code, lines, errors = await curl_lines(
                    "-L",
                    "--cacert",
                    str(tmp_path / "ca.pem"),
                    "--data",
                    "k=v",
                    "-H",
                    "Host: localhost:80",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{num_redirects} %{url_effective}",
                    f"{plain}/after",
                )
                assert code == 0, errors
                assert lines == [f"200 1 https://localhost:{tls_port}/after"]
                assert origin.completed[-1].path == b"/after"
                assert origin.completed[-1].method == b"POST"
                metrics = gw.gateway.metrics_text()
                assert metrics is not None
                assert b'code="308"' in metrics
            nursery.cancel_scope.cancel()


async def test_a_python_client_sees_the_redirect_on_a_kept_alive_connection(
    tmp_path: Path,
) -> None:
    tls_port = free_port()
    with trio.fail_after(CLIENT_WAIT * 2):
        origin = Origin()
        async with trio.open_nursery() as nursery:
            await nursery.start(origin.serve)
            async with running_gateway(redirect_config(origin.port, tls_port, tmp_path)) as gw:
                client = await RawClient.connect(gw.port)
                await _redirects_and_refusals(client, tls_port)
                await client.aclose()
                # Over TLS the same request is served, not redirected.
                context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
                stream = await trio.open_ssl_over_tcp_stream(
                    LOCAL, tls_port, ssl_context=context, https_compatible=True
                )
                await stream.send_all(
                    b"GET /secure HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                received = b""
                while chunk := await stream.receive_some(65536):
                    received += chunk
                await stream.aclose()
                assert received.startswith(b"HTTP/1.1 200 ")
            nursery.cancel_scope.cancel()


async def _redirects_and_refusals(client: RawClient, tls_port: int) -> None:
    """Two redirects on one kept-alive connection (an IPv6 Host), then a request without a
    host."""
    for path in (b"/one", b"/two?q"):
        assert await client.send(b"GET " + path + b" HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n")
        response = await client.response()
        assert response is not None
        assert response.status == 308
        location = dict(response.headers)[b"location"]
        assert location == f"https://[::1]:{tls_port}".encode() + path
    # No usable host: 400, not a Location built from garbage.
    assert await client.send(b"GET / HTTP/1.0\r\n\r\n")
    refused = await client.response()
    assert refused is not None
    assert refused.status == 400
    assert json.loads(refused.body)["error"] == "bad request: no host to redirect to"


async def test_the_cli_redirects_and_serves_https(tmp_path: Path) -> None:
    web_port, tls_port = free_port(), free_port()
    with trio.fail_after(CLIENT_WAIT * 2):
        origin = Origin()
        async with trio.open_nursery() as nursery:
            await nursery.start(origin.serve)
            config = tmp_path / "gateway.hcl"
            config.write_text(redirect_config(origin.port, tls_port, tmp_path, web_port))
            gateway = await start_gateway(str(config))
            try:
                await gateway.wait_for_line("gateway running")
                found = (await curl(f"http://localhost:{web_port}/x?y=1")).response
                assert found.status == 308
                location = found.header(b"location")
                assert location == f"https://localhost:{tls_port}/x?y=1".encode()
                served = await curl("--cacert", str(tmp_path / "ca.pem"), location.decode())
                assert served.code == 0, served.stderr
                assert served.response.status == 200
                gateway.process.send_signal(signal.SIGTERM)
                assert await gateway.process.wait() == 0
            finally:
                if gateway.process.returncode is None:
                    gateway.process.kill()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("web2", 'redirect_to target "web2" must be an http entrypoint with tls'),
        ("nowhere", 'entrypoint "nowhere" is not defined'),
    ],
)
def test_validate_requires_a_tls_target(tmp_path: Path, target: str, message: str) -> None:
    config = tmp_path / "gateway.hcl"
    text = redirect_config(9, 8443, tmp_path).replace(
        'redirect_to = "websecure"', f'redirect_to = "{target}"'
    )
    config.write_text(text + f'entrypoints "web2" {{\n  address = "{LOCAL}:8081"\n}}\n')
    done = run_cli("validate", str(config))
    assert done.code == 1
    [line] = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert line.startswith(f'{config}:4:3: error: entrypoints["web"].redirect_to: ')
    assert message in line
