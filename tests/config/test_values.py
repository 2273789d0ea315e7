"""Scalar value grammars (SPEC §3.3.2): parsing, exact messages, msgspec hooks."""

from __future__ import annotations

import copy
import pickle
import re
from functools import partial
from typing import TYPE_CHECKING, Annotated

import msgspec
import pytest

from a3s_gateway.config.values import (
    ABSOLUTE_PATH_PATTERN,
    COOKIE_NAME_PATTERN,
    DNS_LABEL_PATTERN,
    ENV_NAME_PATTERN,
    HEADER_NAME_PATTERN,
    KEY_EXPRESSION_NO_GLOBAL_PATTERN,
    KEY_EXPRESSION_PATTERN,
    NAME_PATTERN,
    NO_COLON_PATTERN,
    NO_QUOTE_PATTERN,
    OPTIONAL_HEADER_NAME_PATTERN,
    PATH_PREFIX_PATTERN,
    PATTERN_DESCRIPTIONS,
    VALUE_TYPES,
    Address,
    Duration,
    DurationOrZero,
    HttpUrl,
    IpNetwork,
    RedisUrl,
    ScalarValue,
    ServerUrl,
    dec_hook,
    describe_pattern,
    enc_hook,
    parse_duration,
    quote_value,
)

if TYPE_CHECKING:
    from collections.abc import Callable

DURATION_FORMAT = 'expected <number><ms|s|m|h>, e.g. "500ms", "1.5s"'
IP_FORMAT = 'expected an IP address or CIDR, e.g. "10.0.0.0/8", "192.0.2.7", "2001:db8::/32"'
SERVER_SCHEMES = "http, https, h2c, ws, wss, tcp, tls, udp, or host:port without a scheme"
HTTP_ACCEPTED = 'http:// or https:// followed by a host, e.g. "https://auth.example.com/verify"'
REDIS_ACCEPTED = 'redis:// or rediss:// followed by a host, e.g. "redis://127.0.0.1:6379/0"'
VISIBLE = "may contain only visible ASCII characters (percent-encode others)"


def raised(error: type[Exception], call: Callable[[], object]) -> str:
    """The message of the ``error`` that ``call`` raises (fails the test if none)."""
    try:
        call()
    except error as caught:
        return str(caught)
    pytest.fail(f"{error.__name__} not raised")


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1ms", 0.001),
        ("500ms", 0.5),
        ("10s", 10.0),
        ("1.5s", 1.5),
        ("0.25s", 0.25),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("8760h", 31_536_000.0),
        ("525600m", 31_536_000.0),
        ("0.001s", 0.001),
        ("007s", 7.0),
        ("1.000s", 1.0),
    ],
)
def test_parse_duration_accepts_the_grammar(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["1 s", "10", "", "s", "-1s", "+1s", "1.s", ".5s", "1e3s", "1m30s", "1S", "1sec", " 1s",
     "1s\n", "1d", "1,5s", "\u0661s"],
)  # fmt: skip
def test_parse_duration_rejects_other_forms(text: str) -> None:
    assert (
        raised(ValueError, lambda: parse_duration(text))
        == f"duration {quote_value(text)} is invalid: {DURATION_FORMAT}"
    )


def test_parse_duration_message_matches_spec_example() -> None:
    assert raised(ValueError, lambda: parse_duration("1 s")) == (
        'duration "1 s" is invalid: expected <number><ms|s|m|h>, e.g. "500ms", "1.5s"'
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9000h", 'duration "9000h" is too long: at most 8760h'),
        ("8760.001h", 'duration "8760.001h" is too long: at most 8760h'),
        ("525601m", 'duration "525601m" is too long: at most 8760h'),
        ("99999999999999999ms", 'duration "99999999999999999ms" is too long: at most 8760h'),
        ("0.5ms", 'duration "0.5ms" is too short: at least 1ms'),
        ("0.0009s", 'duration "0.0009s" is too short: at least 1ms'),
        ("0s", 'duration "0s" is not allowed here: must be at least 1ms'),
        ("0.0ms", 'duration "0.0ms" is not allowed here: must be at least 1ms'),
    ],
)  # fmt: skip
def test_parse_duration_range_messages(text: str, message: str) -> None:
    assert raised(ValueError, lambda: parse_duration(text)) == message


