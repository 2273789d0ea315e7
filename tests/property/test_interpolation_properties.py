"""Properties of interpolation (SPEC §3.3.1) and the scalar value grammars (SPEC §3.3.2)."""

from __future__ import annotations

import contextlib
import json
import re
from typing import TYPE_CHECKING, Final

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from a3s_gateway.config.interpolate import interpolate, interpolate_tree
from a3s_gateway.config.load import load_text
from a3s_gateway.config.redaction import REDACTED
from a3s_gateway.config.values import (
    VALUE_TYPES,
    Address,
    HttpUrl,
    IpNetwork,
    RedisUrl,
    ServerUrl,
    parse_duration,
)
from a3s_gateway.preflight import check
from tests.property.strategies import (
    DURATION_MAX_COUNT,
    ENV_NAMES,
    config_trees,
    dollar_free_text,
    duration_counts,
    environments,
    ipv4_networks,
    ipv4_texts,
    literal_text,
    template_text,
    url_hosts,
    value_junk,
)

if TYPE_CHECKING:
    import ipaddress

URL_TYPES = (ServerUrl, HttpUrl, RedisUrl)
# A default is substituted text too; one containing "$" could end in "$" and meet a "{".
_DEFAULT_WITH_DOLLAR = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-[^}]*\$")

# --------------------------------------------------------------------------- interpolation


def _outcome(text: str, env: dict[str, str]) -> tuple[str, str | None]:
    """(interpolated text, None) or (the input text, the error message)."""
    try:
        return interpolate(text, env), None
    except ValueError as error:
        return text, str(error)


@given(template_text(), environments(values=dollar_free_text()))
@example("${A:-x}{", {})
@example("$$${A}", {"A": "{"})
def test_dollar_brace_in_output_only_comes_from_escapes(text: str, env: dict[str, str]) -> None:
    if _DEFAULT_WITH_DOLLAR.search(text):
        return
    try:
        result = interpolate(text, env)
    except ValueError:
        return
    assert result.count("${") <= text.count("$${")
    if "$${" not in text:
        assert "${" not in result


@given(literal_text(), environments())
def test_text_without_dollar_or_percent_is_unchanged(text: str, env: dict[str, str]) -> None:
    assert interpolate(text, env) == text


@given(literal_text(), st.sampled_from(ENV_NAMES), st.text(), literal_text())
@example("", "A", "${B}", "")
@example("x", "A", "$${ %{ %%{ ${A:-y}", "y")
def test_values_are_inserted_verbatim_and_not_rescanned(
    prefix: str, name: str, value: str, suffix: str
) -> None:
    env = {name: value}
    assert interpolate(f"{prefix}${{{name}}}{suffix}", env) == prefix + value + suffix
    expected = value or "fallback"
    assert interpolate(f"{prefix}${{{name}:-fallback}}{suffix}", env) == prefix + expected + suffix


@given(config_trees(), environments())
@example({"": None, "${": "${A}"}, {"A": ""})
def test_interpolate_tree_never_raises(data: object, env: dict[str, str]) -> None:
    result = interpolate_tree(data, env)
    assert all(message for _, message in result.errors)
    assert type(result.data) is type(data)


@given(template_text(), environments())
def test_interpolate_raises_only_value_error(text: str, env: dict[str, str]) -> None:
    with contextlib.suppress(ValueError):
        interpolate(text, env)


@given(template_text(), environments())
def test_tree_of_one_string_agrees_with_interpolate(text: str, env: dict[str, str]) -> None:
    result = interpolate_tree([text], env)
    expected, message = _outcome(text, env)
    assert result.data == [expected]
    assert result.errors == ((((0,), message),) if message is not None else ())


# --------------------------------------------------------------------------- secrets

#: String fields of one config, each with a valid value: one or more get a ``${PROP_SECRET}``.
SECRET_SLOTS: Final = {
    "address": "127.0.0.1:8080",
    "rule": "PathPrefix(`/`)",
    "url": "http://127.0.0.1:9000",
    "auth": "https://auth.internal/check",
    "header": "v",
    "health": "/healthz",
    "otlp": "http://collector.internal:4318",
}
SECRET_CONFIG: Final = """
entrypoints "web" {{
  address = "{address}"
}}
routers "r" {{
  rule        = "{rule}"
  service     = "s"
  middlewares = ["fa", "hdr"]
}}
services "s" {{
  load_balancer {{
    servers = [{{ url = "{url}" }}]
    health_check {{
      path = "{health}"
    }}
  }}
}}
middlewares "fa" {{
  type             = "forward-auth"
  forward_auth_url = "{auth}"
}}
middlewares "hdr" {{
  type            = "headers"
  request_headers = {{ "X-A" = "{header}" }}
}}
observability {{
  otlp_endpoint   = "{otlp}"
  tracing_enabled = false
}}
"""
#: Literal text around the secret, written in HCL strings (no quote, escape or expression).
_AROUND: Final = st.text(alphabet="ab/:.-_?#=@[]()` 0123456789", max_size=12)
#: Secret values: anything an environment may hold, but not text the mark itself shows.
_SECRETS: Final = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="<>\x00"), min_size=1, max_size=24
).filter(lambda secret: secret.casefold() not in REDACTED.casefold())


def _shown(secret: str) -> tuple[str, ...]:
    return (secret, repr(secret)[1:-1], json.dumps(secret)[1:-1])


