"""Properties of interpolation (SPEC §3.3.1) and the scalar value grammars (SPEC §3.3.2)."""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.config.interpolate import interpolate, interpolate_tree
from a3s_gateway.config.values import (
    VALUE_TYPES,
    Address,
    HttpUrl,
    IpNetwork,
    RedisUrl,
    ServerUrl,
    parse_duration,
)
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