def test_parse_duration_zero_only_when_allowed() -> None:
    assert parse_duration("0s", allow_zero=True) == 0.0
    assert parse_duration("0ms", allow_zero=True) == 0.0
    assert parse_duration("00.000h", allow_zero=True) == 0.0
    with pytest.raises(ValueError, match="too short"):
        parse_duration("0.1ms", allow_zero=True)


def test_parse_duration_huge_input_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("9" * 10_000 + "s")
    assert parse_duration("1." + "0" * 10_000 + "s") == 1.0


def test_duration_and_duration_or_zero() -> None:
    assert Duration("1500ms").seconds == 1.5
    assert Duration("1500ms").text == "1500ms"
    assert DurationOrZero("0s").seconds == 0.0
    assert Duration.allow_zero is False
    assert DurationOrZero.allow_zero is True
    assert (
        raised(ValueError, lambda: Duration("0s"))
        == 'duration "0s" is not allowed here: must be at least 1ms'
    )


def test_duration_equality_is_by_seconds() -> None:
    assert Duration("1000ms") == Duration("1s")
    assert hash(Duration("1000ms")) == hash(Duration("1s"))
    assert Duration("60s") == DurationOrZero("1m")
    assert hash(Duration("60s")) == hash(DurationOrZero("1m"))
    assert Duration("1s") != Duration("2s")
    assert Duration("1s") != "1s"
    assert len({Duration("1h"), Duration("60m"), Duration("3600s")}) == 1


# --------------------------------------------------------------------------- shared behaviour

SAMPLES: list[ScalarValue] = [
    Duration("10s"),
    DurationOrZero("0s"),
    Address(":8080"),
    IpNetwork("10.0.0.0/8"),
    ServerUrl("http://10.0.0.1:8080/api"),
    HttpUrl("https://auth.example.com/verify?x=1"),
    RedisUrl("redis://127.0.0.1:6379/0"),
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda value: type(value).__name__)
def test_values_are_immutable(value: ScalarValue) -> None:
    with pytest.raises(AttributeError, match="is immutable"):
        value.text = "x"
    with pytest.raises(AttributeError, match="is immutable"):
        del value.text
    with pytest.raises(AttributeError):
        value.__dict__  # noqa: B018 -- slots only, no instance dict


@pytest.mark.parametrize("value", SAMPLES, ids=lambda value: type(value).__name__)
def test_repr_str_copy_and_pickle(value: ScalarValue) -> None:
    assert repr(value) == f"{type(value).__name__}({value.text!r})"
    assert str(value) == value.text
    assert copy.copy(value) == value
    assert copy.deepcopy(value) == value
    restored = pickle.loads(pickle.dumps(value))
    assert restored == value
    assert type(restored) is type(value)
    assert restored.text == value.text


def test_value_types_lists_every_class() -> None:
    assert set(VALUE_TYPES) == {
        Duration,
        DurationOrZero,
        Address,
        IpNetwork,
        ServerUrl,
        HttpUrl,
        RedisUrl,
    }


def test_quote_value_escapes_and_cuts() -> None:
    assert quote_value("a b") == '"a b"'
    assert quote_value("a\nb\x00") == '"a\\nb\\x00"'
    assert quote_value("x" * 120) == '"' + "x" * 100 + '..."'


def _message(cls: type[ScalarValue], text: str) -> str:
    return raised(ValueError, lambda: cls(text))


