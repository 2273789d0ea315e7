"""Compiled matchers: small predicate objects built once per config (SPEC §4.3, §4.9, §4.10).

Ring 0: pure. Each matcher answers ``matches(view)`` for a prepared ``RequestView`` (HTTP) or
``ConnView`` (TCP) by comparing values that were normalised when the rule was compiled (hosts
lower-cased, methods upper-cased, header names lower-cased, paths encoded to bytes, regexes
compiled in the RE2 flavour of ``regex.py``). Combinators flatten nested ``&&``/``||`` into one
tuple each, so evaluation is a loop, not a recursion per operator.

Must not: parse or allocate per request beyond what the view caches; raise while matching.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    import re

    from a3s_gateway.routing.request import ConnView, RequestView

View_contra = TypeVar("View_contra", "RequestView", "ConnView", contravariant=True)
View = TypeVar("View", "RequestView", "ConnView")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Matcher(Protocol[View_contra]):
    """A compiled predicate over a request or connection view."""

    def matches(self, view: View_contra, /) -> bool: ...


# -- combinators ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllOf(Generic[View]):
    """``a && b && …``: every part matches (evaluated left to right, short-circuit)."""

    parts: tuple[Matcher[View], ...]

    def matches(self, view: View, /) -> bool:
        # A loop, not all(genexpr): no generator object per request (hot path).
        for part in self.parts:  # noqa: SIM110
            if not part.matches(view):
                return False
        return True


@dataclass(frozen=True, slots=True)
class AnyOf(Generic[View]):
    """``a || b || …``: some part matches."""

    parts: tuple[Matcher[View], ...]

    def matches(self, view: View, /) -> bool:
        for part in self.parts:  # noqa: SIM110  # no generator per request, as in AllOf
            if part.matches(view):
                return True
        return False


@dataclass(frozen=True, slots=True)
class Negated(Generic[View]):
    """``!a``."""

    part: Matcher[View]

    def matches(self, view: View, /) -> bool:
        return not self.part.matches(view)


@dataclass(frozen=True, slots=True)
class Always:
    """Matches everything (``Host(`*`)``, ``HostSNI(`*`)``)."""

    def matches(self, view: RequestView | ConnView, /) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Never:
    """Matches nothing (a v2 template whose regex does not compile, as in Traefik)."""

    def matches(self, view: RequestView | ConnView, /) -> bool:
        return False


# -- HTTP -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostIs:
    """``Host(`example.com`)``: the canonical host equals ``host``."""

    host: str

    def matches(self, view: RequestView, /) -> bool:
        return view.host == self.host


@dataclass(frozen=True, slots=True)
class HostUnder:
    """``Host(`*.example.com`)``: exactly one non-empty label in front of ``.suffix``."""

    suffix: str  # ".example.com"

    def matches(self, view: RequestView, /) -> bool:
        return _one_label_under(view.host, self.suffix)


@dataclass(frozen=True, slots=True)
class HostPattern:
    """``HostRegexp``: an unanchored search in the canonical host."""

    pattern: re.Pattern[str]

    def matches(self, view: RequestView, /) -> bool:
        return self.pattern.search(view.host) is not None


@dataclass(frozen=True, slots=True)
class PathIs:
    """``Path(`/x`)``: the routing path equals ``path`` (bytes)."""

    path: bytes

    def matches(self, view: RequestView, /) -> bool:
        return view.path == self.path


@dataclass(frozen=True, slots=True)
class PathStartsWith:
    """``PathPrefix(`/x`)``: a plain byte-string prefix (``/api`` matches ``/apiary``)."""

    prefix: bytes

    def matches(self, view: RequestView, /) -> bool:
        return view.path.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class PathPattern:
    """``PathRegexp``: an unanchored search in the routing path decoded as UTF-8."""

    pattern: re.Pattern[str]

    def matches(self, view: RequestView, /) -> bool:
        return self.pattern.search(view.path_text) is not None


@dataclass(frozen=True, slots=True)
class MethodIs:
    """``Method(`GET`)``: the request method compared case-sensitively (RFC 9110 §9.1)."""

    method: str

    def matches(self, view: RequestView, /) -> bool:
        return view.method == self.method


@dataclass(frozen=True, slots=True)
class HeaderIs:
    """``Header(k, v)``: some field line named ``k`` has exactly the value ``v``."""

    name: str  # lower-case
    value: str

    def matches(self, view: RequestView, /) -> bool:
        return self.value in view.header_values(self.name)


@dataclass(frozen=True, slots=True)
class HeaderPattern:
    """``HeaderRegexp(k, re)``: some field line named ``k`` matches ``re``."""

    name: str
    pattern: re.Pattern[str]

    def matches(self, view: RequestView, /) -> bool:
        search = self.pattern.search
        return any(search(value) is not None for value in view.header_values(self.name))


@dataclass(frozen=True, slots=True)
class QueryIs:
    """``Query(k)`` (value ``""``) and ``Query(k, v)``: some value of ``k`` equals ``value``."""

    key: str
    value: str

    def matches(self, view: RequestView, /) -> bool:
        return self.value in view.query.get(self.key, ())


@dataclass(frozen=True, slots=True)
class QueryPattern:
    """``QueryRegexp(k, re)``: some value of ``k`` matches ``re``."""

    key: str
    pattern: re.Pattern[str]

    def matches(self, view: RequestView, /) -> bool:
        search = self.pattern.search
        return any(search(value) is not None for value in view.query.get(self.key, ()))


@dataclass(frozen=True, slots=True)
class QueryTemplate:
    """v2 ``Query(`k=v`)`` (gorilla/mux query templates): ``k=`` plus the *first* value of
    ``k`` matches the anchored ``pattern``; an absent key is tested as ``""``."""

    key: str
    pattern: re.Pattern[str]

    def matches(self, view: RequestView, /) -> bool:
        values = view.query.get(self.key)
        subject = f"{self.key}={values[0]}" if values else ""
        return self.pattern.search(subject) is not None


@dataclass(frozen=True, slots=True)
class ClientIpIn:
    """``ClientIP(x)``: the TCP peer (never X-Forwarded-For) is inside ``network``."""

    network: Network

    def matches(self, view: RequestView | ConnView, /) -> bool:
        peer = view.peer
        return peer is not None and peer.version == self.network.version and peer in self.network


# -- TCP ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SniIs:
    """``HostSNI(`example.com`)``: the SNI equals ``name``."""

    name: str

    def matches(self, view: ConnView, /) -> bool:
        return view.sni == self.name


@dataclass(frozen=True, slots=True)
class SniUnder:
    """``HostSNI(`*.example.com`)``: exactly one label in front of ``.suffix``."""

    suffix: str

    def matches(self, view: ConnView, /) -> bool:
        return _one_label_under(view.sni, self.suffix)


@dataclass(frozen=True, slots=True)
class SniPattern:
    """``HostSNIRegexp``: an unanchored search in the SNI (may match the empty SNI)."""

    pattern: re.Pattern[str]

    def matches(self, view: ConnView, /) -> bool:
        return self.pattern.search(view.sni) is not None


@dataclass(frozen=True, slots=True)
class AlpnOffers:
    """``ALPN(`h2`)``: the ClientHello offered ``protocol``."""

    protocol: str

    def matches(self, view: ConnView, /) -> bool:
        return self.protocol in view.alpn


def _one_label_under(name: str, suffix: str) -> bool:
    if not name.endswith(suffix):
        return False
    label = name[: len(name) - len(suffix)]
    return bool(label) and "." not in label
