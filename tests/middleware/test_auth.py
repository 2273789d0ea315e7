"""The ``api-key`` (SPEC §8.2) and ``basic-auth`` (SPEC §8.3) middlewares."""

from __future__ import annotations

import base64
import hmac
import json

import pytest

from a3s_gateway.config.schema_middlewares import ApiKey, BasicAuth
from a3s_gateway.middleware.auth import (
    ApiKeyMiddleware,
    BasicAuthMiddleware,
    decode_basic_token,
)
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.protocols.responses import GeneratedResponse


def make_state(headers: Headers) -> RequestState:
    return RequestState(
        method=b"GET",
        path=b"/",
        query=b"",
        headers=headers,
        authority=b"example.com",
        client_ip="192.0.2.1",
        peer_ip="192.0.2.1",
        tls=False,
    )


def header(response: GeneratedResponse, name: bytes) -> list[bytes]:
    return [value for field, value in response.head.headers if field == name]


def assert_401(response: GeneratedResponse | None, text: str, challenge: bytes) -> None:
    assert response is not None
    assert response.head.status == 401
    assert json.loads(response.body) == {"error": text, "status": 401}
    assert header(response, b"www-authenticate") == [challenge]
    assert header(response, b"content-type") == [b"application/json"]
    assert header(response, b"content-length") == [str(len(response.body)).encode()]
    assert not response.close


def basic(credentials: bytes, scheme: bytes = b"Basic") -> tuple[bytes, bytes]:
    return (b"authorization", scheme + b" " + base64.b64encode(credentials))


# --------------------------------------------------------------------------- api-key

API_CHALLENGE = b'ApiKey header="X-API-Key"'


def api_key(*keys: str, header_name: str = "X-API-Key") -> ApiKeyMiddleware:
    return ApiKeyMiddleware.from_config("keys", ApiKey(header=header_name, keys=keys))


async def test_api_key_accepts_each_configured_key_and_forwards_unchanged() -> None:
    middleware = api_key("alpha", "beta")
    for key in (b"alpha", b"beta"):
        headers = [(b"x-api-key", key), (b"accept", b"*/*")]
        state = make_state(headers)
        assert await middleware.request(state) is None
        assert state.headers == [(b"x-api-key", key), (b"accept", b"*/*")]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([], id="missing"),
        pytest.param([(b"x-api-key", b"wrong")], id="wrong"),
        pytest.param([(b"x-api-key", b"")], id="empty"),
        pytest.param([(b"x-api-key", b"alph")], id="prefix"),
        pytest.param([(b"x-api-key", b"alphaa")], id="longer"),
        pytest.param([(b"x-api-key", b"ALPHA")], id="case"),
        pytest.param([(b"x-api-key", b"alpha, beta")], id="joined"),
        pytest.param([(b"x-api-key", b"alpha"), (b"x-api-key", b"alpha")], id="duplicated-same"),
        pytest.param([(b"x-api-key", b"alpha"), (b"x-api-key", b"beta")], id="duplicated-both"),
        pytest.param([(b"x-api-key", b"alpha"), (b"x-api-key", b"no")], id="duplicated-one-ok"),
        pytest.param([(b"authorization", b"alpha")], id="other-field"),
    ],
)
async def test_api_key_rejects(headers: Headers) -> None:
    response = await api_key("alpha", "beta").request(make_state(headers))
    assert_401(response, "invalid or missing API key", API_CHALLENGE)


async def test_api_key_error_body_is_exactly_the_spec_json() -> None:
    response = await api_key("alpha").request(make_state([]))
    assert response is not None
    assert response.body == b'{"error":"invalid or missing API key","status":401}'


async def test_api_key_custom_header_is_case_insensitive_and_named_in_challenge() -> None:
    middleware = api_key("k", header_name="Api-Token")
    assert await middleware.request(make_state([(b"api-token", b"k")])) is None
    response = await middleware.request(make_state([(b"x-api-key", b"k")]))
    assert_401(response, "invalid or missing API key", b'ApiKey header="Api-Token"')


async def test_api_key_non_ascii_key_compares_utf8_bytes() -> None:
    middleware = api_key("clé")
    assert await middleware.request(make_state([(b"x-api-key", "clé".encode())])) is None
    assert await middleware.request(make_state([(b"x-api-key", b"cl\xe9")])) is not None


