"""Properties of ``api-key`` and ``basic-auth`` (SPEC §8.2, §8.3).

For generated configurations and generated requests, each middleware passes exactly the requests
that carry the configured credentials in the exact accepted form, and answers every other one
with a 401 carrying the challenge; it never raises. The oracle is written independently of the
implementation (a set lookup for api-key, a regular expression over the expected header value
for basic-auth). The request sides never await, so the coroutine is driven by hand.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Coroutine

from hypothesis import event, given
from hypothesis import strategies as st

from a3s_gateway.config.schema_middlewares import ApiKey, BasicAuth
from a3s_gateway.middleware.auth import ApiKeyMiddleware, BasicAuthMiddleware
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.protocols.responses import GeneratedResponse


def run(coroutine: Coroutine[object, object, GeneratedResponse | None]) -> GeneratedResponse | None:
    """The result of a coroutine that must finish without suspending."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        result: GeneratedResponse | None = stop.value
        return result
    coroutine.close()
    raise AssertionError("the request side suspended")


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


def challenge(response: GeneratedResponse) -> list[bytes]:
    return [value for name, value in response.head.headers if name == b"www-authenticate"]


# --------------------------------------------------------------------------- api-key

key_texts = st.text(min_size=1, max_size=12)
key_lists = st.lists(key_texts, min_size=1, max_size=5)


@st.composite
def key_values(draw: st.DrawFn, keys: list[str]) -> bytes:
    """A configured key, a near miss of one, or arbitrary bytes."""
    key = draw(st.sampled_from(keys)).encode()
    near = [key, key, key[:-1], key + b"x", key.upper(), b" " + key]
    return draw(st.one_of(st.sampled_from(near), st.binary(max_size=16)))


#: How many field lines a request carries; one (the only acceptable count) most often.
line_counts = st.sampled_from([1, 1, 1, 0, 2, 3])


@given(keys=key_lists, data=st.data(), copies=line_counts)
def test_api_key_passes_exactly_one_line_with_a_configured_key(
    keys: list[str], data: st.DataObject, copies: int
) -> None:
    values = [data.draw(key_values(keys)) for _ in range(copies)]
    middleware = ApiKeyMiddleware.from_config("k", ApiKey(keys=tuple(keys)))
    headers = [(b"x-api-key", value) for value in values]
    response = run(middleware.request(make_state(headers)))
    expected = len(values) == 1 and values[0] in {key.encode() for key in keys}
    event("accepted" if expected else "rejected")
    assert (response is None) == expected
    if response is not None:
        assert response.head.status == 401
        assert challenge(response) == [b'ApiKey header="X-API-Key"']


# --------------------------------------------------------------------------- basic-auth

usernames = st.text(min_size=1, max_size=10).filter(lambda text: ":" not in text)
passwords = st.text(min_size=1, max_size=10)
schemes = st.sampled_from([b"Basic", b"basic", b"BASIC", b"bAsIc", b"Bearer", b"Basix", b""])


@st.composite
def authorization_values(draw: st.DrawFn, username: str, password: str) -> bytes:
    """Well-formed, near-miss and arbitrary ``Authorization`` values."""
    other_user = draw(st.one_of(st.just(username), usernames, st.just(username.upper())))
    other_password = draw(
        st.one_of(st.just(password), passwords, st.just(password + ":"), st.just(password[1:]))
    )
    credentials = draw(
        st.one_of(
            st.just(f"{other_user}:{other_password}".encode()),
            st.just(f"{other_password}:{other_user}".encode()),
            st.just(f"{other_user}{other_password}".encode()),
            st.just(f"{username}:{password}".encode()),
            st.binary(max_size=24),
        )
    )
    token = base64.b64encode(credentials)
    token = draw(
        st.one_of(
            st.just(token),
            st.just(token.rstrip(b"=")),
            st.just(token + b"="),
            st.just(base64.urlsafe_b64encode(credentials)),
            st.binary(max_size=8).map(lambda junk: token + junk),
        )
    )
    scheme = draw(schemes)
    spaces = draw(st.sampled_from([b" ", b"  ", b"\t", b""]))
    exact = base64.b64encode(f"{username}:{password}".encode())
    accepted_scheme = draw(st.sampled_from([b"Basic", b"basic", b"BASIC", b"bAsIc"]))
    return draw(
        st.one_of(
            st.just(accepted_scheme + b" " * draw(st.integers(1, 3)) + exact),
            st.just(scheme + spaces + token),
            st.binary(max_size=40),
        )
    )


def basic_oracle(value: bytes, username: str, password: str) -> bool:
    """Accepted iff ``Basic`` (any case), one or more spaces, then exactly the canonical token."""
    token = base64.b64encode(f"{username}:{password}".encode())
    pattern = rb"[Bb][Aa][Ss][Ii][Cc] +" + re.escape(token)
    return re.fullmatch(pattern, value) is not None


@given(
    username=usernames,
    password=passwords,
    data=st.data(),
    copies=line_counts,
    remove=st.booleans(),
)
def test_basic_passes_exactly_the_configured_credentials(
    username: str, password: str, data: st.DataObject, copies: int, remove: bool
) -> None:
    values = [data.draw(authorization_values(username, password)) for _ in range(copies)]
    block = BasicAuth(username=username, password=password, remove_header=remove)
    middleware = BasicAuthMiddleware.from_config("b", block)
    received = [(b"authorization", value) for value in values] + [(b"accept", b"*/*")]
    state = make_state(list(received))
    response = run(middleware.request(state))
    expected = len(values) == 1 and basic_oracle(values[0], username, password)
    event("accepted" if expected else "rejected")
    assert (response is None) == expected
    if response is None:
        assert state.headers == ([(b"accept", b"*/*")] if remove else received)
    else:
        assert response.head.status == 401
        assert challenge(response) == [b'Basic realm="a3s-gateway", charset="UTF-8"']
        assert state.headers == received
