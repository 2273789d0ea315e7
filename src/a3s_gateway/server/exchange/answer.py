"""Gateway-generated answers: sending them through the ``Downstream`` seam, and passing them
through the middlewares' response sides.

Ring 1 (it sends). Used by every stage that answers instead of proxying (prepare's 4xx, a
middleware's short-circuit, dispatch's 502/503/504) and by the HTTP/1.1 driver for requests it
refuses itself. Must not: decide what to answer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from a3s_gateway.middleware import through
from a3s_gateway.protocols.events import BodyChunk, EndOfBody, ResponseHead
from a3s_gateway.protocols.grpc import grpc_answer, is_grpc
from a3s_gateway.protocols.responses import error_response
from a3s_gateway.server.server_context import DateCache

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.middleware import Middleware, RequestState
    from a3s_gateway.protocols.events import RequestHead
    from a3s_gateway.protocols.responses import GeneratedResponse
    from a3s_gateway.server.downstream import Downstream

__all__ = ["INTERNAL_ERROR", "answer", "send_generated", "through_safely"]

log: Final = logging.getLogger("a3s_gateway.exchange")

_END: Final = EndOfBody()
#: ``Date`` values for generated responses (formatted at most once a second; shared by the
#: gateways of a process, which is harmless: it only caches the time of day).
_DATES: Final = DateCache()
#: The answer when a middleware fails (SPEC §8.1 "Errors").
INTERNAL_ERROR: Final = error_response(500, "internal error")


async def send_generated(down: Downstream, response: GeneratedResponse, *, head_only: bool) -> None:
    """Send a gateway-generated response, with a ``Date`` field when it has none (RFC 9110
    §6.6.1: the gateway is the origin of this response)."""
    if response.close:
        down.close_after_response()
    head = response.head
    if not any(name == b"date" for name, _ in head.headers):
        head = ResponseHead(head.status, [*head.headers, (b"date", _DATES.value())], head.reason)
    if response.body and not head_only:
        await down.send_batch((head, BodyChunk(response.body), _END))
    else:
        await down.send_batch((head, _END))


async def answer(down: Downstream, head: RequestHead, response: GeneratedResponse) -> None:
    """``send_generated`` for the request ``head`` (no body for ``HEAD``); a gRPC call gets
    the answer as a trailers-only gRPC error (SPEC §5.10)."""
    if head.http_version == b"2" and is_grpc(head):
        response = grpc_answer(response)
    await send_generated(down, response, head_only=head.method == b"HEAD")


def through_safely(
    entered: Sequence[Middleware], state: RequestState, response: GeneratedResponse
) -> GeneratedResponse:
    """``phases.through``, but a response side that raises gives a 500 (SPEC §8.1 "Errors")."""
    try:
        return through(entered, state, response)
    except Exception:
        log.exception("a middleware failed on the response side")
        return INTERNAL_ERROR
