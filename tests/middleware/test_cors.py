"""The ``cors`` middleware (SPEC §8.8): preflight detection and answers, origin matching, and
the response side on every status, with upstream copies replaced and ``Vary`` kept right."""

from __future__ import annotations

import msgspec
import pytest

from a3s_gateway.config.schema_middlewares import Cors
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.middleware.cors import PREFLIGHT_REJECTED, PREFLIGHT_VARY, CorsMiddleware
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.protocols.responses import GeneratedResponse, error_response

APP = "https://app.example.com"
DEFAULT_METHODS = b"GET, POST, PUT, DELETE, OPTIONS"
DEFAULT_HEADERS = b"Content-Type, Authorization"


def make(
    origins: tuple[str, ...] = ("*",),
    *,
    methods: tuple[str, ...] = ("GET", "POST", "PUT", "DELETE", "OPTIONS"),
    headers: tuple[str, ...] = ("Content-Type", "Authorization"),
    expose: tuple[str, ...] = (),
    credentials: bool = False,
    max_age: int = 86400,
) -> CorsMiddleware:
    return CorsMiddleware.from_config(
        "cors",
        Cors(
            allowed_origins=origins,
            allowed_methods=methods,
            allowed_headers=headers,
            expose_headers=expose,
            allow_credentials=credentials,
            max_age=max_age,
        ),
    )


def request_state(method: bytes = b"GET", headers: Headers | None = None) -> RequestState:
    return RequestState(
        method=method,
        path=b"/api",
        query=b"",
        headers=list(headers or []),
        authority=b"api.example.com",
        client_ip="198.51.100.7",
        peer_ip="198.51.100.7",
        tls=True,
    )


def preflight_state(
    origin: bytes | None = APP.encode(),
    method: bytes | None = b"PUT",
    requested: bytes | None = None,
) -> RequestState:
    headers: Headers = [(b"host", b"api.example.com")]
    if origin is not None:
        headers.append((b"origin", origin))
    if method is not None:
        headers.append((b"access-control-request-method", method))
    if requested is not None:
        headers.append((b"access-control-request-headers", requested))
    return request_state(b"OPTIONS", headers)


async def answer(cors: CorsMiddleware, state: RequestState) -> GeneratedResponse:
    response = await cors.request(state)
    assert response is not None
    return response


def values(headers: Headers, name: bytes) -> list[bytes]:
    return [value for field, value in headers if field == name]


def field(headers: Headers, name: bytes) -> bytes | None:
    found = values(headers, name)
    assert len(found) <= 1, f"{name!r} sent {len(found)} times"
    return found[0] if found else None


def respond(
    cors: CorsMiddleware, origin: bytes | None, headers: Headers | None = None, status: int = 200
) -> Headers:
    state = request_state(headers=[(b"origin", origin)] if origin is not None else [])
    lines = list(headers or [(b"content-type", b"text/plain")])
    cors.response(state, status, lines)
    return lines


def assert_rejected(response: GeneratedResponse) -> None:
    assert response.head.status == 403
    assert msgspec.json.decode(response.body) == {"error": PREFLIGHT_REJECTED, "status": 403}
    assert field(response.head.headers, b"vary") == PREFLIGHT_VARY
    assert field(response.head.headers, b"access-control-allow-origin") is None
    assert field(response.head.headers, b"content-type") == b"application/json"


# --- preflight detection -------------------------------------------------------------------


async def test_options_with_origin_and_request_method_is_a_preflight() -> None:
    response = await answer(make(), preflight_state())
    assert response.head.status == 204


@pytest.mark.parametrize(
    "state",
    [
        preflight_state(origin=None),
        preflight_state(method=None),
        preflight_state(origin=None, method=None),
        request_state(
            b"GET", [(b"origin", APP.encode()), (b"access-control-request-method", b"PUT")]
        ),
        request_state(
            b"options", [(b"origin", APP.encode()), (b"access-control-request-method", b"PUT")]
        ),
    ],
    ids=["no-origin", "no-request-method", "plain-options", "get", "lower-case-method"],
)
async def test_other_requests_pass_through_unchanged(state: RequestState) -> None:
    before = list(state.headers)
    assert await make().request(state) is None
    assert state.headers == before


async def test_options_without_request_method_from_a_disallowed_origin_passes() -> None:
    # OPTIONS from a disallowed origin without Access-Control-Request-Method is not a preflight.
    state = request_state(b"OPTIONS", [(b"origin", b"https://evil.example")])
    assert await make((APP,)).request(state) is None


