"""Header rules of a forwarding proxy (SPEC §5.4): hop-by-hop removal, forwarding fields, ``Via``.

Ring 0: pure functions over header lists; no trio, sockets, TLS, clocks or logging.

A header list is h11's representation, ``list[tuple[bytes, bytes]]`` with **lower-case** names
and values as received (HTTP/2 names are lower-case on the wire, RFC 9113 §8.2.2). Inputs are any
sequence of such pairs (an ``h11`` ``Headers`` object works); every function returns a **new**
list and never mutates its input. Names are compared as bytes against precomputed constants and
values are never decoded on the way through (DESIGN.md §3.5); only the fields a rule must read
(``Connection``, ``TE``, ``Via``, ``X-Forwarded-For``) are split, and only when present.

The data plane calls, per request, in this order (SPEC §5.4 steps 1–4, 7):
``client_wants_trailers`` and ``via_loop_count`` on the headers as received, then
``strip_hop_by_hop``, ``client_ip`` (to build the ``ForwardingContext``), ``forwarding_headers``,
and ``join_cookies`` for HTTP/2 clients. Responses go through ``strip_response_hop_by_hop``.

Must not: validate header syntax (the adapters did), touch ``Host``/``:authority`` or pseudo-header
translation, add request ids, or decide statuses (508, 417) itself — it reports, the caller acts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

from a3s_gateway.routing.request import parse_peer

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from a3s_gateway.routing.request import PeerAddress

__all__ = [
    "HOP_BY_HOP",
    "TE_TRAILERS",
    "VIA_LOOP_LIMIT",
    "VIA_PSEUDONYM",
    "ForwardingContext",
    "HeaderLine",
    "Headers",
    "client_ip",
    "client_wants_trailers",
    "connection_tokens",
    "forwarding_headers",
    "join_cookies",
    "strip_hop_by_hop",
    "strip_response_hop_by_hop",
    "via_loop_count",
]

HeaderLine: TypeAlias = tuple[bytes, bytes]
#: A header list: lower-case names, values as received, in wire order.
Headers: TypeAlias = list[HeaderLine]

# RFC 9110 §7.6.1 lists Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding and
# Upgrade as connection-specific; Trailer only describes this hop's chunked framing (§6.6.2);
# Proxy-Authorization/-Authenticate are consumed by the proxy they address (§11.7); HTTP2-Settings
# belongs to the h2c upgrade of this connection (RFC 7540 §3.2.1).
HOP_BY_HOP: Final[frozenset[bytes]] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"trailer",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"http2-settings",
    }
)
# Connection options that are never honoured as field names to remove: dropping Content-Length
# or Host because a client listed them would change how the next hop frames or routes the message
# (a known request-smuggling lever), and pseudo-header names are not field names at all.
_NOT_REMOVABLE: Final[frozenset[bytes]] = frozenset({b"content-length", b"host"})

#: The line added upstream when the client's TE listed ``trailers`` or for gRPC (SPEC §5.4 step 5).
TE_TRAILERS: Final[HeaderLine] = (b"te", b"trailers")
#: The received-by pseudonym of this gateway in ``Via`` (RFC 9110 §7.6.3).
VIA_PSEUDONYM: Final = b"a3s-gateway"
#: A request whose ``Via`` names the gateway this many times gets 508 (SPEC §5.4 step 4).
VIA_LOOP_LIMIT: Final = 10

_OWS: Final = b" \t"
_CONNECTION_UPGRADE: Final[HeaderLine] = (b"connection", b"upgrade")
_KEPT_ON_UPGRADE: Final[frozenset[bytes]] = frozenset({b"connection", b"upgrade"})

_EXPECT: Final = b"expect"
_XFF: Final = b"x-forwarded-for"
_XF_PROTO: Final = b"x-forwarded-proto"
_XF_HOST: Final = b"x-forwarded-host"
_XF_PORT: Final = b"x-forwarded-port"
_X_REAL_IP: Final = b"x-real-ip"
# Passed unchanged from a trusted peer, removed from any other (SPEC §5.4 step 3 table).
_PASSED_WHEN_TRUSTED: Final[frozenset[bytes]] = frozenset(
    {_XF_PROTO, _XF_HOST, _XF_PORT, _X_REAL_IP, b"forwarded", b"x-forwarded-prefix"}
)
_FORWARDING: Final[frozenset[bytes]] = _PASSED_WHEN_TRUSTED | {_XFF}

_PROTO: Final = {False: (_XF_PROTO, b"http"), True: (_XF_PROTO, b"https")}
_DEFAULT_PORT: Final = {False: b"80", True: b"443"}
_VIA_LINES: Final = {
    version: (b"via", version + b" " + VIA_PSEUDONYM) for version in (b"1.0", b"1.1", b"2")
}


# --------------------------------------------------------------------------- hop-by-hop


def connection_tokens(headers: Sequence[HeaderLine]) -> frozenset[bytes]:
    """The lower-cased options of every ``Connection`` line (comma lists, OWS trimmed, empty
    elements ignored as RFC 9110 §5.6.1 asks of recipients)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            for item in value.split(b","):
                token = item.strip(_OWS).lower()
                if token:
                    tokens.add(token)
    return frozenset(tokens)