# --------------------------------------------------------------------------- address


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        (":8080", "", 8080),
        (":0", "", 0),
        ("0.0.0.0:80", "0.0.0.0", 80),
        ("127.0.0.1:65535", "127.0.0.1", 65535),
        ("[::]:443", "::", 443),
        ("[::1]:0", "::1", 0),
        ("[2001:DB8:0::1]:53", "2001:db8::1", 53),
    ],
)
def test_address_accepts(text: str, host: str, port: int) -> None:
    address = Address(text)
    assert (address.host, address.port, address.text) == (host, port, text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", 'expected IPv4:port, [IPv6]:port or :port, e.g. "0.0.0.0:8080", ":8080"'),
        ("localhost:80", 'host names are not allowed; use an IP address or ":<port>"'),
        ("1.2.3.4", 'a port is required, e.g. "0.0.0.0:8080" or ":8080"'),
        ("1.2.3.4:", "the port must be a number 0-65535"),
        ("1.2.3.4:70000", "the port must be a number 0-65535"),
        ("1.2.3.4:-1", "the port must be a number 0-65535"),
        ("::1:80", 'an IPv6 address must be in brackets, e.g. "[::1]:8080"'),
        ("[::1", 'missing "]" after the IPv6 address'),
        ("[::1]x", 'expected ":<port>" after "]"'),
        ("[::1]", 'a port is required, e.g. "0.0.0.0:8080" or ":8080"'),
        ("[fe80::1%eth0]:80", 'zone ids ("%...") are not allowed'),
        ("1.2.3:5", '"1.2.3" is not a valid IPv4 address'),
        ("[1.2.3.4]:5", '"1.2.3.4" is not a valid IPv6 address'),
    ],
)
def test_address_rejects(text: str, reason: str) -> None:
    assert _message(Address, text) == f"address {quote_value(text)} is invalid: {reason}"


def test_address_equality_is_normalised() -> None:
    assert Address("[0:0::1]:80") == Address("[::1]:80")
    assert Address(":80") != Address("0.0.0.0:80")


# --------------------------------------------------------------------------- IP / CIDR


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("192.0.2.7", "192.0.2.7/32"),
        ("2001:db8::1/32", "2001:db8::/32"),
        ("::1", "::1/128"),
        ("::ffff:192.0.2.7", "192.0.2.7/32"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
        ("::/80", "::/80"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
)
def test_ip_network_accepts(text: str, network: str) -> None:
    assert str(IpNetwork(text).network) == network
    assert IpNetwork(text).text == text


def test_ip_network_equality_clears_host_bits() -> None:
    assert IpNetwork("10.1.2.3/8") == IpNetwork("10.0.0.0/8")
    assert hash(IpNetwork("10.1.2.3/8")) == hash(IpNetwork("10.0.0.0/8"))
    assert IpNetwork("::ffff:1.2.3.4") == IpNetwork("1.2.3.4")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", IP_FORMAT),
        ("example.com", IP_FORMAT),
        ("10.0.0.0/", 'the prefix length must be a number, e.g. "10.0.0.0/8"'),
        ("10.0.0.0/255.0.0.0", 'the prefix length must be a number, e.g. "10.0.0.0/8"'),
        ("10.0.0.0/33", "the prefix length must be 0-32 (IPv4) or 0-128 (IPv6)"),
        ("::/129", "the prefix length must be 0-32 (IPv4) or 0-128 (IPv6)"),
        ("fe80::1%eth0", 'zone ids ("%...") are not allowed'),
        ("fe80::%1/64", 'zone ids ("%...") are not allowed'),
    ],
)  # fmt: skip
def test_ip_network_rejects(text: str, reason: str) -> None:
    assert _message(IpNetwork, text) == f"IP/CIDR {quote_value(text)} is invalid: {reason}"


@pytest.mark.parametrize(
    ("network", "address", "inside"),
    [
        ("10.0.0.0/8", "10.200.1.1", True),
        ("10.0.0.0/8", "11.0.0.1", False),
        ("10.0.0.0/8", "::ffff:10.1.1.1", True),
        ("::ffff:10.0.0.0/104", "10.9.9.9", True),
        ("2001:db8::/32", "2001:db8::5", True),
        ("2001:db8::/32", "10.0.0.1", False),
        ("10.0.0.0/8", "2001:db8::5", False),
        ("fe80::/10", "fe80::1%eth0", True),
        ("10.0.0.0/8", "not an ip", False),
        ("10.0.0.0/8", "", False),
        ("10.0.0.0/8", "10.0.0.1:80", False),
    ],
)
def test_ip_network_contains(network: str, address: str, inside: bool) -> None:
    assert IpNetwork(network).contains(address) is inside


# --------------------------------------------------------------------------- server URL