# --- accepted preflights -------------------------------------------------------------------


async def test_default_policy_answers_star_and_the_lists() -> None:
    response = await answer(make(), preflight_state(requested=b"content-type"))
    headers = response.head.headers
    assert response.body == b""
    assert not response.close
    assert field(headers, b"access-control-allow-origin") == b"*"
    assert field(headers, b"access-control-allow-methods") == DEFAULT_METHODS
    assert field(headers, b"access-control-allow-headers") == DEFAULT_HEADERS
    assert field(headers, b"access-control-max-age") == b"86400"
    assert field(headers, b"access-control-allow-credentials") is None
    assert field(headers, b"vary") == PREFLIGHT_VARY
    assert field(headers, b"content-length") is None  # a 204 has no Content-Length
    assert field(headers, b"access-control-expose-headers") is None


async def test_listed_origin_is_echoed_with_credentials() -> None:
    cors = make((APP,), credentials=True, max_age=0)
    headers = (await answer(cors, preflight_state())).head.headers
    assert field(headers, b"access-control-allow-origin") == APP.encode()
    assert field(headers, b"access-control-allow-credentials") == b"true"
    assert field(headers, b"access-control-max-age") == b"0"


async def test_star_with_credentials_echoes_the_origin() -> None:
    cors = make(("*",), credentials=True)
    headers = (await answer(cors, preflight_state(origin=b"https://any.example"))).head.headers
    assert field(headers, b"access-control-allow-origin") == b"https://any.example"


async def test_star_and_listed_origin_without_credentials_answers_star() -> None:
    headers = (await answer(make((APP, "*")), preflight_state())).head.headers
    assert field(headers, b"access-control-allow-origin") == b"*"


async def test_method_star_echoes_the_requested_method() -> None:
    cors = make(methods=("*",))
    headers = (await answer(cors, preflight_state(method=b"PROPFIND"))).head.headers
    assert field(headers, b"access-control-allow-methods") == b"PROPFIND"


async def test_header_star_echoes_the_requested_names() -> None:
    cors = make(headers=("*",))
    state = preflight_state(requested=b"X-Trace,  content-type ,,x-b")
    headers = (await answer(cors, state)).head.headers
    assert field(headers, b"access-control-allow-headers") == b"x-trace, content-type, x-b"


async def test_header_star_without_requested_headers_sends_no_allow_headers() -> None:
    headers = (await answer(make(headers=("*",)), preflight_state())).head.headers
    assert field(headers, b"access-control-allow-headers") is None


async def test_requested_headers_compare_case_insensitively_and_skip_empty_elements() -> None:
    cors = make(headers=("Content-Type", "X-Custom"))
    state = preflight_state(requested=b"CONTENT-TYPE, , x-custom,")
    headers = (await answer(cors, state)).head.headers
    assert field(headers, b"access-control-allow-headers") == b"Content-Type, X-Custom"


async def test_requested_headers_over_several_lines_are_all_checked() -> None:
    state = preflight_state(requested=b"content-type")
    state.headers.append((b"access-control-request-headers", b"x-other"))
    assert_rejected(await answer(make(), state))


async def test_empty_allowed_headers_allow_a_preflight_that_requests_none() -> None:
    headers = (await answer(make(headers=()), preflight_state())).head.headers
    assert field(headers, b"access-control-allow-headers") is None


async def test_answers_are_fresh_objects() -> None:
    cors = make()
    first = await answer(cors, preflight_state())
    first.head.headers.append((b"x-mutated", b"1"))
    second = await answer(cors, preflight_state())
    assert field(second.head.headers, b"x-mutated") is None
    rejected = await answer(cors, preflight_state(method=b"PATCH"))
    rejected.head.headers.clear()
    assert_rejected(await answer(cors, preflight_state(method=b"PATCH")))


# --- rejected preflights -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cors", "state"),
    [
        (make((APP,)), preflight_state(origin=b"https://evil.example")),
        (make(), preflight_state(method=b"PATCH")),
        (make(), preflight_state(method=b"put")),  # methods are case-sensitive (RFC 9110 §9.1)
        (make(), preflight_state(requested=b"content-type, x-secret")),
        (make(methods=("*",)), preflight_state(method=b"BAD METHOD")),
        (make(methods=("*",)), preflight_state(method=b"")),
        (make(headers=("*",)), preflight_state(requested=b"x-ok, bad header")),
        (make(headers=()), preflight_state(requested=b"content-type")),
    ],
    ids=[
        "origin",
        "method",
        "method-case",
        "header",
        "star-method-not-a-token",
        "star-method-empty",
        "star-header-not-a-token",
        "no-headers-allowed",
    ],
)
async def test_rejected_preflights_answer_403(cors: CorsMiddleware, state: RequestState) -> None:
    assert_rejected(await answer(cors, state))


