"""Scalar value grammars of the config (SPEC §3.3.2) as small immutable value classes.

Ring 0: pure parsing; no trio, sockets, TLS or clocks, and no name resolution (a DNS name in a
server URL is only checked for shape here; it is resolved at connect time, SPEC §10.4).

Each class parses its text once in ``__init__`` (raising ``ValueError`` with a SPEC §2.3 message
that names the bad value and says what is accepted), keeps the text as written in ``.text`` and
compares and hashes by the normalised value. ``msgspec`` builds them through ``dec_hook`` (it
attaches the path, e.g. ``... - at `$.services[...].url```) and renders them back through
``enc_hook``. The module also holds the string patterns used with ``msgspec.Meta(pattern=...)``.

Must not: echo secrets. A URL containing ``@`` may carry a password, so messages about such a
value name the kind of value only, and ``RedisUrl`` hides its password in ``repr`` and ``str``.
"""

from __future__ import annotations

import ipaddress
import re
from fractions import Fraction
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Final, Literal, NoReturn, TypeAlias
from urllib.parse import unquote

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

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
NO_QUOTE_PATTERN: Final = r'^[^"]*\Z'

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
        NO_QUOTE_PATTERN: "a value without '\"'",
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


def quote_value(text: str, *, limit: int = 100) -> str:
    """``text`` in double quotes for a message: control characters escaped, long text cut."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in cut)
    return f'"{shown}"'


# --------------------------------------------------------------------------- value base


class _GrammarError(Exception):
    """A grammar violation; the value class turns the reason into its ``ValueError``."""


class ScalarValue:
    """Base of the value classes: immutable, compared and hashed by the normalised value."""

    __slots__ = ("text",)
    text: str
    #: Word for the kind of value in messages, e.g. ``duration``.
    kind: ClassVar[str]
    #: What ``dec_hook`` says it expected, e.g. ``a duration string like "10s"``.
    expected: ClassVar[str]
    #: Values of one family compare equal across subclasses (Duration and DurationOrZero).
    _family: ClassVar[type[ScalarValue]]

    def __init__(self, text: str) -> None:
        raise NotImplementedError  # each value class parses its own grammar

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        if ScalarValue in cls.__bases__:
            cls._family = cls

    def _key(self) -> tuple[object, ...]:
        raise NotImplementedError

    def _reject(self, text: str, reason: str) -> NoReturn:
        shown = self.kind if "@" in text else f"{self.kind} {quote_value(text)}"
        raise ValueError(f"{shown} is invalid: {reason}")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScalarValue) or self._family is not other._family:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self._family.__name__, self._key()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text!r})"

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[type[ScalarValue], tuple[str]]:
        return (type(self), (self.text,))


def _init(value: ScalarValue, **fields: object) -> None:
    for name, field in fields.items():
        object.__setattr__(value, name, field)


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
        _init(self, text=text, seconds=parse_duration(text, allow_zero=self.allow_zero))

    def _key(self) -> tuple[object, ...]:
        return (self.seconds,)


class DurationOrZero(Duration):
    """A duration where ``0s`` (any zero with a unit) means "disabled"."""

    __slots__ = ()
    expected = 'a duration string like "10s" or "0s"'
    allow_zero = True


# --------------------------------------------------------------------------- hosts and ports

_DNS_NAME: Final = re.compile(
    r"(?=.{1,253}\.?\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
_NUMERIC_LABEL: Final = re.compile(r"(?:.*\.)?[0-9]+\.?")
_PORT: Final = re.compile(r"[0-9]{1,5}")


def _split_authority(authority: str) -> tuple[str, bool, str | None]:
    """``host[:port]`` or ``[v6][:port]`` → (host, bracketed, port text or None)."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise _GrammarError('missing "]" after the IPv6 address')
        rest = authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _GrammarError('expected ":<port>" after "]"')
        return authority[1:end], True, rest[1:] if rest else None
    if authority.count(":") > 1:
        raise _GrammarError('an IPv6 address must be in brackets, e.g. "[::1]:8080"')
    host, colon, port = authority.partition(":")
    return host, False, port if colon else None


def _parse_port(text: str, *, minimum: int) -> int:
    if _PORT.fullmatch(text) is None or not minimum <= int(text) <= 65535:
        raise _GrammarError(f"the port must be a number {minimum}-65535")
    return int(text)


def _parse_ip(host: str, *, bracketed: bool) -> str:
    """A normalised IP literal; IPv6 only inside brackets, IPv4 only outside."""
    if "%" in host:
        raise _GrammarError('zone ids ("%...") are not allowed')
    try:
        if bracketed:
            return str(ipaddress.IPv6Address(host))
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        family = "IPv6" if bracketed else "IPv4"
        raise _GrammarError(f"{quote_value(host)} is not a valid {family} address") from None


