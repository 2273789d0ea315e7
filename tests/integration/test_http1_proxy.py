"""The HTTP/1.1 data plane end to end (issue #4; SPEC §5.2–5.7, §7.2, §7.8, §2.4 drain).

An in-process ``Gateway`` on 127.0.0.1 in front of one or two real test origins
(``tests/support/origin.py``), driven by the real ``curl`` binary and, for byte-exact cases, by
raw sockets parsed with an h11 client. Real sockets mean trio's real clock; every wait is a
bounded wait for a condition, never a sleep standing in for synchronisation.

The 1 GiB flat-memory check runs only with ``A3S_E2E_SLOW=1`` (it takes tens of seconds).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import pytest
import trio

from a3s_gateway import GatewayState
from tests.support.gateway import (
    CLIENT_WAIT,
    CURL_BASE,
    CurlResult,
    RawClient,
    config_text,
    curl,
    curl_digest,
    curl_lines,
    exchange,
    free_port,
    running_gateway,
    server_entry,
    service_block,
    wait_refused,
)
from tests.support.origin import (
    BLOCK,
    ChunkedWithTrailers,
    DieMidBody,
    Download,
    EarlyAnswer,
    Fixed,
    Garbage,
    Origin,
    ResetBeforeResponse,
    SlowHead,
    pattern,
    pattern_sha256,
)

pytestmark = pytest.mark.integration

KIB: Final = 1024
MIB: Final = 1024 * KIB
ERROR_HEADERS: Final = {
    b"content-type": b"application/json",
    b"cache-control": b"no-store",
    b"server": b"a3s-gateway",
}


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("a")
    await nursery.start(server.serve)
    return server


@pytest.fixture
async def origin_b(nursery: trio.Nursery) -> Origin:
    server = Origin("b")
    await nursery.start(server.serve)
    return server


def write_pattern(path: Path, size: int) -> Path:
    with path.open("wb") as file:
        for piece in pattern(size):
            file.write(piece)
    return path


def one_origin(
    origin: Origin, *, balancer: str = "", entrypoint: str = "", rule: str = "PathPrefix(`/`)"
) -> str:
    return config_text([server_entry(origin)], balancer=balancer, entrypoint=entrypoint, rule=rule)


def assert_generated_error(result: CurlResult, status: int, text: str) -> None:
    assert result.code == 0, result.stderr
    response = result.response
    assert response.status == status
    for name, value in ERROR_HEADERS.items():
        assert response.header(name) == value, name
    assert response.json() == {"error": text, "status": status}


# -- requests and forwarding headers (SPEC §5.4) ----------------------------------------------


async def test_get_reaches_the_origin_with_forwarding_headers(origin: Origin) -> None:
    async with running_gateway(one_origin(origin)) as gw:
        result = await curl(
            gw.url("/hello?x=1"),
            "-H",
            "X-Forwarded-For: 203.0.113.9",
            "-H",
            "X-Real-IP: 203.0.113.9",
            "-H",
            "Forwarded: for=203.0.113.9",
            "-H",
            "X-Forwarded-Host: spoofed.test",
            "-H",
            "X-Forwarded-Prefix: /spoof",
        )
    assert result.code == 0, result.stderr
    response = result.response
    assert response.status == 200
    assert response.json()["origin"] == "a"
    [seen] = origin.requests
    authority = f"127.0.0.1:{gw.port}".encode()
    assert (seen.method, seen.target) == (b"GET", b"/hello?x=1")
    assert seen.values(b"host") == [authority]
    # The client is not a trusted proxy: its forwarding headers are replaced or removed.
    assert seen.values(b"x-forwarded-for") == [b"127.0.0.1"]
    assert seen.values(b"x-forwarded-proto") == [b"http"]
    assert seen.values(b"x-forwarded-host") == [authority]
    assert seen.values(b"x-forwarded-port") == [str(gw.port).encode()]
    assert seen.values(b"x-real-ip") == [b"127.0.0.1"]
    assert seen.values(b"via") == [b"1.1 a3s-gateway"]
    assert seen.header(b"forwarded") is None
    assert seen.header(b"x-forwarded-prefix") is None
    # Responses: nothing added but Date (the origin sends none); no Via, no Server.
    assert response.header(b"date") is not None
    assert response.header(b"via") is None
    assert response.header(b"server") is None


async def test_a_trusted_peer_keeps_its_forwarding_headers(origin: Origin) -> None:
    trusted = '  forwarded_headers {\n    trusted_ips = ["127.0.0.1/32"]\n  }'
    async with running_gateway(one_origin(origin, entrypoint=trusted)) as gw:
        result = await curl(
            gw.url("/t"),
            "-H",
            "X-Forwarded-For: 203.0.113.9",
            "-H",
            "X-Real-IP: 203.0.113.9",
            "-H",
            "X-Forwarded-Proto: https",
            "-H",
            "Forwarded: for=203.0.113.9",
        )
    assert result.response.status == 200
    [seen] = origin.requests
    assert seen.values(b"x-forwarded-for") == [b"203.0.113.9, 127.0.0.1"]
    assert seen.values(b"x-real-ip") == [b"203.0.113.9"]
    assert seen.values(b"x-forwarded-proto") == [b"https"]
    assert seen.values(b"forwarded") == [b"for=203.0.113.9"]


async def test_head_has_no_body_and_keeps_the_connection_framed(origin: Origin) -> None:
    origin.on("/file", Download(1000))
    async with running_gateway(one_origin(origin)) as gw:
        result = await curl("-I", gw.url("/file"), head=True)
        client = await RawClient.connect(gw.port)
        try:
            await client.send(
                b"HEAD /file HTTP/1.1\r\nHost: h\r\n\r\nGET /file HTTP/1.1\r\nHost: h\r\n\r\n"
            )
            head = await client.response(b"HEAD")
            get = await client.response(b"GET")
        finally:
            await client.aclose()
    assert result.code == 0, result.stderr
    assert result.response.status == 200
    assert result.response.header(b"content-length") == b"1000"
    assert head is not None
    assert (head.status, head.body, head.complete) == (200, b"", True)
    assert head.header(b"content-length") == b"1000"
    assert get is not None
    assert (get.status, get.complete) == (200, True)
    assert get.body == BLOCK[:1000]
    assert [r.method for r in origin.requests] == [b"HEAD", b"HEAD", b"GET"]


@pytest.mark.parametrize(
    ("size", "chunked"),
    [
        pytest.param(100 * KIB, False, id="content-length-100KiB"),
        pytest.param(100 * KIB, True, id="chunked-100KiB"),
        pytest.param(64 * MIB, False, id="content-length-64MiB"),
        pytest.param(64 * MIB, True, id="chunked-64MiB"),
    ],
)
async def test_uploads_stream_to_the_origin_intact(
    origin: Origin, tmp_path: Path, size: int, chunked: bool
) -> None:
    body = write_pattern(tmp_path / "body.bin", size)
    extra = ["-H", "Transfer-Encoding: chunked"] if chunked else []
    async with running_gateway(one_origin(origin)) as gw:
        result = await curl(gw.url("/upload"), "--data-binary", f"@{body}", *extra)
    assert result.code == 0, result.stderr
    assert result.response.status == 200
    [seen] = origin.requests
    assert seen.method == b"POST"
    assert seen.complete
    assert seen.body_length == size
    assert seen.body_sha256 == pattern_sha256(size)
    assert seen.header(b"expect") is None
    if chunked:
        assert seen.values(b"transfer-encoding") == [b"chunked"]
        assert seen.header(b"content-length") is None
    else:
        assert seen.values(b"content-length") == [str(size).encode()]
        assert seen.header(b"transfer-encoding") is None


@pytest.mark.parametrize(
    "chunked", [pytest.param(False, id="content-length"), pytest.param(True, id="chunked")]
)
async def test_a_64_mib_download_streams_through_intact(origin: Origin, chunked: bool) -> None:
    size = 64 * MIB
    origin.on("/big", Download(size, chunked=chunked))
    async with running_gateway(one_origin(origin)) as gw:
        got = await curl_digest(gw.url("/big"))
    assert (got.code, got.status) == (0, 200), got.stderr
    assert got.size == size
    assert got.sha256 == pattern_sha256(size)


async def test_keep_alive_reuses_one_upstream_connection(origin: Origin) -> None:
    async with running_gateway(one_origin(origin)) as gw:
        urls = [gw.url(f"/k{i}") for i in range(3)]
        sinks = ["-o", "/dev/null"] * 3
        code, lines, errors = await curl_lines(
            *sinks, "-w", "%{http_code} %{num_connects}\n", *urls
        )
        # Separate client connections share the pooled upstream connection too.
        for _ in range(2):
            assert (await curl(gw.url("/again"))).response.status == 200
    assert code == 0, errors
    assert lines == ["200 1", "200 0", "200 0"]
    assert [r.path for r in origin.requests] == [b"/k0", b"/k1", b"/k2", b"/again", b"/again"]
    assert origin.connections == 1
    assert {r.connection for r in origin.requests} == {1}


async def test_an_upstream_connection_is_reused_after_a_request_with_a_body(
    origin: Origin,
) -> None:
    async with running_gateway(one_origin(origin)) as gw:
        first = await curl(gw.url("/post"), "--data-binary", "hello")
        second = await curl(gw.url("/get"))
        third = await curl(gw.url("/post"), "--data-binary", "again")
    assert [r.response.status for r in (first, second, third)] == [200, 200, 200]
    assert [(r.method, r.body_length) for r in origin.requests] == [
        (b"POST", 5),
        (b"GET", 0),
        (b"POST", 5),
    ]
    assert origin.connections == 1


async def test_pipelined_requests_are_answered_in_order(origin: Origin) -> None:
    async with running_gateway(one_origin(origin)) as gw:
        client = await RawClient.connect(gw.port)
        try:
            await client.send(
                b"GET /p1 HTTP/1.1\r\nHost: h\r\n\r\n"
                b"POST /p2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
                b"GET /p3 HTTP/1.1\r\nHost: h\r\n\r\n"
            )
            answers = [await client.response() for _ in range(3)]
        finally:
            await client.aclose()
    targets = []
    for answer in answers:
        assert answer is not None
        assert answer.status == 200
        assert answer.complete
        targets.append(answer.body)
    assert [r.target for r in origin.requests] == [b"/p1", b"/p2", b"/p3"]
    assert [b'"target": "/p%d"' % i in body for i, body in enumerate(targets, 1)] == [True] * 3
    assert origin.requests[1].body_length == 5


async def test_an_http_1_0_client_is_answered_and_closed(origin: Origin) -> None:
    async with running_gateway(one_origin(origin)) as gw:
        response, closed = await exchange(gw.port, b"GET /old HTTP/1.0\r\nHost: h\r\n\r\n")
    assert response is not None
    assert response.status == 200
    assert closed
    [seen] = origin.requests
    assert seen.http_version == b"1.1"
    assert seen.values(b"via") == [b"1.0 a3s-gateway"]


# -- hop-by-hop fields (SPEC §5.4 step 1) -----------------------------------------------------


async def test_hop_by_hop_request_fields_are_removed(origin: Origin) -> None:
    async with running_gateway(one_origin(origin)) as gw:
        result = await curl(
            gw.url("/hop"),
            "-H",
            "Connection: keep-alive, X-Secret, X-Forwarded-For, Via",
            "-H",
            "X-Secret: 1",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "TE: gzip",
            "-H",
            "Trailer: X-Checksum",
            "-H",
            "Proxy-Connection: keep-alive",
            "-H",
            "Proxy-Authorization: Basic eDp5",
            "-H",
            "Upgrade: foo/1",
            "-H",
            "HTTP2-Settings: AAMAAABkAAQAAP__",
            "-H",
            "X-Kept: yes",
        )
    assert result.response.status == 200
    [seen] = origin.requests
    names = {name for name, _ in seen.headers}
    removed = {
        b"x-secret",
        b"keep-alive",
        b"te",
        b"trailer",
        b"proxy-connection",
        b"proxy-authorization",
        b"upgrade",
        b"http2-settings",
    }
    assert names & removed == set()
    for value in seen.values(b"connection"):
        assert b"x-secret" not in value.lower()
    assert seen.values(b"x-kept") == [b"yes"]
    # Connection naming the gateway's own fields cannot remove them.
    assert seen.values(b"x-forwarded-for") == [b"127.0.0.1"]
    assert seen.values(b"via") == [b"1.1 a3s-gateway"]


async def test_hop_by_hop_response_fields_are_removed(origin: Origin) -> None:
    headers = (
        (b"connection", b"x-internal"),
        (b"x-internal", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"x-ok", b"1"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    )
    origin.on("/r", Fixed(200, b"ok", headers))
    async with running_gateway(one_origin(origin)) as gw:
        result = await curl(gw.url("/r"))
    response = result.response
    assert (response.status, response.body) == (200, b"ok")
    assert response.header(b"x-internal") is None
    assert response.header(b"keep-alive") is None
    assert response.header(b"x-ok") == b"1"
    assert [v for k, v in response.headers if k == b"set-cookie"] == [b"a=1", b"b=2"]


# -- Host and the server URL's path prefix ----------------------------------------------------


@pytest.mark.parametrize(
    "pass_host", [pytest.param(True, id="pass-host-header"), pytest.param(False, id="backend-host")]
)
async def test_host_header(origin: Origin, pass_host: bool) -> None:
    balancer = "" if pass_host else "    pass_host_header = false"
    async with running_gateway(one_origin(origin, balancer=balancer)) as gw:
        result = await curl(gw.url("/h"), "-H", "Host: api.example.test")
    assert result.response.status == 200
    [seen] = origin.requests
    expected = b"api.example.test" if pass_host else f"127.0.0.1:{origin.port}".encode()
    assert seen.values(b"host") == [expected]
    assert seen.values(b"x-forwarded-host") == [b"api.example.test"]
    assert seen.values(b"x-forwarded-port") == [b"80"]


@pytest.mark.parametrize(
    "prefix", [pytest.param("/base", id="base"), pytest.param("/base/", id="base-slash")]
)
async def test_server_url_path_prefix(origin: Origin, prefix: str) -> None:
    config = config_text([server_entry(origin, path=prefix)])
    async with running_gateway(config) as gw:
        result = await curl(gw.url("/x/y?q=1"))
    assert result.response.status == 200
    assert [r.target for r in origin.requests] == [b"/base/x/y?q=1"]


@pytest.mark.parametrize("engine", ["llhttp", "h11"])
async def test_both_parser_engines_proxy_alike(origin: Origin, engine: str) -> None:
    """``http1_parser`` picks the engine for both directions; llhttp is the default and h11
    the reference, and a proxied exchange looks the same through either."""
    config = config_text([server_entry(origin)]) + f'http1_parser = "{engine}"\n'
    async with running_gateway(config) as gw:
        assert type(gw.gateway._upstream_engine()).__name__ == (
            "LlhttpClient" if engine == "llhttp" else "Http1Client"
        )
        get = await curl(gw.url("/e?q=1"))
        post = await curl(
            "-H", "Transfer-Encoding: chunked", "--data-binary", "x" * 70_000, gw.url("/p")
        )
    assert (get.response.status, post.response.status) == (200, 200)
    assert [r.target for r in origin.requests] == [b"/e?q=1", b"/p"]
    assert origin.requests[1].body_length == 70_000


# -- balancing (SPEC §7.2) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "expected_a", "expected_b"),
    [
        pytest.param((1, 1), [b"/r1", b"/r3"], [b"/r2", b"/r4"], id="round-robin-1-1"),
        pytest.param((3, 1), [b"/r1", b"/r2", b"/r4"], [b"/r3"], id="weighted-3-1-aaba"),
    ],
)
async def test_balancing_order(
    origin: Origin,
    origin_b: Origin,
    weights: tuple[int, int],
    expected_a: list[bytes],
    expected_b: list[bytes],
) -> None:
    servers = [server_entry(origin, weight=weights[0]), server_entry(origin_b, weight=weights[1])]
    async with running_gateway(config_text(servers)) as gw:
        result = await curl(*(gw.url(f"/r{i}") for i in range(1, 5)))
    assert result.code == 0, result.stderr
    assert [r.status for r in result.responses] == [200] * 4
    assert [r.path for r in origin.requests] == expected_a
    assert [r.path for r in origin_b.requests] == expected_b
    names = [r.json()["origin"] for r in result.responses]
    order = ["a" if f"/r{i}".encode() in expected_a else "b" for i in range(1, 5)]
    assert names == order


@pytest.mark.parametrize("middlewares", [False, True], ids=["bare", "with-middlewares"])
async def test_consistent_hash_keys_on_hash_key(
    origin: Origin, origin_b: Origin, middlewares: bool
) -> None:
    """``hash_key = "header:X-User"``: one user, one backend; users spread over both; a
    request without the header is keyed on the client IP (all such requests: one backend)."""
    servers = [server_entry(origin), server_entry(origin_b)]
    balancer = '    hash_key = "header:X-User"'
    config = config_text(servers, strategy="consistent-hash", balancer=balancer)
    if middlewares:
        config = (
            config.replace('service = "main"', 'service = "main"\n  middlewares = ["tag"]', 1)
            + 'middlewares "tag" {\n  type = "headers"\n  request_headers = { "X-Tag" = "t" }\n}\n'
        )
    users = [f"user-{n}" for n in range(12)]
    async with running_gateway(config) as gw:
        first = [await curl("-H", f"X-User: {u}", gw.url(f"/{u}")) for u in users]
        again = [await curl("-H", f"X-User: {u}", gw.url(f"/{u}")) for u in users]
        anonymous = [await curl(gw.url("/anon")) for _ in range(4)]
    chosen = [r.response.json()["origin"] for r in first]
    assert [r.response.json()["origin"] for r in again] == chosen  # sticky per key
    assert set(chosen) == {"a", "b"}  # 12 keys over 2 equal backends: both get some
    assert len({r.response.json()["origin"] for r in anonymous}) == 1
    if middlewares:
        assert all(r.header(b"x-tag") == b"t" for r in origin.requests + origin_b.requests)


# -- gateway-generated errors (SPEC §5.5, §5.6) -----------------------------------------------


async def test_no_route_is_a_json_404(origin: Origin) -> None:
    config = one_origin(origin, rule="PathPrefix(`/api`)")
    async with running_gateway(config) as gw:
        result = await curl(gw.url("/nope"))
        head = await curl("-I", gw.url("/nope"), head=True)
    assert_generated_error(result, 404, "no route matched")
    assert head.response.status == 404
    assert head.response.body == b""
    assert origin.heads == 0


async def test_refused_backend_is_a_502() -> None:
    config = config_text([server_entry(free_port())], balancer="    connect_attempts = 1")
    async with running_gateway(config) as gw:
        result = await curl(gw.url("/x"))
    assert_generated_error(result, 502, "bad gateway")


async def test_all_weights_zero_is_a_503(origin: Origin) -> None:
    config = config_text([server_entry(origin, weight=0)])
    async with running_gateway(config) as gw:
        result = await curl(gw.url("/x"))
    assert_generated_error(result, 503, "no available backend")
    assert origin.connections == 0


async def test_slow_response_head_is_a_504(origin: Origin) -> None:
    release = trio.Event()
    origin.on("/slow", SlowHead(release))
    config = one_origin(origin, balancer='    response_header_timeout = "200ms"')
    async with running_gateway(config) as gw:
        started = trio.current_time()
        result = await curl(gw.url("/slow"))
        elapsed = trio.current_time() - started
        release.set()
        after = await curl(gw.url("/fine"))
    assert_generated_error(result, 504, "gateway timeout")
    assert 0.2 <= elapsed < 5
    assert after.response.status == 200
    assert [r.path for r in origin.completed] == [b"/slow", b"/fine"]


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(ResetBeforeResponse(), id="reset-before-response"),
        pytest.param(Garbage(), id="garbage-response"),
        pytest.param(Garbage(b"HTTP/1.1 2OO OK\r\n\r\n"), id="bad-status-line"),
        pytest.param(
            Garbage(b"HTTP/1.1 200 OK\r\nbad header: x\r\nContent-Length: 0\r\n\r\n"),
            id="invalid-header-name",
        ),
        pytest.param(
            Garbage(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"),
            id="conflicting-content-length",
        ),
    ],
)
async def test_invalid_upstream_responses_are_502(
    origin: Origin, behaviour: ResetBeforeResponse | Garbage
) -> None:
    origin.on("/bad", behaviour)
    async with running_gateway(one_origin(origin)) as gw:
        result = await curl(gw.url("/bad"))
        after = await curl(gw.url("/fine"))
    assert_generated_error(result, 502, "bad gateway")
    assert after.response.status == 200


# -- connect attempts and failover (SPEC §7.8) ------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "statuses"),
    [
        pytest.param(2, [200, 200, 200, 200], id="two-attempts-move-on"),
        pytest.param(1, [502, 200, 502, 200], id="one-attempt"),
    ],
)
async def test_connect_attempts_move_to_the_next_backend(
    origin: Origin, attempts: int, statuses: list[int]
) -> None:
    servers = [server_entry(free_port()), server_entry(origin)]
    config = config_text(servers, balancer=f"    connect_attempts = {attempts}")
    async with running_gateway(config) as gw:
        result = await curl(*(gw.url(f"/c{i}") for i in range(4)))
    assert [r.status for r in result.responses] == statuses
    assert len(origin.requests) == statuses.count(200)


@pytest.mark.parametrize(
    ("primary_weight", "backup", "status"),
    [
        pytest.param(1, "origin", 200, id="connect-failed"),
        pytest.param(0, "origin", 200, id="no-backend"),
        pytest.param(1, "refused", 502, id="connect-failed-backup-refused"),
        pytest.param(0, "empty", 503, id="no-backend-anywhere"),
    ],
)
async def test_failover_service(
    origin: Origin, primary_weight: int, backup: str, status: int
) -> None:
    backup_server = {
        "origin": server_entry(origin),
        "refused": server_entry(free_port()),
        "empty": server_entry(origin, weight=0),
    }[backup]
    config = config_text(
        [server_entry(free_port(), weight=primary_weight)],
        balancer="    connect_attempts = 1",
        service_extra='  failover {\n    service = "backup"\n  }',
        more=service_block("backup", [backup_server]),
    )
    async with running_gateway(config) as gw:
        result = await curl(gw.url("/f"))
    assert result.response.status == status
    if status == 200:
        assert result.response.json()["origin"] == "a"
        assert [r.path for r in origin.requests] == [b"/f"]
    else:
        assert origin.heads == 0


@pytest.mark.parametrize(
    ("method", "data"), [(b"POST", b"x" * 10_000), (b"GET", b"")], ids=["post-body", "get"]
)
async def test_a_backend_failing_after_the_request_was_sent_is_no_failover(
    nursery: trio.Nursery, method: bytes, data: bytes
) -> None:
    """Failover takes requests no backend has seen (no backend, every connect failed). A reset
    after the request was sent is the client's 502 at once: the body is spent, and a
    non-idempotent request may have acted. Before, the failover backend got the head without
    the body and the client waited for a 504."""
    primary, backup = Origin("primary"), Origin("backup")
    await nursery.start(primary.serve)
    await nursery.start(backup.serve)
    primary.on("/f", ResetBeforeResponse())
    config = config_text(
        [server_entry(primary)],
        balancer='    connect_attempts = 1\n    response_header_timeout = "20s"',
        service_extra='  failover {\n    service = "backup"\n  }',
        more=service_block("backup", [server_entry(backup)]),
    )
    async with running_gateway(config) as gw:
        head = method + b" /f HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(data)
        client = await RawClient.connect(gw.port)
        try:
            await client.send(head + data)
            with trio.fail_after(5):  # not the 20 s response_header_timeout
                response = await client.response(method)
        finally:
            await client.aclose()
    assert response is not None
    assert response.status == 502
    assert len(primary.requests) == 1
    assert backup.heads == 0


# -- broken and early responses (SPEC §5.2, §5.5) ---------------------------------------------


@pytest.mark.parametrize(
    "chunked", [pytest.param(False, id="content-length"), pytest.param(True, id="chunked")]
)
async def test_upstream_dying_mid_body_aborts_the_client_transfer(
    origin: Origin, chunked: bool
) -> None:
    origin.on("/die", DieMidBody(declared=100_000, sent=1000, chunked=chunked))
    async with running_gateway(one_origin(origin)) as gw:
        result = await curl(gw.url("/die"))
        response, closed = await exchange(gw.port, b"GET /die HTTP/1.1\r\nHost: h\r\n\r\n")
    # curl: 18 = "transfer closed with outstanding read data remaining".
    assert result.code == 18, result.stderr
    assert response is not None
    assert response.status == 200
    assert not response.complete
    assert len(response.body) < 100_000
    assert closed


@pytest.mark.parametrize("status", [413, 200])
async def test_an_early_upstream_answer_is_relayed(
    origin: Origin, tmp_path: Path, status: int
) -> None:
    # After a 200 curl goes on uploading; after a 413 it stops.
    origin.on("/early", EarlyAnswer(status, b"early"))
    body = write_pattern(tmp_path / "body.bin", 16 * MIB)
    async with running_gateway(one_origin(origin)) as gw:
        result = await curl(gw.url("/early"), "--data-binary", f"@{body}")
    # The gateway half-closes and drains what curl still sends (a lingering close), so no
    # reset destroys the answer and curl ends cleanly.
    assert result.code == 0, result.stderr
    assert result.responses, result.stderr
    final = result.responses[-1]
    assert (final.status, final.body) == (status, b"early")
    assert origin.heads == 1


async def test_chunked_response_trailers_are_relayed(origin: Origin) -> None:
    trailers = ((b"x-checksum", b"abc123"),)
    origin.on("/trail", ChunkedWithTrailers((b"hello ", b"world"), trailers))
    request = b"GET /trail HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n"
    async with running_gateway(one_origin(origin)) as gw:
        response, _ = await exchange(gw.port, request, close_wait=0.1)
    assert response is not None
    assert (response.status, response.body, response.complete) == (200, b"hello world", True)
    assert response.header(b"transfer-encoding") == b"chunked"
    assert response.trailers == [(b"x-checksum", b"abc123")]
    [seen] = origin.requests
    assert seen.values(b"te") == [b"trailers"]


# -- Expect, OPTIONS, TRACE, Max-Forwards, Via loops (SPEC §5.3, §5.4) ------------------------


async def test_expect_100_continue_is_answered_by_the_gateway(
    origin: Origin, tmp_path: Path
) -> None:
    size = 2 * MIB
    body = write_pattern(tmp_path / "body.bin", size)
    async with running_gateway(one_origin(origin)) as gw:
        result = await curl(
            gw.url("/up"),
            "--data-binary",
            f"@{body}",
            "-H",
            "Expect: 100-continue",
            "--expect100-timeout",
            "15",
        )
    assert result.code == 0, result.stderr
    assert result.response.status == 200
    assert result.response.informational == (100,)
    [seen] = origin.requests
    assert seen.header(b"expect") is None
    assert (seen.body_length, seen.body_sha256) == (size, pattern_sha256(size))


async def test_expect_100_continue_gets_no_100_when_the_gateway_answers_itself(
    origin: Origin,
) -> None:
    config = one_origin(origin, rule="PathPrefix(`/api`)")
    request = (
        b"POST /nope HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
    )
    async with running_gateway(config) as gw:
        response, _ = await exchange(gw.port, request, close_wait=0.1)
    assert response is not None
    assert response.status == 404
    assert response.informational == []


async def test_another_expectation_is_417(origin: Origin) -> None:
    async with running_gateway(one_origin(origin)) as gw:
        result = await curl(gw.url("/x"), "-H", "Expect: fancy")
    assert_generated_error(result, 417, "expectation failed")
    assert origin.heads == 0


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 200, id="options-asterisk"),
        pytest.param(b"TRACE / HTTP/1.1\r\nHost: h\r\n\r\n", 405, id="trace"),
        pytest.param(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 405, id="connect"),
        pytest.param(
            b"OPTIONS /x HTTP/1.1\r\nHost: h\r\nMax-Forwards: 0\r\n\r\n", 200, id="max-forwards-0"
        ),
    ],
)
async def test_requests_the_gateway_answers_itself(
    origin: Origin, request_bytes: bytes, status: int
) -> None:
    async with running_gateway(one_origin(origin)) as gw:
        response, _ = await exchange(gw.port, request_bytes, close_wait=0.1)
    assert response is not None
    assert response.status == status
    allow = response.header(b"allow")
    assert allow is not None
    assert b"GET" in allow
    assert b"TRACE" not in allow
    if status == 405:
        assert b'"method not allowed"' in response.body
    else:
        assert response.body == b""
    assert origin.heads == 0


@pytest.mark.parametrize(
    ("method", "sent", "forwarded"),
    [
        pytest.param(b"OPTIONS", b"5", b"4", id="options-decremented"),
        pytest.param(b"OPTIONS", b"1", b"0", id="options-to-zero"),
        pytest.param(b"GET", b"0", b"0", id="get-untouched"),
    ],
)
async def test_max_forwards(origin: Origin, method: bytes, sent: bytes, forwarded: bytes) -> None:
    request = method + b" /mf HTTP/1.1\r\nHost: h\r\nMax-Forwards: " + sent + b"\r\n\r\n"
    async with running_gateway(one_origin(origin)) as gw:
        response, _ = await exchange(gw.port, request, close_wait=0.1)
    assert response is not None
    assert response.status == 200
    [seen] = origin.requests
    assert seen.values(b"max-forwards") == [forwarded]


async def test_a_forwarding_loop_is_508(origin: Origin) -> None:
    via = ", ".join(["1.1 a3s-gateway"] * 10)
    async with running_gateway(one_origin(origin)) as gw:
        result = await curl(gw.url("/loop"), "-H", f"Via: {via}")
    assert_generated_error(result, 508, "forwarding loop detected")
    assert origin.heads == 0


# -- limits and client timeouts (SPEC §5.5, §14.1) ---------------------------------------------

BIG_VALUE: Final = b"a" * (40 * KIB)


@pytest.mark.parametrize(
    ("payload", "status", "text"),
    [
        pytest.param(
            b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
            414,
            "request-target too long",
            id="request-line-over-8KiB",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + BIG_VALUE + b"\r\n\r\n",
            431,
            "request header fields too large",
            id="header-section-over-32KiB",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: h\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(120))
            + b"\r\n",
            431,
            "request header fields too large",
            id="over-100-fields",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-Big: " + BIG_VALUE + b"\r\n\r\n",
            431,
            "request header fields too large",
            id="trailer-section-over-32KiB",
        ),
    ],
)
async def test_head_limits(origin: Origin, payload: bytes, status: int, text: str) -> None:
    async with running_gateway(one_origin(origin)) as gw:
        response, closed = await exchange(gw.port, payload, close_wait=5.0)
    assert response is not None
    assert response.status == status
    assert response.body == b'{"error":"%s","status":%d}' % (text.encode(), status)
    assert closed
    assert origin.completed == []


TIMEOUTS: Final = (
    '  timeouts {\n    request_head = "200ms"\n    idle = "200ms"\n    body_idle = "200ms"\n  }'
)


async def test_an_incomplete_head_times_out_with_408(origin: Origin) -> None:
    async with running_gateway(one_origin(origin, entrypoint=TIMEOUTS)) as gw:
        started = trio.current_time()
        response, closed = await exchange(gw.port, b"GET / HTTP/1.1\r\nHost", close_wait=5.0)
        elapsed = trio.current_time() - started
    assert response is not None
    assert response.status == 408
    assert closed
    assert 0.2 <= elapsed < 5
    assert origin.heads == 0


async def test_a_stalled_request_body_times_out_with_408(origin: Origin) -> None:
    request = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc"
    async with running_gateway(one_origin(origin, entrypoint=TIMEOUTS)) as gw:
        response, closed = await exchange(gw.port, request, close_wait=5.0)
    assert response is not None
    assert response.status == 408
    assert closed
    assert origin.completed == []


async def test_an_idle_keep_alive_connection_is_closed_silently(origin: Origin) -> None:
    async with running_gateway(one_origin(origin, entrypoint=TIMEOUTS)) as gw:
        client = await RawClient.connect(gw.port)
        try:
            await client.send(b"GET /once HTTP/1.1\r\nHost: h\r\n\r\n")
            response = await client.response()
            started = trio.current_time()
            closed = await client.closed(5.0)
            elapsed = trio.current_time() - started
        finally:
            await client.aclose()
    assert response is not None
    assert response.status == 200
    assert closed
    assert 0.1 <= elapsed < 5


# -- graceful drain (SPEC §2.4) ---------------------------------------------------------------


@asynccontextmanager
async def idle_closed(client: RawClient) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await client.aclose()


async def test_drain_finishes_the_request_in_flight_and_refuses_new_connections(
    origin: Origin,
) -> None:
    release = trio.Event()
    origin.on("/slow", SlowHead(release))
    results: list[CurlResult] = []
    async with running_gateway(one_origin(origin)) as gw:
        idle = await RawClient.connect(gw.port)
        await idle.send(b"GET /warm HTTP/1.1\r\nHost: h\r\n\r\n")
        warm = await idle.response()
        assert warm is not None
        assert warm.status == 200

        async def slow_client() -> None:
            results.append(await curl(gw.url("/slow")))

        async with idle_closed(idle), trio.open_nursery() as nursery:
            nursery.start_soon(slow_client)
            await origin.wait_for(lambda: len(origin.completed) == 2)
            nursery.start_soon(gw.gateway.shutdown, 10.0)
            with trio.fail_after(CLIENT_WAIT):
                await wait_refused(gw.port)
            assert gw.gateway.state() is GatewayState.STOPPING
            # An idle keep-alive connection is closed at once.
            assert await idle.closed(5.0)
            release.set()
        assert gw.gateway.state() is GatewayState.STOPPED
    [result] = results
    assert result.code == 0, result.stderr
    assert result.response.status == 200
    assert result.response.header(b"connection") == b"close"
    assert result.response.json()["target"] == "/slow"


async def test_drain_grace_expiry_cancels_what_is_left(origin: Origin) -> None:
    origin.on("/never", SlowHead(trio.Event()))
    results: list[CurlResult] = []
    async with running_gateway(one_origin(origin)) as gw:

        async def stuck_client() -> None:
            results.append(await curl(gw.url("/never")))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stuck_client)
            await origin.wait_for(lambda: len(origin.completed) == 1)
            started = trio.current_time()
            await gw.gateway.shutdown(0.3)
            elapsed = trio.current_time() - started
    assert 0.25 <= elapsed < 5
    [result] = results
    assert result.code != 0
    assert result.responses == ()


# -- memory stays flat (SPEC §5.2, §14.2): slow, opt-in ---------------------------------------

SLOW: Final = os.environ.get("A3S_E2E_SLOW") == "1"
GIB: Final = 1024 * MIB


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not SLOW, reason="set A3S_E2E_SLOW=1 to run the 1 GiB streaming checks")
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
async def test_one_gib_each_way_keeps_memory_flat(origin: Origin) -> None:
    """The gateway, the origin and the hashing client share this process: all of them stream,
    so RSS may not grow by more than a few buffers while 1 GiB passes in each direction."""
    origin.on("/big", Download(GIB))
    peak = baseline = rss_bytes()

    async with running_gateway(one_origin(origin)) as gw, trio.open_nursery() as sampler:

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_bytes())
                await trio.sleep(0.05)

        sampler.start_soon(sample)
        got = await curl_digest(gw.url("/big"))
        await upload_gib(gw.url("/up"))
        sampler.cancel_scope.cancel()
    assert (got.code, got.status, got.size) == (0, 200, GIB), got.stderr
    assert got.sha256 == pattern_sha256(GIB)
    upload = origin.requests[-1]
    assert (upload.body_length, upload.body_sha256) == (GIB, pattern_sha256(GIB))
    assert peak - baseline < 64 * MIB, f"RSS grew by {(peak - baseline) // MIB} MiB"


async def upload_gib(url: str) -> None:
    """PUT 1 GiB from a pipe (``curl -T -``: chunked, nothing buffered)."""
    process = await trio.lowlevel.open_process(
        [*CURL_BASE, "-o", "/dev/null", "-T", "-", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None
    try:
        for piece in pattern(GIB, chunk=len(BLOCK)):
            await process.stdin.send_all(piece)
        await process.stdin.aclose()
        assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