async def test_several_request_method_lines_are_rejected() -> None:
    state = preflight_state(method=b"GET")
    state.headers.append((b"access-control-request-method", b"GET"))
    assert_rejected(await answer(make(), state))


# --- origin matching -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "origin", "allowed"),
    [
        (APP, APP, True),
        (APP, "HTTPS://App.Example.COM", True),
        ("HTTPS://APP.example.com", APP, True),
        (APP, "http://app.example.com", False),
        (APP, "https://app.example.com:443", False),
        (APP, "https://app.example.com.evil.example", False),
        (APP, "https://xapp.example.com", False),
        ("https://*.example.com", "https://a.example.com", True),
        ("https://*.example.com", "https://A-1_b.Example.com", True),
        ("HTTPS://*.EXAMPLE.com", "https://a.example.com", True),
        ("https://*.example.com", "https://example.com", False),
        ("https://*.example.com", "https://.example.com", False),
        ("https://*.example.com", "https://a.b.example.com", False),
        ("https://*.example.com", "http://a.example.com", False),
        ("https://*.example.com", "https://a.example.com:8443", False),
        ("https://*.example.com", "https://a.example.com.evil.example", False),
        ("https://*.example.com", "https://evil.example/.example.com", False),
        ("https://*.example.com", "https://user@a.example.com", False),
        ("https://*.example.com", "https://a b.example.com", False),
        ("https://*.example.com:8443", "https://a.example.com:8443", True),
        ("https://*.example.com:8443", "https://a.example.com", False),
        ("https://*.example.com:8443", "https://a.example.com:9443", False),
        ("http://localhost:3000", "http://localhost:3000", True),
        ("http://[::1]:8080", "http://[::1]:8080", True),
    ],
)
def test_origin_matching(configured: str, origin: str, allowed: bool) -> None:
    cors = make((configured,))
    expected = origin.encode() if allowed else None
    assert cors.allowed_origin([origin.encode()]) == expected


def test_star_with_credentials_echoes_only_well_formed_origins() -> None:
    cors = make(("*",), credentials=True)
    assert cors.allowed_origin([b"null"]) == b"null"
    assert cors.allowed_origin([b"http://[::1]:8080"]) == b"http://[::1]:8080"
    for junk in (b"not an origin", b"https://a.example/path", b"https://a, https://b", b"\xff"):
        assert cors.allowed_origin([junk]) is None


def test_several_origin_lines_are_never_allowed_but_plain_star_answers_star() -> None:
    twice = [APP.encode(), APP.encode()]
    assert make((APP,)).allowed_origin(twice) is None
    assert make(("*",), credentials=True).allowed_origin(twice) is None
    assert make().allowed_origin(twice) == b"*"


JUNK_ORIGINS = [
    b"",
    b"null",
    b"*",
    b"://",
    b"https://",
    b"https://*.example.com",
    b"\xff\xfe\x00",
    b"https://a.example.com:99999999999999999999",
    b"https://[::1",
    b" ",
    b"%",
]
POLICIES = [
    make(),
    make((APP,)),
    make(("*",), credentials=True),
    make(("https://*.example.com", APP), credentials=True, expose=("X-Id",)),
    make(methods=("*",), headers=("*",)),
]


@pytest.mark.parametrize("origin", JUNK_ORIGINS)
@pytest.mark.parametrize("cors", POLICIES)
async def test_invalid_origin_values_never_raise(cors: CorsMiddleware, origin: bytes) -> None:
    state = preflight_state(origin=origin, method=b"\x00 x", requested=b"\xff, ,a b")
    response = await cors.request(state)
    assert response is not None
    assert response.head.status == 403
    respond(cors, origin, status=500)


# --- response side -------------------------------------------------------------------------


def test_no_origin_with_plain_star_adds_nothing() -> None:
    assert respond(make(), None) == [(b"content-type", b"text/plain")]


def test_no_origin_adds_only_vary_and_leaves_upstream_fields() -> None:
    upstream: Headers = [(b"access-control-allow-origin", b"https://other.example")]
    for cors in (make((APP,)), make(("*",), credentials=True)):
        lines = respond(cors, None, list(upstream))
        assert lines == [*upstream, (b"vary", b"Origin")]