def _parse_host(host: str, *, bracketed: bool) -> str:
    """An IP literal or DNS name, normalised (names lower-cased)."""
    if bracketed or _NUMERIC_LABEL.fullmatch(host):
        return _parse_ip(host, bracketed=bracketed)
    if not host:
        raise _GrammarError("the host is empty")
    if _DNS_NAME.fullmatch(host) is None:
        raise _GrammarError(f"{quote_value(host)} is not a valid host name or IP address")
    return host.lower()


def _check_visible(text: str, part: str) -> None:
    if any(not "!" <= ch <= "~" for ch in text):
        raise _GrammarError(
            f"the {part} may contain only visible ASCII characters (percent-encode others)"
        )


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
        except _GrammarError as error:
            self._reject(text, str(error))
        _init(self, text=text, host=host, port=port)

    @staticmethod
    def _parse(text: str) -> tuple[str, int]:
        if not text or text.isspace():
            raise _GrammarError(
                'expected IPv4:port, [IPv6]:port or :port, e.g. "0.0.0.0:8080", ":8080"'
            )
        host, bracketed, port = _split_authority(text)
        if port is None:
            raise _GrammarError('a port is required, e.g. "0.0.0.0:8080" or ":8080"')
        number = _parse_port(port, minimum=0)
        if not host and not bracketed:
            return "", number
        if not bracketed and not _NUMERIC_LABEL.fullmatch(host):
            raise _GrammarError('host names are not allowed; use an IP address or ":<port>"')
        return _parse_ip(host, bracketed=bracketed), number

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
        except _GrammarError as error:
            self._reject(text, str(error))
        _init(self, text=text, network=network)

    @staticmethod
    def _parse(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        if "%" in text:
            raise _GrammarError('zone ids ("%...") are not allowed')
        address, slash, prefix = text.partition("/")
        if slash and _PREFIX.fullmatch(prefix) is None:
            raise _GrammarError('the prefix length must be a number, e.g. "10.0.0.0/8"')
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            if slash and _is_ip(address):
                raise _GrammarError(
                    "the prefix length must be 0-32 (IPv4) or 0-128 (IPv6)"
                ) from None
            raise _GrammarError(
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


# --------------------------------------------------------------------------- URLs

_HTTP_LIKE_PORTS: Final = {"http": 80, "ws": 80, "h2c": 80, "https": 443, "wss": 443}
#: How a server URL is dialled: ``ws``/``wss`` are ``http``/``https``; "bare" is host:port for
#: a TCP or UDP router.
Transport: TypeAlias = Literal["http", "https", "h2c", "tcp", "tls", "udp", "bare"]
_TRANSPORTS: Final[Mapping[str, Transport]] = {
    "http": "http",
    "ws": "http",
    "https": "https",
    "wss": "https",
    "h2c": "h2c",
    "tcp": "tcp",
    "tls": "tls",
    "udp": "udp",
    "": "bare",
}
_SERVER_SCHEMES: Final = frozenset(_TRANSPORTS) - {""}
_USERINFO: Final = 'userinfo ("user:password@") is not allowed'


def _split_url(text: str, schemes: Collection[str], accepted: str) -> tuple[str, str]:
    """``scheme://rest`` → (lower-cased scheme, rest); the scheme must be in ``schemes``."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise _GrammarError(f"expected {accepted}")
    if scheme.lower() not in schemes:
        raise _GrammarError(f"unsupported scheme {quote_value(scheme)}: expected {accepted}")
    return scheme.lower(), rest


class ServerUrl(ScalarValue):
    """A backend address (SPEC §3.3.2): ``http``, ``https``, ``h2c``, ``ws``, ``wss``, ``tcp``,
    ``tls``, ``udp`` URL or bare ``host:port``. ``.path`` is a prefix ("" when none or "/")."""

    __slots__ = ("host", "path", "port", "scheme")
    scheme: str
    host: str
    port: int
    path: str
    kind = "server url"
    expected = 'a server url string like "http://10.0.0.1:8080"'

    def __init__(self, text: str) -> None:
        try:
            scheme, host, port, path = self._parse(text)
        except _GrammarError as error:
            self._reject(text, str(error))
        _init(self, text=text, scheme=scheme, host=host, port=port, path=path)

    @staticmethod
    def _parse(text: str) -> tuple[str, str, int, str]:
        scheme, rest = "", text
        if "://" in text:
            accepted = "http, https, h2c, ws, wss, tcp, tls, udp, or host:port without a scheme"
            scheme, rest = _split_url(text, _SERVER_SCHEMES, accepted)
        if "#" in rest or "?" in rest:
            raise _GrammarError(
                "a fragment is not allowed" if "#" in rest else "a query is not allowed"
            )
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            raise _GrammarError(_USERINFO)
        if slash and scheme not in _HTTP_LIKE_PORTS:
            raise _GrammarError("a path is allowed only with http, https, h2c, ws or wss")
        host_text, bracketed, port_text = _split_authority(authority)
        host = _parse_host(host_text, bracketed=bracketed)
        if port_text is None and scheme not in _HTTP_LIKE_PORTS:
            raise _GrammarError('a port is required, e.g. "tcp://10.0.0.1:5432" or "10.0.0.1:5432"')
        port = _HTTP_LIKE_PORTS[scheme] if port_text is None else _parse_port(port_text, minimum=1)
        _check_visible(path, "path")
        return scheme, host, port, "" if path == "" else "/" + path

    @property
    def is_http_like(self) -> bool:
        """True for http, https, h2c, ws and wss."""
        return self.scheme in _HTTP_LIKE_PORTS

    @property
    def transport(self) -> Transport:
        """``http``, ``https``, ``h2c``, ``tcp``, ``tls``, ``udp`` or ``bare``."""
        return _TRANSPORTS[self.scheme]

    def _key(self) -> tuple[object, ...]:
        return (self.scheme, self.host, self.port, self.path)


class HttpUrl(ScalarValue):
    """An ``http``/``https`` URL for a service the gateway calls (auth, JWKS, ACME, OTLP...).

    ``.port`` defaults to 80/443; ``.target`` is path plus query as sent ("/" when empty).
    """

    __slots__ = ("host", "port", "scheme", "target")
    scheme: str
    host: str
    port: int
    target: str
    kind = "url"
    expected = 'a url string like "https://auth.example.com/verify"'

    def __init__(self, text: str) -> None:
        try:
            scheme, host, port, target = self._parse(text)
        except _GrammarError as error:
            self._reject(text, str(error))
        _init(self, text=text, scheme=scheme, host=host, port=port, target=target)

    @staticmethod
    def _parse(text: str) -> tuple[str, str, int, str]:
        accepted = 'http:// or https:// followed by a host, e.g. "https://auth.example.com/verify"'
        scheme, rest = _split_url(text, {"http": 80, "https": 443}, accepted)
        if "#" in rest:
            raise _GrammarError("a fragment is not allowed")
        split = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority, target = rest[:split], rest[split:]
        if "@" in authority:
            raise _GrammarError(_USERINFO)
        host_text, bracketed, port_text = _split_authority(authority)
        host = _parse_host(host_text, bracketed=bracketed)
        port = _HTTP_LIKE_PORTS[scheme] if port_text is None else _parse_port(port_text, minimum=1)
        _check_visible(target, "path and query")
        return scheme, host, port, target if target.startswith("/") else "/" + target

    def _key(self) -> tuple[object, ...]:
        return (self.scheme, self.host, self.port, self.target)


_REDACTED: Final = "<redacted>"
_DB: Final = re.compile(r"[0-9]{1,10}")


class RedisUrl(ScalarValue):
    """``redis://`` or ``rediss://`` (TLS) URL: ``[user[:password]@]host[:port][/db]``.

    User and password are percent-decoded. The password never appears in ``repr``, ``str``
    or messages; ``.text`` keeps it (for connecting and for round trips).
    """

    __slots__ = ("_redacted", "db", "host", "password", "port", "tls", "username")
    host: str
    port: int
    db: int
    tls: bool
    username: str | None
    password: str | None
    _redacted: str
    kind = "redis url"
    expected = 'a redis url string like "redis://127.0.0.1:6379/0"'

    def __init__(self, text: str) -> None:
        try:
            self._parse(text)
        except _GrammarError as error:
            self._reject(text, str(error))

    def _parse(self, text: str) -> None:
        accepted = 'redis:// or rediss:// followed by a host, e.g. "redis://127.0.0.1:6379/0"'
        scheme, rest = _split_url(text, {"redis": 6379, "rediss": 6379}, accepted)
        userinfo, at, located = rest.rpartition("@")
        if "#" in located or "?" in located:
            raise _GrammarError(
                "a fragment is not allowed" if "#" in located else "a query is not allowed"
            )
        authority, _, db_text = located.partition("/")
        host_text, bracketed, port_text = _split_authority(authority)
        if db_text and (_DB.fullmatch(db_text) is None or int(db_text) > 2**31 - 1):
            raise _GrammarError('the database must be a number, e.g. "/0"')
        user, colon, password = userinfo.partition(":")
        redacted = text
        if colon and password:
            redacted = f"{text[: len(scheme)]}://{user}:{_REDACTED}@{located}"
        _init(
            self,
            text=text,
            host=_parse_host(host_text, bracketed=bracketed),
            port=6379 if port_text is None else _parse_port(port_text, minimum=1),
            db=int(db_text or "0"),
            tls=scheme == "rediss",
            username=unquote(user) or None if at else None,
            password=unquote(password) or None if colon else None,
            _redacted=redacted,
        )

    def redacted(self) -> str:
        """The URL with its password replaced by ``<redacted>`` (SPEC §14.4)."""
        return self._redacted

    def _key(self) -> tuple[object, ...]:
        return (self.tls, self.host, self.port, self.db, self.username, self.password)

    def __repr__(self) -> str:
        return f"RedisUrl({self._redacted!r})"

    def __str__(self) -> str:
        return self._redacted


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