def strip_hop_by_hop(headers: Sequence[HeaderLine], *, keep_upgrade: bool = False) -> Headers:
    """SPEC §5.4 step 1: a copy without ``HOP_BY_HOP`` fields and the fields ``Connection`` names.

    RFC 9110 §7.6.1 requires the fields named as connection options to go too. That happens here,
    before the gateway adds its own forwarding fields, so ``Connection: X-Forwarded-For`` removes
    only the client's copy. ``Content-Length``, ``Host`` and pseudo-headers are never removed on
    a client's say-so (see ``_NOT_REMOVABLE``).

    With ``keep_upgrade`` (a proxied WebSocket upgrade, or its 101 response) the ``Upgrade``
    lines survive and the ``Connection`` lines collapse into one ``connection: upgrade`` at the
    first one's place, so the next hop still sees an upgrade and nothing else of this hop.
    Idempotent; field lines that are kept stay in order.
    """
    named = connection_tokens(headers)
    drop = HOP_BY_HOP | (named - _NOT_REMOVABLE) if named else HOP_BY_HOP
    out: Headers = []
    wrote_connection = False
    for line in headers:
        name = line[0]
        if keep_upgrade and name in _KEPT_ON_UPGRADE:
            if name == b"upgrade":
                out.append(line)
            elif not wrote_connection:
                out.append(_CONNECTION_UPGRADE)
                wrote_connection = True
        elif name not in drop or name[:1] == b":":
            out.append(line)
    return out


def strip_response_hop_by_hop(
    headers: Sequence[HeaderLine], *, keep_upgrade: bool = False
) -> Headers:
    """The response side of step 1: the same fields go; ``keep_upgrade`` for a relayed 101.

    Everything else, repeated ``Set-Cookie`` lines included, is relayed as is; no ``Via`` is
    added to responses and a ``Trailer`` line is the caller's to regenerate (SPEC §5.4).
    """
    return strip_hop_by_hop(headers, keep_upgrade=keep_upgrade)


def client_wants_trailers(headers: Sequence[HeaderLine]) -> bool:
    """Whether a ``TE`` line lists ``trailers`` (SPEC §5.4 step 5; RFC 9110 §10.1.4).

    Call it on the headers as received: ``TE`` is hop-by-hop and step 1 removes it.
    """
    for name, value in headers:
        if name == b"te":
            for item in value.split(b","):
                if item.partition(b";")[0].strip(_OWS).lower() == b"trailers":
                    return True
    return False


# --------------------------------------------------------------------------- forwarding


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardingContext:
    """What the forwarding fields are made of, computed once per request by the data plane."""

    #: The TCP peer address text (after the PROXY protocol), without port or brackets.
    peer_ip: str
    #: The peer is in ``forwarded_headers.trusted_ips``, or ``insecure`` is set (SPEC §3.7).
    peer_trusted: bool
    #: The resolved client IP (``client_ip``), sent as ``X-Real-IP``.
    client_ip: str
    #: The entrypoint terminated TLS: ``https`` and default port 443.
    tls: bool
    #: The request authority as received (``Host`` or ``:authority``), port included.
    authority: bytes
    #: The downstream protocol version for ``Via``: ``b"1.0"``, ``b"1.1"`` or ``b"2"``.
    via_protocol: bytes
    #: The entrypoint's ``via`` setting.
    add_via: bool = True


def forwarding_headers(headers: Sequence[HeaderLine], ctx: ForwardingContext) -> Headers:
    """SPEC §5.4 steps 2–4 on headers that already went through ``strip_hop_by_hop``.

    ``Expect`` is removed (the gateway answers ``100-continue`` itself). From an untrusted peer
    every forwarding field is removed and the gateway's own are appended; from a trusted peer the
    incoming ``X-Forwarded-For`` lines are combined in order, the peer IP is appended to them, and
    the other forwarding fields stay where they are, only missing ones being added. Other lines
    keep their order; the gateway's fields go at the end. ``Via`` is added as a new field line
    rather than spliced into an existing one: RFC 9110 §5.3 makes the two equivalent, and a new
    line needs no copy of the received value (the line itself is a precomputed constant).
    """
    trusted = ctx.peer_trusted
    out: Headers = []
    chain: list[bytes] = []
    present: set[bytes] = set()
    for line in headers:
        name = line[0]
        if name == _EXPECT:
            continue
        if name in _FORWARDING:
            if not trusted:
                continue
            if name == _XFF:
                # Empty and comma-only lines carry no entry (RFC 9110 §5.6.1 empty elements).
                value = line[1].strip(b" \t,")
                if value:
                    chain.append(value)
                continue
            present.add(name)
        out.append(line)
    chain.append(ctx.peer_ip.encode("ascii", "replace"))
    out.append((_XFF, b", ".join(chain)))
    for added in _defaults(ctx):
        if added[0] not in present:
            out.append(added)
    if ctx.add_via:
        out.append(_via_line(ctx.via_protocol))
    return out