@pytest.mark.parametrize(
    ("text", "scheme", "host", "port", "path", "transport"),
    [
        ("http://10.0.0.1", "http", "10.0.0.1", 80, "", "http"),
        ("http://10.0.0.1/", "http", "10.0.0.1", 80, "", "http"),
        ("https://API.Example.com:8443/v1/", "https", "api.example.com", 8443, "/v1/", "https"),
        ("HTTPS://h", "https", "h", 443, "", "https"),
        ("h2c://[::1]", "h2c", "::1", 80, "", "h2c"),
        ("ws://svc:9000/socket", "ws", "svc", 9000, "/socket", "http"),
        ("wss://svc", "wss", "svc", 443, "", "https"),
        ("tcp://db:5432", "tcp", "db", 5432, "", "tcp"),
        ("tls://db.internal.:5432", "tls", "db.internal.", 5432, "", "tls"),
        ("udp://[2001:db8::1]:53", "udp", "2001:db8::1", 53, "", "udp"),
        ("10.0.0.1:5432", "", "10.0.0.1", 5432, "", "bare"),
        ("my_service:80", "", "my_service", 80, "", "bare"),
        ("[::1]:80", "", "::1", 80, "", "bare"),
        ("http://h/a%20b", "http", "h", 80, "/a%20b", "http"),
    ],
)
def test_server_url_accepts(
    text: str, scheme: str, host: str, port: int, path: str, transport: str
) -> None:
    url = ServerUrl(text)
    assert (url.scheme, url.host, url.port, url.path) == (scheme, host, port, path)
    assert url.transport == transport
    assert url.is_http_like is (transport in {"http", "https", "h2c"})
    assert url.text == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("ftp://x", f'unsupported scheme "ftp": expected {SERVER_SCHEMES}'),
        ("://h:80", f'unsupported scheme "": expected {SERVER_SCHEMES}'),
        ("tcp://db", 'a port is required, e.g. "tcp://10.0.0.1:5432" or "10.0.0.1:5432"'),
        ("10.0.0.1", 'a port is required, e.g. "tcp://10.0.0.1:5432" or "10.0.0.1:5432"'),
        ("udp://1.2.3.4:53/x", "a path is allowed only with http, https, h2c, ws or wss"),
        ("tcp://1.2.3.4:53/", "a path is allowed only with http, https, h2c, ws or wss"),
        ("http://h/?q=1", "a query is not allowed"),
        ("http://h/#top", "a fragment is not allowed"),
        ("http://", "the host is empty"),
        ("http://:80", "the host is empty"),
        ("http://999.1.1.1", '"999.1.1.1" is not a valid IPv4 address'),
        ("http://bad!host", '"bad!host" is not a valid host name or IP address'),
        ("http://-x.example", '"-x.example" is not a valid host name or IP address'),
        ("http://h/a b", f"the path {VISIBLE}"),
        ("http://h:0", "the port must be a number 1-65535"),
        ("http://h:65536", "the port must be a number 1-65535"),
        ("http://h:x", "the port must be a number 1-65535"),
        ("http://::1", 'an IPv6 address must be in brackets, e.g. "[::1]:8080"'),
        ("http://[fe80::1%25eth0]", 'zone ids ("%...") are not allowed'),
    ],
)  # fmt: skip
def test_server_url_rejects(text: str, reason: str) -> None:
    assert _message(ServerUrl, text) == f"server url {quote_value(text)} is invalid: {reason}"


def test_server_url_userinfo_is_an_error_that_hides_the_value() -> None:
    message = _message(ServerUrl, "http://admin:hunter2@10.0.0.1")
    assert message == 'server url is invalid: userinfo ("user:password@") is not allowed'
    assert "hunter2" not in message


def test_server_url_equality_is_normalised() -> None:
    assert ServerUrl("http://H:80/") == ServerUrl("http://h")
    assert ServerUrl("http://h") != ServerUrl("ws://h")


# --------------------------------------------------------------------------- http(s) URL


