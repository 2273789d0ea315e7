"""Request-target handling and the checks the gateway answers itself before routing.

Ring 0: pure functions over a ``RequestHead``; no trio, sockets, clocks or logging.

``split_target`` turns the request-target into the raw path and query the router and the
upstream use (the absolute form's authority was already taken by the adapter for routing,
SPEC §5.4). ``precheck`` implements steps 4 of SPEC §5.14 that need no config: ``TRACE`` and
``CONNECT`` (405), ``OPTIONS *`` and ``Max-Forwards: 0`` (200 with ``Allow``), an expectation
other than ``100-continue`` (417) and a forwarding loop (508). An HTTP/2 extended ``CONNECT``
(RFC 8441) is not a tunnel request: with ``:protocol`` ``websocket`` it goes on (a WebSocket
handshake, SPEC §5.11), with any other protocol it gets 501 (the gateway implements no other).
``redirect_location`` builds the ``Location`` of an entrypoint's ``redirect_to`` answer (SPEC
§3.7, §5.14 step 3) and ``is_acme_challenge`` recognises the ACME HTTP-01 paths that answer is
never given for (§12.2).

Must not: decode header values beyond the few it compares, or touch the body.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Final

from a3s_gateway.protocols.headers import VIA_LOOP_LIMIT, via_loop_count
from a3s_gateway.protocols.responses import ALLOW, error_response, options_response

if TYPE_CHECKING:
    from a3s_gateway.protocols.events import RequestHead
    from a3s_gateway.protocols.headers import Headers
    from a3s_gateway.protocols.responses import GeneratedResponse

__all__ = [
    "ACME_CHALLENGE_PREFIX",
    "decrement_max_forwards",
    "is_acme_challenge",
    "precheck",
    "redirect_location",
    "split_target",
]

_REFUSED_METHODS: Final = frozenset({b"TRACE", b"CONNECT"})
#: The one extended-CONNECT protocol the gateway serves (RFC 8441 §4, SPEC §5.11).
_WEBSOCKET: Final = b"websocket"
_UNSUPPORTED_PROTOCOL: Final = error_response(501, "unsupported protocol")
_OWS: Final = b" \t"
#: Where ACME HTTP-01 challenges are fetched (RFC 8555 §8.3).
ACME_CHALLENGE_PREFIX: Final = b"/.well-known/acme-challenge/"
#: An ACME token: base64url characters only (RFC 8555 §8.1), so no ``/``, ``.`` or escape.
_ACME_TOKEN: Final = re.compile(rb"[A-Za-z0-9_-]+")
#: A registered name or IPv4 address as a ``Location`` may carry it unescaped (RFC 3986 §3.2.2
#: unreserved characters; an internationalised name arrives in its ``xn--`` form).
_REG_NAME: Final = re.compile(rb"[A-Za-z0-9._~-]+")
_HTTPS_PORT: Final = 443


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """``(raw_path, query)`` of an origin-form or absolute-form target; ``*`` gives ``(b"*", b"")``.

    The path keeps its escapes; an absolute form's empty path is ``/`` (RFC 9112 §3.2.2). The
    query has no leading ``?``.
    """
    if target[:1] != b"/" and b"://" in target[:16]:
        rest = target.partition(b"://")[2]
        slash = rest.find(b"/")
        question = rest.find(b"?")
        if slash < 0 or (0 <= question < slash):
            cut = question if question >= 0 else len(rest)
            target = b"/" + rest[cut:]
        else:
            target = rest[slash:]
    path, _, query = target.partition(b"?")
    return path, query


def _max_forwards(headers: Headers) -> int | None:
    for name, value in headers:
        if name == b"max-forwards":
            text = value.strip(_OWS)
            return int(text) if text.isdigit() else None
    return None


def precheck(head: RequestHead) -> GeneratedResponse | None:
    """The response the gateway gives without routing, or None to go on (SPEC §5.4, §5.14)."""
    method = head.method
    if method in _REFUSED_METHODS:
        if not head.protocol:  # TRACE, or a CONNECT that asks for a tunnel
            return error_response(405, "method not allowed", extra=[(b"allow", ALLOW)])
        if head.protocol != _WEBSOCKET:  # an extended CONNECT (HTTP/2) for another protocol
            return _UNSUPPORTED_PROTOCOL
    if method == b"OPTIONS" and (head.target == b"*" or _max_forwards(head.headers) == 0):
        return options_response()
    for name, value in head.headers:
        if name == b"expect" and value.strip(_OWS).lower() != b"100-continue":
            return error_response(417)
    if via_loop_count(head.headers) >= VIA_LOOP_LIMIT:
        return error_response(508)
    return None


def is_acme_challenge(raw_path: bytes) -> bool:
    """Whether ``raw_path`` (escapes kept) is an ACME HTTP-01 challenge path: the prefix, then
    one token (SPEC §12.2; such requests are routed normally, never redirected)."""
    return raw_path.startswith(ACME_CHALLENGE_PREFIX) and (
        _ACME_TOKEN.fullmatch(raw_path, len(ACME_CHALLENGE_PREFIX)) is not None
    )


def _redirect_host(authority: bytes) -> bytes | None:
    """The host of a ``Host``/authority value without its port, IPv6 literals in brackets;
    None when there is no host a ``Location`` can carry."""
    if authority[:1] == b"[":
        end = authority.find(b"]")
        rest = authority[end + 1 :] if end > 0 else b"!"
        if rest and not (rest[:1] == b":" and (rest[1:].isdigit() or rest == b":")):
            return None
        inside = authority[1:end]
        try:
            ipaddress.IPv6Address(inside.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
        return None if b"%" in inside else authority[: end + 1]
    host, colon, port = authority.partition(b":")
    if colon and port and not port.isdigit():
        return None
    return host if _REG_NAME.fullmatch(host) is not None else None


def redirect_location(authority: bytes, port: int, target: bytes) -> bytes | None:
    """``https://<host>[:port]<target>`` for a request to ``authority`` (its ``Host``, port
    dropped) redirected to a TLS entrypoint on ``port`` (omitted when 443); ``target`` is the
    path and query, kept as they came. None when the authority has no usable host."""
    host = _redirect_host(authority.strip(_OWS))
    if host is None:
        return None
    if port != _HTTPS_PORT:
        host += b":%d" % port
    return b"https://" + host + target


def decrement_max_forwards(headers: Headers) -> Headers:
    """For a forwarded ``OPTIONS``: ``Max-Forwards`` minus one (RFC 9110 §7.6.2); an invalid
    value is left alone (SPEC §14.3: ignored)."""
    out: Headers = []
    for line in headers:
        if line[0] == b"max-forwards":
            text = line[1].strip(_OWS)
            if text.isdigit() and int(text) > 0:
                line = (b"max-forwards", str(int(text) - 1).encode())
        out.append(line)
    return out