def _strings(node: object) -> list[str]:
    """Every string value of a builtins tree (keys are the file's own names)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for value in node.values() for text in _strings(value)]
    if isinstance(node, list | tuple):
        return [text for item in node for text in _strings(item)]
    return []


@given(
    st.dictionaries(st.sampled_from(sorted(SECRET_SLOTS)), st.tuples(_AROUND, _AROUND), min_size=1),
    _SECRETS,
)
@example({"auth": ("", "")}, "s3cr3t#x")
@example({"url": ("http://", "/x")}, "bad host:99999")
@example({"address": ("127.0.0.1:", "")}, "8080")
@example({"rule": ("Host(`", "`)")}, "a\tb")
@example({"health": ("/", "")}, "ü" * 30)
@settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
def test_no_problem_or_dump_shows_an_interpolated_secret(
    slots: dict[str, tuple[str, str]], secret: str
) -> None:
    """SPEC §14.4: whatever the secret and wherever it goes, no problem message (any stage,
    environment checks included) and no string of the redacted dump contains it."""
    values = dict(SECRET_SLOTS)
    for slot, (before, after) in slots.items():
        values[slot] = before + "${PROP_SECRET}" + after
    result = load_text(SECRET_CONFIG.format(**values), env={"PROP_SECRET": secret})
    messages = [problem.message for problem in check(result, offline=False)]
    config = result.partial
    dumped = _strings(config.to_builtins()) if config is not None else []
    for text in (*messages, *dumped):
        for spelling in _shown(secret):
            assert spelling not in text, (spelling, text)


# --------------------------------------------------------------------------- durations


@given(duration_counts())
def test_whole_durations_have_the_unit_value(count_unit: tuple[int, str]) -> None:
    count, unit = count_unit
    seconds = parse_duration(f"{count}{unit}")
    expected = {"ms": count / 1000, "s": float(count), "m": count * 60.0, "h": count * 3600.0}
    assert seconds == expected[unit]


@given(st.sampled_from(sorted(DURATION_MAX_COUNT)), st.integers(1, 10**30))
def test_durations_beyond_a_year_are_too_long(unit: str, extra: int) -> None:
    text = f"{DURATION_MAX_COUNT[unit] + extra}{unit}"
    with pytest.raises(ValueError, match=r"is too long") as caught:
        parse_duration(text)
    assert str(caught.value) == f'duration "{text}" is too long: at most 8760h'


@given(st.text(max_size=30) | st.from_regex(r"[0-9.]{0,6}(ms|s|m|h|d)?", fullmatch=True))
@example("0s")
@example("1" * 5000 + "s")
def test_parse_duration_raises_only_value_error(text: str) -> None:
    for allow_zero in (False, True):
        message, seconds = "", 0.0
        try:
            seconds = parse_duration(text, allow_zero=allow_zero)
        except ValueError as error:
            message = str(error)
        if message:
            assert message.startswith("duration ")
        else:
            assert (seconds == 0.0 and allow_zero) or 0.001 <= seconds <= 8760 * 3600


# --------------------------------------------------------------------------- addresses and URLs


@given(value_junk())
@example("[")
@example("http://[")
@example("redis://:@")
@example("::ffff:1.2.3.4/999")
def test_value_classes_raise_only_value_error(text: str) -> None:
    for value_type in VALUE_TYPES:
        try:
            value = value_type(text)
        except ValueError as error:
            message = str(error)
            if value_type in URL_TYPES and "@" in text:  # may hold a password: never echoed
                assert message.startswith(f"{value_type.kind} is invalid: ")
            continue
        assert value == value_type(value.text)
        assert hash(value) == hash(value_type(value.text))


@given(ipv4_texts())
def test_mapped_ipv6_is_ipv4(ip: str) -> None:
    assert IpNetwork("::ffff:" + ip) == IpNetwork(ip)
    assert IpNetwork("::FFFF:" + ip).network.version == 4


@given(ipv4_networks())
def test_mapped_ipv6_network_is_ipv4_network(network: ipaddress.IPv4Network) -> None:
    mapped = f"::ffff:{network.network_address}/{network.prefixlen + 96}"
    assert IpNetwork(mapped) == IpNetwork(str(network))


@given(ipv4_networks(), st.ip_addresses(v=4))
def test_contains_agrees_with_ipaddress(
    network: ipaddress.IPv4Network, ip: ipaddress.IPv4Address
) -> None:
    value = IpNetwork(str(network))
    assert value.contains(str(ip)) is (ip in network)
    assert value.contains(f"::ffff:{ip}") is (ip in network)


@given(st.ip_addresses(), st.integers(0, 65535))
def test_addresses_parse_back_to_their_parts(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> None:
    text = f"[{ip.exploded}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    address = Address(text)
    assert (address.host, address.port) == (str(ip), port)


@given(
    st.sampled_from(["http", "https", "h2c", "ws", "wss", "tcp", "tls", "udp", ""]),
    url_hosts(),
    st.none() | st.integers(1, 65535),
)
def test_server_urls_parse_back_to_their_parts(
    scheme: str, host: tuple[str, str], port: int | None
) -> None:
    written, normalised = host
    default = {"http": 80, "ws": 80, "h2c": 80, "https": 443, "wss": 443}.get(scheme)
    if port is None and default is None:
        port = 1
    text = (f"{scheme}://" if scheme else "") + written + (f":{port}" if port else "")
    url = ServerUrl(text)
    assert (url.scheme, url.host, url.port, url.path) == (scheme, normalised, port or default, "")