@pytest.mark.parametrize(
    ("text", "scheme", "host", "port", "target"),
    [
        ("https://auth.example.com/verify", "https", "auth.example.com", 443, "/verify"),
        ("http://h", "http", "h", 80, "/"),
        ("http://h/", "http", "h", 80, "/"),
        ("http://h?x=1", "http", "h", 80, "/?x=1"),
        ("HTTP://127.0.0.1:8055/a?b=c@d", "http", "127.0.0.1", 8055, "/a?b=c@d"),
        ("https://[::1]:9000/.well-known/jwks", "https", "::1", 9000, "/.well-known/jwks"),
    ],
)  # fmt: skip
def test_http_url_accepts(text: str, scheme: str, host: str, port: int, target: str) -> None:
    url = HttpUrl(text)
    assert (url.scheme, url.host, url.port, url.target, url.text) == (
        scheme,
        host,
        port,
        target,
        text,
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("auth.example.com", f"expected {HTTP_ACCEPTED}"),
        ("ws://h", f'unsupported scheme "ws": expected {HTTP_ACCEPTED}'),
        ("http://h/#f", "a fragment is not allowed"),
        ("https://", "the host is empty"),
        ("http://h:99999", "the port must be a number 1-65535"),
        ("http://h/\u00e9", f"the path and query {VISIBLE}"),
    ],
)  # fmt: skip
def test_http_url_rejects(text: str, reason: str) -> None:
    assert _message(HttpUrl, text) == f"url {quote_value(text)} is invalid: {reason}"


def test_http_url_userinfo_is_an_error_that_hides_the_value() -> None:
    message = _message(HttpUrl, "https://user:s3cret@auth.example.com/")
    assert message == 'url is invalid: userinfo ("user:password@") is not allowed'


# --------------------------------------------------------------------------- redis URL


def test_redis_url_defaults() -> None:
    url = RedisUrl("redis://127.0.0.1")
    assert (url.host, url.port, url.db, url.tls, url.username, url.password) == (
        "127.0.0.1",
        6379,
        0,
        False,
        None,
        None,
    )
    assert url.redacted() == "redis://127.0.0.1"
    assert str(url) == "redis://127.0.0.1"


def test_redis_url_with_credentials_and_db() -> None:
    url = RedisUrl("rediss://app:p%40ss%2Fword@Redis.Internal:6380/3")
    assert (url.host, url.port, url.db, url.tls) == ("redis.internal", 6380, 3, True)
    assert (url.username, url.password) == ("app", "p@ss/word")
    assert url.text == "rediss://app:p%40ss%2Fword@Redis.Internal:6380/3"


@pytest.mark.parametrize(
    ("text", "username", "password", "redacted"),
    [
        ("redis://:secret@h", None, "secret", "redis://:<redacted>@h"),
        ("redis://user@h/1", "user", None, "redis://user@h/1"),
        ("redis://user:@h", "user", None, "redis://user:@h"),
        ("REDIS://u:pw@h:1/2", "u", "pw", "REDIS://u:<redacted>@h:1/2"),
        ("redis://u:p@ss@h", "u", "p@ss", "redis://u:<redacted>@h"),
    ],
)
def test_redis_url_redacts_the_password(
    text: str, username: str | None, password: str | None, redacted: str
) -> None:
    url = RedisUrl(text)
    assert (url.username, url.password) == (username, password)
    assert url.redacted() == redacted
    assert str(url) == redacted
    assert repr(url) == f"RedisUrl({redacted!r})"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("http://h", f'unsupported scheme "http": expected {REDIS_ACCEPTED}'),
        ("127.0.0.1:6379", f"expected {REDIS_ACCEPTED}"),
        ("redis://h/abc", 'the database must be a number, e.g. "/0"'),
        ("redis://h?db=1", "a query is not allowed"),
        ("redis://h#x", "a fragment is not allowed"),
        ("redis://h:0", "the port must be a number 1-65535"),
        ("redis://", "the host is empty"),
    ],
)  # fmt: skip
def test_redis_url_rejects(text: str, reason: str) -> None:
    assert _message(RedisUrl, text) == f"redis url {quote_value(text)} is invalid: {reason}"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("redis://u:hunter2@h/abc", 'the database must be a number, e.g. "/0"'),
        ("redis://u:hunter2@h:x", "the port must be a number 1-65535"),
        ("redis://u:hunter2@", "the host is empty"),
        ("redis://u:hunter2@h?x", "a query is not allowed"),
    ],
)
def test_redis_url_errors_never_echo_the_password(text: str, reason: str) -> None:
    message = _message(RedisUrl, text)
    assert message == f"redis url is invalid: {reason}"
    assert "hunter2" not in message


