"""Scalar value grammars of the config (SPEC §3.3.2), the string patterns and the msgspec hooks.

Ring 0: pure parsing; no trio, sockets, TLS or clocks, and no name resolution.

The value classes here are ``Duration``, ``DurationOrZero``, ``Address`` and ``IpNetwork``; the
URL classes live in ``urls.py``, their shared base in ``scalar.py`` and the ``host[:port]``
grammar in ``authority.py``. This module re-exports all of them (``__all__``), so the schema
and callers import every value type from one place. Each class parses its text once in
``__init__`` (raising ``ValueError`` with a SPEC §2.3 message that names the bad value and says
what is accepted), keeps the text as written in ``.text`` and compares and hashes by the
normalised value. ``msgspec`` builds them through ``dec_hook`` (it attaches the path, e.g.
``... - at `$.services[...].url```) and renders them back through ``enc_hook``. The module also
holds the string patterns used with ``msgspec.Meta(pattern=...)``.

Must not: echo secrets (see ``urls.py``: a URL may carry a password), or grow URL grammar here.
"""

from __future__ import annotations

import ipaddress
import re
from fractions import Fraction
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Final

from a3s_gateway.config.authority import NUMERIC_LABEL, parse_ip, parse_port, split_authority
from a3s_gateway.config.scalar import GrammarError, ScalarValue, init_fields, quote_value
from a3s_gateway.config.urls import HttpUrl, RedisUrl, ServerUrl, Transport

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ABSOLUTE_PATH_PATTERN",
    "COOKIE_NAME_PATTERN",
    "DNS_LABEL_PATTERN",
    "ENV_NAME_PATTERN",
    "HEADER_NAME_PATTERN",
    "KEY_EXPRESSION_NO_GLOBAL_PATTERN",
    "KEY_EXPRESSION_PATTERN",
    "NAME_PATTERN",
    "NO_COLON_PATTERN",
    "NO_QUOTE_PATTERN",
    "OPTIONAL_HEADER_NAME_PATTERN",
    "PATH_PREFIX_PATTERN",
    "PATTERN_DESCRIPTIONS",
    "VALUE_TYPES",
    "Address",
    "Duration",
    "DurationOrZero",
    "HttpUrl",
    "IpNetwork",
    "RedisUrl",
    "ScalarValue",
    "ServerUrl",
    "Transport",
    "dec_hook",
    "describe_pattern",
    "enc_hook",
    "parse_duration",
    "quote_value",
]

# --------------------------------------------------------------------------- string patterns
# Anchored with ``\Z``, not ``$``: msgspec applies patterns with ``re.search`` and ``$`` also
# matches before a trailing newline, which would let "X-Id\n" pass as a header name.
_TCHAR: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]"  # RFC 9110 §5.6.2 tchar
HEADER_NAME_PATTERN: Final = rf"^{_TCHAR}+\Z"
# RFC 6265 §4.1.1: cookie-name = token. The group only keeps the text distinct from
# HEADER_NAME_PATTERN so that PATTERN_DESCRIPTIONS can describe each one in its own words.
COOKIE_NAME_PATTERN: Final = rf"^(?:{_TCHAR}+)\Z"
NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z"
DNS_LABEL_PATTERN: Final = r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?\Z"  # RFC 1035 label, <= 63
ENV_NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]*\Z"
_KEY_SOURCES: Final = (
    rf"client-ip|host|path|header:{_TCHAR}+|cookie:{_TCHAR}+|query:[^\s\x00-\x1f\x7f]+"
)
KEY_EXPRESSION_PATTERN: Final = rf"^(?:{_KEY_SOURCES}|global)\Z"
KEY_EXPRESSION_NO_GLOBAL_PATTERN: Final = rf"^(?:{_KEY_SOURCES})\Z"
OPTIONAL_HEADER_NAME_PATTERN: Final = rf"^(?:{_TCHAR}*)\Z"
ABSOLUTE_PATH_PATTERN: Final = r"^/"
PATH_PREFIX_PATTERN: Final = r"^(?:/[^/]+)+\Z"  # "/api/gateway": no trailing "/"
NO_COLON_PATTERN: Final = r"^[^:]*\Z"
NO_QUOTE_PATTERN: Final = r'^[^"\x00-\x1f\x7f]*\Z'