def _defaults(ctx: ForwardingContext) -> tuple[HeaderLine, ...]:
    """The forwarding fields the gateway supplies when a trusted peer has not (table order)."""
    return (
        _PROTO[ctx.tls],
        (_XF_HOST, ctx.authority),
        (_XF_PORT, _authority_port(ctx.authority, ctx.tls)),
        (_X_REAL_IP, ctx.client_ip.encode("ascii", "replace")),
    )


def _authority_port(authority: bytes, tls: bool) -> bytes:
    """The port of ``host:port`` or ``[v6]:port``; 80/443 when absent, empty or not numeric."""
    port = b""
    if authority[:1] == b"[":
        end = authority.find(b"]")
        if end >= 0 and authority[end + 1 : end + 2] == b":":
            port = authority[end + 2 :]
    elif authority.count(b":") == 1:  # a bare IPv6 literal has several colons and no port
        port = authority.rpartition(b":")[2]
    if port.isdigit() and len(port) <= 5:  # bytes.isdigit() accepts ASCII digits only
        return port
    return _DEFAULT_PORT[tls]


def _via_line(version: bytes) -> HeaderLine:
    line = _VIA_LINES.get(version)
    return line if line is not None else (b"via", version + b" " + VIA_PSEUDONYM)


def via_loop_count(headers: Sequence[HeaderLine]) -> int:
    """How many ``Via`` elements name this gateway as received-by (SPEC §5.4 step 4).

    An element is ``received-protocol RWS received-by [RWS comment]`` (RFC 9110 §7.6.3); its
    second word is compared case-insensitively with ``VIA_PSEUDONYM``. Commas inside comments
    are not special-cased: they can only make a client's own request look like a loop.
    The caller answers 508 when the count reaches ``VIA_LOOP_LIMIT``.
    """
    count = 0
    for name, value in headers:
        if name == b"via" and VIA_PSEUDONYM in value.lower():
            for element in value.split(b","):
                words = element.split(None, 2)
                if len(words) >= 2 and words[1].lower() == VIA_PSEUDONYM:
                    count += 1
    return count


def client_ip(
    headers: Sequence[HeaderLine],
    peer_ip: str,
    *,
    peer_trusted: bool,
    is_trusted: Callable[[PeerAddress], bool],
) -> str:
    """The client IP of SPEC §5.4 (rate-limit keys, ``ip-allow`` by client, access logs).

    From an untrusted peer, or without ``X-Forwarded-For``, it is ``peer_ip`` unchanged.
    From a trusted peer the ``X-Forwarded-For`` entries (all lines, in order) are walked right
    to left, skipping trusted addresses; the first untrusted one is the client, and if all are
    trusted the leftmost is. Entries may carry a port or brackets (``[v6]:port``); they are
    parsed like the ``ClientIP`` peer (``routing.request.parse_peer``) and returned as IP text.

    An unparsable entry (``unknown``, a host name, junk) cuts the chain: it and everything left
    of it are ignored, as if the chain started right of it. Each entry was written by the hop to
    its right, so the entries left of one a trusted hop could not vouch for are the client's own
    claims; skipping over the garbage would let a client choose its IP.
    """
    if not peer_trusted:
        return peer_ip
    chosen = peer_ip
    for entry in reversed(_xff_entries(headers)):
        address = parse_peer(entry.decode("latin-1"))
        if address is None:
            break
        chosen = str(address)
        if not is_trusted(address):
            break
    return chosen


def _xff_entries(headers: Sequence[HeaderLine]) -> list[bytes]:
    """The non-empty, OWS-trimmed entries of every ``X-Forwarded-For`` line, in order."""
    entries: list[bytes] = []
    for name, value in headers:
        if name == _XFF:
            for item in value.split(b","):
                entry = item.strip(_OWS)
                if entry:
                    entries.append(entry)
    return entries


# --------------------------------------------------------------------------- HTTP/2 cookies


def join_cookies(headers: Sequence[HeaderLine]) -> Headers:
    """SPEC §5.4 step 7: several ``cookie`` lines become one, joined with ``"; "``.

    RFC 9113 §8.2.3 lets HTTP/2 split the cookie into one field line per crumb and asks for them
    to be joined with the two octets ``"; "`` before passing them to an HTTP/1.1 hop. The joined
    line takes the place of the first ``cookie`` line; one or no line leaves the copy as is.
    """
    out: Headers = []
    crumbs: list[bytes] = []
    first = 0
    for line in headers:
        if line[0] == b"cookie":
            if not crumbs:
                first = len(out)
                out.append(line)
            crumbs.append(line[1])
        else:
            out.append(line)
    if len(crumbs) > 1:
        out[first] = (b"cookie", b"; ".join(crumbs))
    return out