@pytest.mark.parametrize("value", [b"k0", b"k2", b"k4", b"nope"])
async def test_api_key_compares_every_key_without_stopping(
    monkeypatch: pytest.MonkeyPatch, value: bytes
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr("a3s_gateway.middleware.auth.hmac.compare_digest", recording)
    keys = [f"k{i}" for i in range(5)]
    response = await api_key(*keys).request(make_state([(b"x-api-key", value)]))
    assert (response is None) == (value != b"nope")
    assert calls == [(value, key.encode()) for key in keys]


async def test_api_key_responses_are_fresh_objects() -> None:
    middleware = api_key("k")
    first = await middleware.request(make_state([]))
    second = await middleware.request(make_state([]))
    assert first is not None
    assert second is not None
    assert first.head.headers is not second.head.headers


def test_api_key_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        ApiKeyMiddleware("none", header="X-API-Key", keys=[])


async def test_api_key_has_no_response_side() -> None:
    headers = [(b"content-type", b"text/plain")]
    api_key("k").response(make_state([]), 200, headers)
    assert headers == [(b"content-type", b"text/plain")]


# --------------------------------------------------------------------------- basic-auth

BASIC_CHALLENGE = b'Basic realm="a3s-gateway", charset="UTF-8"'
REQUIRED = "authentication required"
INVALID = "invalid credentials"


def basic_auth(
    username: str = "alice",
    password: str = "s3cret",
    *,
    realm: str | None = None,
    remove_header: bool = False,
) -> BasicAuthMiddleware:
    block = (
        BasicAuth(username=username, password=password, remove_header=remove_header)
        if realm is None
        else BasicAuth(
            username=username, password=password, realm=realm, remove_header=remove_header
        )
    )
    return BasicAuthMiddleware.from_config("login", block)


@pytest.mark.parametrize("scheme", [b"Basic", b"basic", b"BASIC", b"bAsIc"])
async def test_basic_accepts_the_credentials_with_any_scheme_case(scheme: bytes) -> None:
    headers = [basic(b"alice:s3cret", scheme), (b"accept", b"*/*")]
    state = make_state(headers)
    assert await basic_auth().request(state) is None
    assert state.headers == headers


async def test_basic_accepts_several_spaces_after_the_scheme() -> None:
    token = base64.b64encode(b"alice:s3cret")
    assert await basic_auth().request(make_state([(b"authorization", b"Basic   " + token)])) is None


async def test_basic_splits_at_the_first_colon_so_passwords_may_contain_colons() -> None:
    middleware = basic_auth(password="a:b:c")
    assert await middleware.request(make_state([basic(b"alice:a:b:c")])) is None
    assert_401(await middleware.request(make_state([basic(b"alice:a")])), INVALID, BASIC_CHALLENGE)


async def test_basic_utf8_credentials() -> None:
    middleware = basic_auth("jürgen", "pässwört")
    credentials = "jürgen:pässwört".encode()
    assert await middleware.request(make_state([basic(credentials)])) is None
    latin1 = "jürgen:pässwört".encode("latin-1")
    assert_401(await middleware.request(make_state([basic(latin1)])), INVALID, BASIC_CHALLENGE)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([], id="missing"),
        pytest.param([(b"authorization", b"Bearer abc.def.ghi")], id="bearer"),
        pytest.param([(b"authorization", b"Digest username=alice")], id="digest"),
        pytest.param([(b"authorization", b"Basically " + base64.b64encode(b"a:b"))], id="prefix"),
        pytest.param([(b"authorization", base64.b64encode(b"alice:s3cret"))], id="no-scheme"),
        pytest.param([(b"proxy-authorization", b"Basic YWxpY2U6czNjcmV0")], id="proxy-field"),
        # RFC 9110 §11.4: the scheme ends at a space; "Basic<TAB>..." is one unknown token.
        pytest.param([(b"authorization", b"Basic\tYWxpY2U6czNjcmV0")], id="tab-separator"),
    ],
)
async def test_basic_without_basic_credentials_is_authentication_required(
    headers: Headers,
) -> None:
    assert_401(await basic_auth().request(make_state(headers)), REQUIRED, BASIC_CHALLENGE)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"Basic " + base64.b64encode(b"alice:wrong"), id="wrong-password"),
        pytest.param(b"Basic " + base64.b64encode(b"bob:s3cret"), id="wrong-username"),
        pytest.param(b"Basic " + base64.b64encode(b"Alice:s3cret"), id="username-case"),
        pytest.param(b"Basic " + base64.b64encode(b"alice:s3cret "), id="trailing-space"),
        pytest.param(b"Basic " + base64.b64encode(b"alice:"), id="empty-password"),
        pytest.param(b"Basic " + base64.b64encode(b":s3cret"), id="empty-username"),
        pytest.param(b"Basic " + base64.b64encode(b"alices3cret"), id="no-colon"),
        pytest.param(b"Basic " + base64.b64encode(b"s3cret:alice"), id="swapped"),
        pytest.param(b"Basic " + base64.b64encode(b"alice\xff:s3cret"), id="not-utf8"),
        pytest.param(b"Basic " + base64.b64encode(b"alice:s3cret\xc3"), id="truncated-utf8"),
        pytest.param(b"Basic", id="no-token"),
        pytest.param(b"Basic ", id="empty-token"),
        pytest.param(b"Basic YWxpY2U6czNjcmV", id="missing-padding"),
        pytest.param(b"Basic YWxpY2U6czNjcmV0=", id="extra-padding"),
        pytest.param(b"Basic YWxpY2U6czNjcmV0==", id="extra-padding-2"),
        pytest.param(b"Basic YWxpY2U6czNjcmV0YQ=", id="short-padding"),
        pytest.param(b"Basic YWxpY2U6czNjcmV0YR==", id="nonzero-pad-bits"),
        pytest.param(b"Basic YWxp Y2U6czNjcmV0", id="inner-space"),
        pytest.param(b"Basic YWxpY2U6czNjcmV0\t", id="trailing-tab"),
        pytest.param(b"Basic YWxpY2U6-czNjcmV0", id="urlsafe-char"),
        pytest.param(b"Basic YWxpY2U6czNjcmV0!", id="junk-char"),
        pytest.param(b"Basic YWxp=Y2U6czNjcmV0", id="pad-in-middle"),
    ],
)
async def test_basic_malformed_or_wrong_credentials_are_invalid(value: bytes) -> None:
    response = await basic_auth().request(make_state([(b"authorization", value)]))
    assert_401(response, INVALID, BASIC_CHALLENGE)


