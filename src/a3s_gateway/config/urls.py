"""URL value classes of the config (SPEC §3.3.2): ``ServerUrl``, ``HttpUrl`` and ``RedisUrl``.

Ring 0: pure parsing; no trio, sockets, TLS or clocks, and no name resolution (a DNS name in a
URL is only checked for shape here; it is resolved at connect time, SPEC §10.4).

Each class follows the ``ScalarValue`` shape (``scalar.py``): parsed once in ``__init__``, text
kept in ``.text``, compared by the normalised value. ``values.py`` re-exports them and builds
them for msgspec through ``dec_hook``.

Must not: echo secrets. A URL containing ``@`` may carry a password, so messages about such a
value name the kind of value only, and ``RedisUrl`` hides its password in ``repr`` and ``str``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, Literal, TypeAlias
from urllib.parse import unquote

from a3s_gateway.config.authority import check_visible, parse_host, parse_port, split_authority
from a3s_gateway.config.scalar import GrammarError, ScalarValue, init_fields, quote_value

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

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
        raise GrammarError(f"expected {accepted}")
    if scheme.lower() not in schemes:
        raise GrammarError(f"unsupported scheme {quote_value(scheme)}: expected {accepted}")
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
        except GrammarError as error:
            self._reject(text, str(error))
        init_fields(self, text=text, scheme=scheme, host=host, port=port, path=path)

    @staticmethod
    def _parse(text: str) -> tuple[str, str, int, str]:
        scheme, rest = "", text
        if "://" in text:
            accepted = "http, https, h2c, ws, wss, tcp, tls, udp, or host:port without a scheme"
            scheme, rest = _split_url(text, _SERVER_SCHEMES, accepted)
        if "#" in rest or "?" in rest:
            raise GrammarError(
                "a fragment is not allowed" if "#" in rest else "a query is not allowed"
            )
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            raise GrammarError(_USERINFO)
        if slash and scheme not in _HTTP_LIKE_PORTS:
            raise GrammarError("a path is allowed only with http, https, h2c, ws or wss")
        host_text, bracketed, port_text = split_authority(authority)
        host = parse_host(host_text, bracketed=bracketed)
        if port_text is None and scheme not in _HTTP_LIKE_PORTS:
            raise GrammarError('a port is required, e.g. "tcp://10.0.0.1:5432" or "10.0.0.1:5432"')
        port = _HTTP_LIKE_PORTS[scheme] if port_text is None else parse_port(port_text, minimum=1)
        check_visible(path, "path")
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
        except GrammarError as error:
            self._reject(text, str(error))
        init_fields(self, text=text, scheme=scheme, host=host, port=port, target=target)

    @staticmethod
    def _parse(text: str) -> tuple[str, str, int, str]:
        accepted = 'http:// or https:// followed by a host, e.g. "https://auth.example.com/verify"'
        scheme, rest = _split_url(text, {"http": 80, "https": 443}, accepted)
        if "#" in rest:
            raise GrammarError("a fragment is not allowed")
        split = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority, target = rest[:split], rest[split:]
        if "@" in authority:
            raise GrammarError(_USERINFO)
        host_text, bracketed, port_text = split_authority(authority)
        host = parse_host(host_text, bracketed=bracketed)
        port = _HTTP_LIKE_PORTS[scheme] if port_text is None else parse_port(port_text, minimum=1)
        check_visible(target, "path and query")
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
        except GrammarError as error:
            self._reject(text, str(error))

    def _parse(self, text: str) -> None:
        accepted = 'redis:// or rediss:// followed by a host, e.g. "redis://127.0.0.1:6379/0"'
        scheme, rest = _split_url(text, {"redis": 6379, "rediss": 6379}, accepted)
        userinfo, at, located = rest.rpartition("@")
        if "#" in located or "?" in located:
            raise GrammarError(
                "a fragment is not allowed" if "#" in located else "a query is not allowed"
            )
        authority, _, db_text = located.partition("/")
        host_text, bracketed, port_text = split_authority(authority)
        if db_text and (_DB.fullmatch(db_text) is None or int(db_text) > 2**31 - 1):
            raise GrammarError('the database must be a number, e.g. "/0"')
        user, colon, password = userinfo.partition(":")
        redacted = text
        if colon and password:
            redacted = f"{text[: len(scheme)]}://{user}:{_REDACTED}@{located}"
        init_fields(
            self,
            text=text,
            host=parse_host(host_text, bracketed=bracketed),
            port=6379 if port_text is None else parse_port(port_text, minimum=1),
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
