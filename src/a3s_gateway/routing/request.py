"""What matchers read: request and connection views, computed once per request (SPEC §4.3–4.5).

Ring 0: pure; no trio, sockets, TLS or clocks, no logging.

``HttpRequestInfo`` and ``TcpConnInfo`` are the raw, as-received inputs of the public
``CompiledRule.matches`` API (SPEC §2.8). ``RequestView`` and ``ConnView`` hold what compiled
matchers compare against: the canonical host (§4.4), the routing path (§4.5), header lines by
lower-case name, the query parsed like Go's ``url.ParseQuery``, and the peer IP address for
``ClientIP``. Construction computes only what almost every rule needs (method, host, path);
headers, query, peer and the text form of the path are computed on first use and cached in slots
(DESIGN.md §3.5), so a rule that never asks never pays.

Text fields hold wire bytes decoded as UTF-8 with ``surrogateescape`` (ASCII in practice); this
module encodes them back the same way, so no byte is lost or confused with another.

Must not: sanitise the path (that is the entrypoint's step, SPEC §4.5), read ``X-Forwarded-For``
for the peer, split header values on commas, or raise anything but ``InvalidPathEscape``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Self, TypeAlias

from a3s_gateway.routing.paths import (
    InvalidPathEscape,
    percent_decode,
    percent_table,
    routing_path,
    sanitize_path,
    text_bytes,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "ConnView",
    "HttpRequestInfo",
    "InvalidPathEscape",
    "PeerAddress",
    "RequestView",
    "TcpConnInfo",
    "canonical_host",
    "canonical_sni",
    "parse_peer",
    "parse_query",
    "routing_path",
    "sanitize_path",
]

PeerAddress: TypeAlias = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class HttpRequestInfo:
    """An HTTP request as received, for ``CompiledRule.matches`` (SPEC §2.8)."""

    method: str
    #: The ``Host`` header, or the absolute-form authority / HTTP/2 ``:authority`` (SPEC §4.4).
    host: str
    #: The request-target path without the query, percent-escapes intact.
    path: str
    headers: Sequence[tuple[str, str]] = ()
    #: The raw query string, without ``?``.
    query: str = ""
    #: The TCP peer: ``ip``, ``ip:port`` or ``[v6]:port``; may be empty or garbage.
    remote_addr: str = ""


@dataclass(frozen=True, slots=True)
class TcpConnInfo:
    """A TCP connection as seen by TCP rules: ClientHello SNI and ALPN, and the peer (§4.10)."""

    sni: str = ""
    alpn: Sequence[str] = ()
    remote_addr: str = ""


# --------------------------------------------------------------------------- host and SNI

#: "Surrounding spaces" of §4.4: optional whitespace as in RFC 9110 §5.6.3.
_OWS: Final = " \t"


def canonical_host(value: str) -> str:
    """The canonical request host of a ``Host`` / authority value (SPEC §4.4 steps 2–3).

    ``[v6]:port`` and ``[v6]`` keep what is inside the brackets; otherwise a value with exactly
    one ``:`` keeps the part before it, and any other value (an unbracketed IPv6 literal) stays
    whole. Then surrounding spaces are trimmed, the value lower-cased and one trailing dot
    removed. ``""`` means "no host". Spaces are also trimmed *before* the port is stripped, so
    ``" [::1]:80"`` gives ``"::1"`` as ``"[::1]:80"`` does.
    """
    host = value.strip(_OWS)
    inside = _bracketed(host) if host[:1] == "[" else None
    if inside is not None:
        host = inside.strip(_OWS)
    elif host.count(":") == 1:
        host = host[: host.index(":")].rstrip(_OWS)
    return host.lower().removesuffix(".")


def _bracketed(value: str) -> str | None:
    """For a ``value`` starting with ``[``: the inside of ``[x]`` or ``[x]:port``, else None.

    The port is anything without a further ``:`` (Go's ``SplitHostPort`` shape).
    """
    end = value.find("]")
    if end < 0:
        return None
    rest = value[end + 1 :]
    if rest and (rest[0] != ":" or ":" in rest[1:]):
        return None
    return value[1:end]


def canonical_sni(value: str) -> str:
    """The SNI as TCP matchers compare it: lower-cased, one trailing dot removed (§4.10)."""
    return value.lower().removesuffix(".")


# --------------------------------------------------------------------------- query

_QUERY_TABLE: Final = percent_table()
_NO_QUERY: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({})


def parse_query(raw: str) -> Mapping[str, tuple[str, ...]]:
    """Parse a raw query string exactly like Go's ``url.ParseQuery`` (SPEC §4.3).

    Pairs are split on ``&``; empty pairs are skipped; a pair containing ``;`` is dropped; each
    pair splits at its first ``=`` (none: the value is empty); key and value are decoded with
    ``+`` → space and ``%XX``, and a pair with an invalid escape is dropped. Values keep their
    order. Decoded bytes that are not UTF-8 survive as ``surrogateescape`` characters, so they
    never equal a valid rule argument (Go compares bytes). Never raises.
    """
    if not raw:
        return _NO_QUERY
    collected: dict[str, list[str]] = {}
    for pair in raw.split("&"):
        if not pair or ";" in pair:
            continue
        key, _, value = pair.partition("=")
        key_text = _unescape_query_part(key)
        value_text = _unescape_query_part(value)
        if key_text is None or value_text is None:
            continue
        collected.setdefault(key_text, []).append(value_text)
    return {key: tuple(values) for key, values in collected.items()}


def _unescape_query_part(text: str) -> str | None:
    """Go's ``QueryUnescape``: ``+`` → space and ``%XX`` decoded; None for a bad escape."""
    if "%" not in text:
        return text.replace("+", " ")
    decoded = percent_decode(text_bytes(text.replace("+", " ")), _QUERY_TABLE)
    return None if decoded is None else decoded.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- peer

_PORT: Final = re.compile(r"[0-9]{1,5}")


def parse_peer(remote_addr: str) -> PeerAddress | None:
    """The peer IP of ``ip``, ``ip:port``, ``[v6]``, ``[v6]:port`` (SPEC §4.3 ``ClientIP``).

    Brackets, the port and a zone id (``%eth0``) are stripped; an IPv4-mapped IPv6 address
    (``::ffff:a.b.c.d``) is returned as IPv4 (SPEC §3.3.2). Anything unparsable, including a
    non-numeric port, gives None.
    """
    host = remote_addr
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        rest = host[end + 1 :]
        if rest and (rest[0] != ":" or _PORT.fullmatch(rest, 1) is None):
            return None
        host = host[1:end]
    elif host.count(":") == 1:
        host, _, port = host.partition(":")
        if _PORT.fullmatch(port) is None:
            return None
    try:
        address = ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# --------------------------------------------------------------------------- views


class _Missing(enum.Enum):
    """Marks a cache slot whose value may legitimately be None (the peer) as not computed."""

    MISSING = enum.auto()


def _index_headers(headers: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """Field lines grouped by lower-case name, values as received, in order; one pass."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(name.lower(), []).append(value)
    return {name: tuple(values) for name, values in grouped.items()}


class RequestView:
    """One HTTP request as matchers see it; built once per request, read many times.

    ``method`` (as received), ``host`` (canonical, §4.4) and ``path`` (routing path bytes, §4.5)
    are plain attributes. Headers, query, peer and ``path_text`` are computed on first use and
    cached. Treat every attribute as read-only. The constructor takes values that are already
    canonical (the data plane sanitises and canonicalises first); ``from_info`` takes raw ones.
    """

    __slots__ = (
        "_header_index",
        "_headers",
        "_path_text",
        "_peer",
        "_query",
        "_raw_query",
        "_remote_addr",
        "host",
        "method",
        "path",
    )

    def __init__(
        self,
        method: str,
        host: str,
        path: bytes,
        *,
        headers: Iterable[tuple[str, str]] = (),
        query: str = "",
        remote_addr: str = "",
    ) -> None:
        self.method = method
        self.host = host
        self.path = path
        self._headers = headers
        self._raw_query = query
        self._remote_addr = remote_addr
        # None marks "not computed" where the computed value is never None.
        self._path_text: str | None = None
        self._header_index: dict[str, tuple[str, ...]] | None = None
        self._query: Mapping[str, tuple[str, ...]] | None = None
        self._peer: PeerAddress | _Missing | None = _Missing.MISSING

    @classmethod
    def from_info(cls, info: HttpRequestInfo) -> Self:
        """The view of a raw request: canonical host and routing path, *not* sanitised.

        Raises:
            InvalidPathEscape: the path has a ``%`` not followed by two hex digits.
        """
        return cls(
            info.method,
            canonical_host(info.host),
            routing_path(info.path),
            headers=info.headers,
            query=info.query,
            remote_addr=info.remote_addr,
        )

    @property
    def path_text(self) -> str:
        """The routing path decoded as UTF-8, invalid bytes replaced by U+FFFD (for regexes)."""
        text = self._path_text
        if text is None:
            text = self._path_text = self.path.decode("utf-8", "replace")
        return text

    def header_values(self, lower_name: str) -> tuple[str, ...]:
        """Every field line named ``lower_name`` (which must be lower-case), as received.

        Names compare case-insensitively; a comma-joined line stays one value (SPEC §4.3).
        """
        index = self._header_index
        if index is None:
            index = self._header_index = _index_headers(self._headers)
        return index.get(lower_name, ())

    @property
    def query(self) -> Mapping[str, tuple[str, ...]]:
        """The query parsed like Go's ``url.ParseQuery`` (``parse_query``); read-only."""
        parsed = self._query
        if parsed is None:
            parsed = self._query = parse_query(self._raw_query)
        return parsed

    @property
    def peer(self) -> PeerAddress | None:
        """The TCP peer's IP address (``parse_peer``), None if it does not parse."""
        peer = self._peer
        if peer is _Missing.MISSING:
            peer = self._peer = parse_peer(self._remote_addr)
        return peer


class ConnView:
    """One TCP connection as TCP matchers see it: SNI, offered ALPN protocols, peer (§4.10).

    The constructor takes a canonical SNI (``canonical_sni``); ``from_info`` takes a raw one.
    """

    __slots__ = ("_peer", "_remote_addr", "alpn", "sni")

    def __init__(self, sni: str = "", alpn: tuple[str, ...] = (), remote_addr: str = "") -> None:
        self.sni = sni
        self.alpn = alpn
        self._remote_addr = remote_addr
        self._peer: PeerAddress | _Missing | None = _Missing.MISSING

    @classmethod
    def from_info(cls, info: TcpConnInfo) -> Self:
        """The view of a raw connection: SNI canonicalised, ALPN as a tuple."""
        return cls(canonical_sni(info.sni), tuple(info.alpn), info.remote_addr)

    @property
    def peer(self) -> PeerAddress | None:
        """The TCP peer's IP address (``parse_peer``), None if it does not parse."""
        peer = self._peer
        if peer is _Missing.MISSING:
            peer = self._peer = parse_peer(self._remote_addr)
        return peer