PATTERN_DESCRIPTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        HEADER_NAME_PATTERN: "a header name (RFC 9110 token)",
        COOKIE_NAME_PATTERN: "a cookie name (RFC 6265 token)",
        NAME_PATTERN: (
            "a name: letters, digits, '_', '.', '-', starting with a letter or digit, "
            "at most 128 characters"
        ),
        DNS_LABEL_PATTERN: (
            "a DNS label: lower-case letters, digits and '-', starting with a letter, "
            "not ending with '-', at most 63 characters"
        ),
        ENV_NAME_PATTERN: (
            "an environment variable name: letters, digits and '_', not starting with a digit"
        ),
        KEY_EXPRESSION_PATTERN: (
            "a key expression: client-ip, host, path, global, header:<name>, "
            "cookie:<name> or query:<name>"
        ),
        KEY_EXPRESSION_NO_GLOBAL_PATTERN: (
            "a key expression: client-ip, host, path, header:<name>, cookie:<name> or query:<name>"
        ),
        OPTIONAL_HEADER_NAME_PATTERN: "a header name (RFC 9110 token) or empty",
        ABSOLUTE_PATH_PATTERN: "a path starting with '/'",
        PATH_PREFIX_PATTERN: "a path starting with '/' and not ending with '/'",
        NO_COLON_PATTERN: "a value without ':'",
        NO_QUOTE_PATTERN: "a value without '\"' or control characters",
    }
)


def describe_pattern(shown: str) -> str | None:
    """The description of a pattern given as written or as msgspec shows it (``repr``)."""
    found = PATTERN_DESCRIPTIONS.get(shown)
    if found is not None:
        return found
    for pattern, description in PATTERN_DESCRIPTIONS.items():
        if shown in (repr(pattern), repr(pattern)[1:-1]):
            return description
    return None


# --------------------------------------------------------------------------- durations

_DURATION: Final = re.compile(r"([0-9]+)(?:\.([0-9]+))?(ms|s|m|h)")
_UNIT_SECONDS: Final = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}
_MIN_SECONDS: Final = Fraction(1, 1000)
_MAX_SECONDS: Final = Fraction(8760 * 3600)


def parse_duration(text: str, *, allow_zero: bool = False) -> float:
    """Seconds in a SPEC §3.3.2 duration (``500ms``, ``1.5s``, ``2m``, ``1h``).

    Raises ``ValueError`` unless 1ms <= value <= 8760h, or the value is zero and ``allow_zero``.
    """
    shown = quote_value(text)
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(
            f'duration {shown} is invalid: expected <number><ms|s|m|h>, e.g. "500ms", "1.5s"'
        )
    whole, fraction, unit = match[1].lstrip("0"), (match[2] or "").rstrip("0"), match[3]
    if len(whole) > 15:  # 10**15 ms is already far beyond 8760h; bounds int() work too
        raise ValueError(f"duration {shown} is too long: at most 8760h")
    fraction = fraction[:40]  # finer than any clock; keeps Fraction() cheap on absurd input
    number = Fraction(int(whole or "0")) + Fraction(int(fraction or "0"), 10 ** len(fraction))
    seconds = number * _UNIT_SECONDS[unit]
    if seconds == 0:
        if allow_zero:
            return 0.0
        raise ValueError(f"duration {shown} is not allowed here: must be at least 1ms")
    if seconds < _MIN_SECONDS:
        raise ValueError(f"duration {shown} is too short: at least 1ms")
    if seconds > _MAX_SECONDS:
        raise ValueError(f"duration {shown} is too long: at most 8760h")
    return float(seconds)


class Duration(ScalarValue):
    """A duration of at least 1ms (SPEC §3.3.2); ``.seconds`` is the value."""

    __slots__ = ("seconds",)
    seconds: float
    kind = "duration"
    expected = 'a duration string like "10s"'
    allow_zero: ClassVar[bool] = False

    def __init__(self, text: str) -> None:
        init_fields(self, text=text, seconds=parse_duration(text, allow_zero=self.allow_zero))

    def _key(self) -> tuple[object, ...]:
        return (self.seconds,)


class DurationOrZero(Duration):
    """A duration where ``0s`` (any zero with a unit) means "disabled"."""

    __slots__ = ()
    expected = 'a duration string like "10s" or "0s"'
    allow_zero = True


# --------------------------------------------------------------------------- address


