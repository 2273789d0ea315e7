"""``body-limit`` (SPEC §8.11): a request body larger than ``max_body_bytes`` never reaches the
backend whole.

Ring 0. The request side answers 413 at once when ``Content-Length`` is over the limit (before
any body byte is read and before ``100 Continue``); otherwise it records the limit on the
request state, and the exchange counts the body as it streams
(``server/limited_downstream.py``): the byte that crosses the limit aborts the upstream request
and the client gets the same 413, unless the response had already started (then the exchange
is cut short).

Must not: buffer the body or read the time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from a3s_gateway.middleware.contract import Middleware
from a3s_gateway.protocols.events import ResponseHead
from a3s_gateway.protocols.responses import GeneratedResponse

if TYPE_CHECKING:
    from a3s_gateway.config.schema_middlewares import BodyLimit
    from a3s_gateway.middleware.contract import RequestState

__all__ = ["BodyLimitMiddleware", "too_large"]


def too_large(limit: int) -> GeneratedResponse:
    """413 ``{"error":"request body too large","max_bytes":N}``; the connection then closes
    (the rest of the body is not read)."""
    body = b'{"error":"request body too large","max_bytes":%d}' % limit
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"server", b"a3s-gateway"),
    ]
    return GeneratedResponse(head=ResponseHead(413, headers, b""), body=body, close=True)


class BodyLimitMiddleware(Middleware):
    """Refuses request bodies over ``limit`` bytes (see the module docstring)."""

    __slots__ = ("limit",)

    def __init__(self, name: str, *, limit: int) -> None:
        super().__init__(name)
        if limit < 1:
            raise ValueError("max_body_bytes must be at least 1")
        self.limit = limit

    @classmethod
    def from_config(cls, name: str, block: BodyLimit) -> Self:
        return cls(name, limit=block.max_body_bytes)

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        for value in state.values(b"content-length"):
            # The adapter has already validated the framing: one decimal value.
            if value.isdigit() and int(value) > self.limit:
                return too_large(self.limit)
        current = state.body_limit
        state.body_limit = self.limit if current is None else min(current, self.limit)
        return None