async def test_basic_duplicated_authorization_is_invalid_even_if_both_are_right() -> None:
    headers = [basic(b"alice:s3cret"), basic(b"alice:s3cret")]
    assert_401(await basic_auth().request(make_state(headers)), INVALID, BASIC_CHALLENGE)


async def test_basic_error_bodies_are_exactly_the_spec_json() -> None:
    middleware = basic_auth()
    required = await middleware.request(make_state([]))
    invalid = await middleware.request(make_state([basic(b"alice:nope")]))
    assert required is not None
    assert invalid is not None
    assert required.body == b'{"error":"authentication required","status":401}'
    assert invalid.body == b'{"error":"invalid credentials","status":401}'


async def test_basic_realm_is_in_the_challenge() -> None:
    response = await basic_auth(realm="Staff area").request(make_state([]))
    assert_401(response, REQUIRED, b'Basic realm="Staff area", charset="UTF-8"')


async def test_basic_remove_header_drops_every_authorization_line_after_success() -> None:
    received = [(b"accept", b"*/*"), basic(b"alice:s3cret"), (b"x-other", b"1")]
    state = make_state(received)
    assert await basic_auth(remove_header=True).request(state) is None
    assert state.headers == [(b"accept", b"*/*"), (b"x-other", b"1")]
    assert received[1][0] == b"authorization"  # the list as received is not mutated


async def test_basic_remove_header_leaves_rejected_requests_alone() -> None:
    state = make_state([basic(b"alice:nope")])
    response = await basic_auth(remove_header=True).request(state)
    assert_401(response, INVALID, BASIC_CHALLENGE)
    assert state.headers == [basic(b"alice:nope")]


async def test_basic_keeps_authorization_without_remove_header() -> None:
    state = make_state([basic(b"alice:s3cret")])
    assert await basic_auth().request(state) is None
    assert state.headers == [basic(b"alice:s3cret")]


@pytest.mark.parametrize(
    "credentials",
    [b"alice:s3cret", b"alice:wrong", b"mallory:s3cret", b"x:y", b"alice-and-more:s3cret"],
)
async def test_basic_always_compares_username_and_password(
    monkeypatch: pytest.MonkeyPatch, credentials: bytes
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr("a3s_gateway.middleware.auth.hmac.compare_digest", recording)
    await basic_auth().request(make_state([basic(credentials)]))
    username, _, password = credentials.partition(b":")
    assert calls == [(username, b"alice"), (password, b"s3cret")]


def test_basic_rejects_bad_construction() -> None:
    with pytest.raises(ValueError, match="':'"):
        BasicAuthMiddleware("x", username="a:b", password="p")
    with pytest.raises(ValueError, match="realm"):
        BasicAuthMiddleware("x", username="a", password="p", realm='a"b')


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (base64.b64encode(b"a:b"), (b"a", b"b")),
        (base64.b64encode(b"a:"), (b"a", b"")),
        (base64.b64encode(b":"), (b"", b"")),
        (base64.b64encode(b"a:b:c"), (b"a", b"b:c")),
        (base64.b64encode(b"ab"), None),
        (base64.b64encode(b"\xff:\xfe"), None),
        (b"", None),
        (b"YQ", None),
        (b"YQ=", None),
        (b"YQ==", None),  # "a": no colon
        (b"YR==", None),
        (b"====", None),
    ],
)
def test_decode_basic_token(token: bytes, expected: tuple[bytes, bytes] | None) -> None:
    assert decode_basic_token(token) == expected


def test_reprs() -> None:
    assert repr(basic_auth()) == "<BasicAuthMiddleware 'login'>"
    assert repr(api_key("k")) == "<ApiKeyMiddleware 'keys'>"


def test_a_realm_with_a_control_character_is_a_config_error() -> None:
    from a3s_gateway.config.load import load_config_text
    from a3s_gateway.errors import ConfigError

    text = (
        'entrypoints "web" {\n  address = "127.0.0.1:0"\n}\n'
        'middlewares "a" {\n  type = "basic-auth"\n  username = "u"\n  password = "p"\n'
        '  realm = "x\\ny"\n}\n'
    )
    with pytest.raises(ConfigError, match="control characters"):
        load_config_text(text)