class Address(ScalarValue):
    """A listen address: ``IPv4:port``, ``[IPv6]:port`` or ``:port`` (SPEC §3.3.2).

    ``.host`` is the normalised IP ("" = all interfaces), ``.port`` 0-65535 (0 = ephemeral).
    """

    __slots__ = ("host", "port")
    host: str
    port: int
    kind = "address"
    expected = 'an address string like "0.0.0.0:8080"'

    def __init__(self, text: str) -> None:
        try:
            host, port = self._parse(text)
        except GrammarError as error:
            self._reject(text, str(error))
        init_fields(self, text=text, host=host, port=port)

    @staticmethod
    def _parse(text: str) -> tuple[str, int]:
        if not text or text.isspace():
            raise GrammarError(
                'expected IPv4:port, [IPv6]:port or :port, e.g. "0.0.0.0:8080", ":8080"'
            )
        host, bracketed, port = split_authority(text)
        if port is None:
            raise GrammarError('a port is required, e.g. "0.0.0.0:8080" or ":8080"')
        number = parse_port(port, minimum=0)
        if not host and not bracketed:
            return "", number
        if not bracketed and not NUMERIC_LABEL.fullmatch(host):
            raise GrammarError('host names are not allowed; use an IP address or ":<port>"')
        return parse_ip(host, bracketed=bracketed), number

    def _key(self) -> tuple[object, ...]:
        return (self.host, self.port)


# --------------------------------------------------------------------------- IP / CIDR

_PREFIX: Final = re.compile(r"[0-9]{1,3}")


class IpNetwork(ScalarValue):
    """An IP address or CIDR; host bits are cleared and IPv4-mapped IPv6 becomes IPv4."""

    __slots__ = ("network",)
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    kind = "IP/CIDR"
    expected = 'an IP address or CIDR string like "10.0.0.0/8"'

    def __init__(self, text: str) -> None:
        try:
            network = self._parse(text)
        except GrammarError as error:
            self._reject(text, str(error))
        init_fields(self, text=text, network=network)

    @staticmethod
    def _parse(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        if "%" in text:
            raise GrammarError('zone ids ("%...") are not allowed')
        address, slash, prefix = text.partition("/")
        if slash and _PREFIX.fullmatch(prefix) is None:
            raise GrammarError('the prefix length must be a number, e.g. "10.0.0.0/8"')
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            if slash and _is_ip(address):
                raise GrammarError(
                    "the prefix length must be 0-32 (IPv4) or 0-128 (IPv6)"
                ) from None
            raise GrammarError(
                'expected an IP address or CIDR, e.g. "10.0.0.0/8", "192.0.2.7", "2001:db8::/32"'
            ) from None
        return _unmap(network)

    def contains(self, address: str) -> bool:
        """Whether the IP ``address`` is in this network; mapped IPv6 counts as IPv4.

        A zone id is ignored; anything that is not an IP address is simply not contained.
        """
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.version == self.network.version and ip in self.network

    def _key(self) -> tuple[object, ...]:
        return (self.network,)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _unmap(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


# --------------------------------------------------------------------------- msgspec hooks

VALUE_TYPES: Final[tuple[type[ScalarValue], ...]] = (
    Duration,
    DurationOrZero,
    Address,
    IpNetwork,
    ServerUrl,
    HttpUrl,
    RedisUrl,
)
_BY_TYPE: Final[Mapping[type, type[ScalarValue]]] = {tp: tp for tp in VALUE_TYPES}


def _describe(obj: object) -> str:
    match obj:
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a number"
        case None:
            return "null"
        case list() | tuple():
            return "a list"
        case dict():
            return "a block or object"
        case _:
            return f"a value of type {type(obj).__name__}"


def dec_hook(tp: type, obj: object) -> object:
    """Build a value class for ``msgspec.convert``; ``NotImplementedError`` for other types.

    A string is parsed (its ``ValueError`` becomes msgspec's ``ValidationError`` with the
    path); an instance of the class passes through; anything else is a ``TypeError``.
    """
    cls = _BY_TYPE.get(tp)
    if cls is None:
        raise NotImplementedError(f"no decoder for {tp!r}")
    if isinstance(obj, cls):
        return obj
    if isinstance(obj, str):
        return cls(obj)
    raise TypeError(f"expected {cls.expected}, got {_describe(obj)}")


def enc_hook(obj: object) -> object:
    """Render a value class as its text for ``msgspec.to_builtins`` and the encoders."""
    if isinstance(obj, ScalarValue):
        return obj.text
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")