def test_allowed_origin_gets_the_fields_and_vary() -> None:
    cors = make((APP,), credentials=True, expose=("X-Request-Id", "X-Total"))
    lines = respond(cors, APP.encode())
    assert field(lines, b"access-control-allow-origin") == APP.encode()
    assert field(lines, b"access-control-allow-credentials") == b"true"
    assert field(lines, b"access-control-expose-headers") == b"X-Request-Id, X-Total"
    assert field(lines, b"vary") == b"Origin"
    assert field(lines, b"access-control-allow-methods") is None
    assert field(lines, b"access-control-max-age") is None


def test_plain_star_answers_star_without_vary() -> None:
    lines = respond(make(), b"https://any.example")
    assert field(lines, b"access-control-allow-origin") == b"*"
    assert field(lines, b"vary") is None
    assert field(lines, b"access-control-allow-credentials") is None
    assert field(lines, b"access-control-expose-headers") is None


def test_upstream_copies_are_replaced() -> None:
    upstream: Headers = [
        (b"access-control-allow-origin", b"*"),
        (b"content-type", b"text/plain"),
        (b"access-control-allow-origin", b"https://other.example"),
        (b"access-control-allow-credentials", b"false"),
        (b"access-control-expose-headers", b"X-Upstream"),
    ]
    lines = respond(make((APP,), expose=("X-Id",)), APP.encode(), upstream)
    assert lines == [
        (b"content-type", b"text/plain"),
        (b"access-control-allow-origin", APP.encode()),
        (b"access-control-expose-headers", b"X-Id"),
        (b"vary", b"Origin"),
    ]


def test_disallowed_origin_gets_no_cors_fields_but_vary() -> None:
    upstream: Headers = [
        (b"access-control-allow-origin", b"*"),
        (b"access-control-allow-credentials", b"true"),
        (b"access-control-expose-headers", b"X-Upstream"),
        (b"content-type", b"text/plain"),
    ]
    lines = respond(make((APP,), credentials=True), b"https://evil.example", upstream)
    assert lines == [(b"content-type", b"text/plain"), (b"vary", b"Origin")]


@pytest.mark.parametrize(
    ("upstream_vary", "added"),
    [
        (b"Accept-Encoding", True),
        (b"accept-encoding, origin", False),
        (b"Accept-Encoding,Origin", False),
        (b"*", False),
        (b"Origin-Agent-Cluster", True),
    ],
)
def test_vary_origin_is_not_duplicated(upstream_vary: bytes, added: bool) -> None:
    lines = respond(make((APP,)), APP.encode(), [(b"vary", upstream_vary)])
    assert values(lines, b"vary") == [upstream_vary, b"Origin"] if added else [upstream_vary]


@pytest.mark.parametrize("status", [101, 200, 204, 304, 401, 403, 429, 500, 502, 503, 504])
def test_every_status_gets_the_fields(status: int) -> None:
    lines = respond(make((APP,)), APP.encode(), status=status)
    assert field(lines, b"access-control-allow-origin") == APP.encode()


def test_short_circuit_of_a_later_middleware_gets_the_fields() -> None:
    rejected = error_response(401, "invalid or missing API key")
    lines = rejected.head.headers
    make((APP,), credentials=True).response(
        request_state(headers=[(b"origin", APP.encode())]), 401, lines
    )
    assert field(lines, b"access-control-allow-origin") == APP.encode()
    assert field(lines, b"access-control-allow-credentials") == b"true"
    assert field(lines, b"content-type") == b"application/json"


def test_response_side_changes_the_list_in_place_and_is_idempotent() -> None:
    cors = make((APP,), credentials=True, expose=("X-Id",))
    state = request_state(headers=[(b"origin", APP.encode())])
    lines: Headers = [(b"access-control-allow-origin", b"*"), (b"server", b"upstream")]
    same = lines
    cors.response(state, 200, lines)
    once = list(lines)
    cors.response(state, 200, lines)
    assert lines is same
    assert sorted(lines) == sorted(once)  # the same lines; CORS fields move after Vary


def test_preflight_answer_is_unchanged_by_its_own_response_side() -> None:
    cors = make((APP,), credentials=True)
    state = preflight_state()
    response = cors.preflight(state.values(b"origin"), [b"PUT"], [])
    before = list(response.head.headers)
    cors.response(state, 204, response.head.headers)
    assert sorted(response.head.headers) == sorted(before)