def test_redis_url_password_question_mark_is_not_a_query() -> None:
    assert RedisUrl("redis://u:a?b#c@h").password == "a?b#c"


# --------------------------------------------------------------------------- msgspec hooks


class _Example(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    x: Duration
    idle: DurationOrZero = DurationOrZero("0s")
    maybe: Address | None = None
    nets: tuple[IpNetwork, ...] = ()
    url: ServerUrl | None = None
    auth: HttpUrl | None = None
    redis: RedisUrl | None = None


def _convert(data: object) -> _Example:
    return msgspec.convert(data, _Example, dec_hook=dec_hook)


def _validation_message(data: object) -> str:
    return raised(msgspec.ValidationError, lambda: _convert(data))


def test_msgspec_convert_builds_values() -> None:
    example = _convert(
        {
            "x": "10s",
            "idle": "0s",
            "maybe": ":80",
            "nets": ["10.1.2.3/8", "::1"],
            "url": "http://10.0.0.1:8080",
            "auth": "https://a.example/v",
            "redis": "redis://:pw@r",
        }
    )
    assert example.x == Duration("10s")
    assert example.idle.seconds == 0.0
    assert example.maybe == Address(":80")
    assert example.nets == (IpNetwork("10.0.0.0/8"), IpNetwork("::1"))
    assert example.url is not None
    assert example.url.port == 8080
    assert hash(example) == hash(_convert(msgspec.to_builtins(example, enc_hook=enc_hook)))


def test_msgspec_errors_carry_the_path() -> None:
    assert _validation_message({"x": "5x"}) == (
        f'duration "5x" is invalid: {DURATION_FORMAT} - at `$.x`'
    )
    assert _validation_message({"x": "1s", "nets": ["10.0.0.0/8", "nope"]}) == (
        'IP/CIDR "nope" is invalid: expected an IP address or CIDR, e.g. "10.0.0.0/8", '
        '"192.0.2.7", "2001:db8::/32" - at `$.nets[1]`'
    )
    assert _validation_message({"x": "1s", "redis": "redis://u:hunter2@h/x"}) == (
        'redis url is invalid: the database must be a number, e.g. "/0" - at `$.redis`'
    )


@pytest.mark.parametrize(
    ("value", "got"),
    [
        (10, "an integer"),
        (1.5, "a number"),
        (True, "a boolean"),
        ([], "a list"),
        ({}, "a block or object"),
        (b"10s", "a value of type bytes"),
    ],
)
def test_msgspec_wrong_type_names_what_was_expected(value: object, got: str) -> None:
    assert _validation_message({"x": value}) == (
        f'expected a duration string like "10s", got {got} - at `$.x`'
    )


def test_msgspec_to_builtins_round_trips() -> None:
    data = {
        "x": "1500ms",
        "idle": "0ms",
        "maybe": "[::1]:0",
        "nets": ["10.1.2.3/8"],
        "url": "tcp://db:5432",
        "auth": "http://h?x=1",
        "redis": "rediss://u:pw@h:6380/1",
    }
    example = _convert(data)
    assert msgspec.to_builtins(example, enc_hook=enc_hook) == {**data, "nets": ("10.1.2.3/8",)}
    encoded = msgspec.json.encode(example, enc_hook=enc_hook)
    assert msgspec.json.decode(encoded, type=_Example, dec_hook=dec_hook) == example


def test_dec_hook_passes_instances_through() -> None:
    assert _convert({"x": Duration("2s")}).x == Duration("2s")


def test_dec_hook_and_enc_hook_refuse_other_types() -> None:
    with pytest.raises(NotImplementedError):
        dec_hook(complex, "1j")
    with pytest.raises(NotImplementedError):
        enc_hook(object())


def test_dec_hook_messages_per_type() -> None:
    expected = {
        Duration: 'expected a duration string like "10s", got an integer',
        DurationOrZero: 'expected a duration string like "10s" or "0s", got an integer',
        Address: 'expected an address string like "0.0.0.0:8080", got an integer',
        IpNetwork: 'expected an IP address or CIDR string like "10.0.0.0/8", got an integer',
        ServerUrl: 'expected a server url string like "http://10.0.0.1:8080", got an integer',
        HttpUrl: 'expected a url string like "https://auth.example.com/verify", got an integer',
        RedisUrl: 'expected a redis url string like "redis://127.0.0.1:6379/0", got an integer',
    }
    for tp, message in expected.items():
        assert raised(TypeError, partial(dec_hook, tp, 1)) == message


# --------------------------------------------------------------------------- patterns


def _full(pattern: str, text: str) -> bool:
    # msgspec applies patterns with re.search; the anchors must make that a full match.
    return re.search(pattern, text) is not None


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        (
            HEADER_NAME_PATTERN,
            ["X-Request-Id", "a", "!#$%&'*+-.^_`|~09"],
            ["", "X Id", "X:Id", "X-Id\n", "\u00e9"],
        ),
        (COOKIE_NAME_PATTERN, ["a3s_sticky", "SID"], ["", "a=b", "a;b", "a\n"]),
        (
            NAME_PATTERN,
            ["api", "api-service", "v1.2_x", "0", "a" * 128],
            ["", "-a", "_a", "a b", "a" * 129, "api\n", 'a"b'],
        ),
        (
            DNS_LABEL_PATTERN,
            ["a", "v1", "blue-green", "a" * 63],
            ["", "A", "1a", "a-", "a_b", "a" * 64, "a\n"],
        ),
        (ENV_NAME_PATTERN, ["HOME", "_x", "A1"], ["", "1A", "A-B", "A\n"]),
        (
            KEY_EXPRESSION_PATTERN,
            ["client-ip", "host", "path", "global", "header:X-User", "cookie:sid", "query:p[1]"],
            ["", "client_ip", "header:", "header:X Y", "cookie:", "query:", "query:a b", "host\n"],
        ),
        (KEY_EXPRESSION_NO_GLOBAL_PATTERN, ["client-ip", "header:X-User"], ["global", ""]),
    ],
)
def test_patterns_match_full_strings(pattern: str, good: list[str], bad: list[str]) -> None:
    assert [text for text in good if not _full(pattern, text)] == []
    assert [text for text in bad if _full(pattern, text)] == []


