"""Request-target handling and the checks the gateway answers itself before routing.

Ring 0: pure functions over a ``RequestHead``; no trio, sockets, clocks or logging.

``split_target`` turns the request-target into the raw path and query the router and the
upstream use (the absolute form's authority was already taken by the adapter for routing,
SPEC §5.4). ``precheck`` implements steps 4 of SPEC §5.14 that need no config: ``TRACE`` and
``CONNECT`` (405), ``OPTIONS *`` and ``Max-Forwards: 0`` (200 with ``Allow``), an expectation
other than ``100-continue`` (417) and a forwarding loop (508).

Must not: decode header values beyond the few it compares, or touch the body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from a3s_gateway.protocols.headers import VIA_LOOP_LIMIT, via_loop_count
from a3s_gateway.protocols.responses import ALLOW, error_response, options_response

if TYPE_CHECKING:
    from a3s_gateway.protocols.events import RequestHead
    from a3s_gateway.protocols.headers import Headers
    from a3s_gateway.protocols.responses import GeneratedResponse

__all__ = ["decrement_max_forwards", "precheck", "split_target"]

_REFUSED_METHODS: Final = frozenset({b"TRACE", b"CONNECT"})
_OWS: Final = b" \t"


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
        return error_response(405, "method not allowed", extra=[(b"allow", ALLOW)])
    if method == b"OPTIONS" and (head.target == b"*" or _max_forwards(head.headers) == 0):
        return options_response()
    for name, value in head.headers:
        if name == b"expect" and value.strip(_OWS).lower() != b"100-continue":
            return error_response(417)
    if via_loop_count(head.headers) >= VIA_LOOP_LIMIT:
        return error_response(508)
    return None


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