def test_every_pattern_is_described_and_usable_with_msgspec() -> None:
    assert set(PATTERN_DESCRIPTIONS) == {
        HEADER_NAME_PATTERN,
        COOKIE_NAME_PATTERN,
        NAME_PATTERN,
        DNS_LABEL_PATTERN,
        ENV_NAME_PATTERN,
        KEY_EXPRESSION_PATTERN,
        KEY_EXPRESSION_NO_GLOBAL_PATTERN,
        OPTIONAL_HEADER_NAME_PATTERN,
        ABSOLUTE_PATH_PATTERN,
        PATH_PREFIX_PATTERN,
        NO_COLON_PATTERN,
        NO_QUOTE_PATTERN,
    }
    assert PATTERN_DESCRIPTIONS[HEADER_NAME_PATTERN] == "a header name (RFC 9110 token)"
    assert PATTERN_DESCRIPTIONS[NAME_PATTERN] == (
        "a name: letters, digits, '_', '.', '-', starting with a letter or digit, "
        "at most 128 characters"
    )
    for pattern in PATTERN_DESCRIPTIONS:
        named = Annotated[str, msgspec.Meta(pattern=pattern)]
        error = raised(msgspec.ValidationError, partial(msgspec.convert, ' :"\n', named))
        shown = re.fullmatch(r"Expected `str` matching regex (.*)", error)
        assert shown is not None
        assert describe_pattern(shown[1]) == PATTERN_DESCRIPTIONS[pattern]
        assert describe_pattern(shown[1][1:-1]) == PATTERN_DESCRIPTIONS[pattern]
        assert describe_pattern(pattern) == PATTERN_DESCRIPTIONS[pattern]
    assert describe_pattern("^x$") is None
