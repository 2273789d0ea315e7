"""``Trace``: the exchange's span and request id (SPEC §9.4, §9.5), and how they go on every
upstream request. ``prepare.py`` starts it (continuing the request's trace context).

Ring 1 by placement; pure. Must not: do IO.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from a3s_gateway.observability.tracing import inject, set_request_id

if TYPE_CHECKING:
    from a3s_gateway.observability.tracing import Span
    from a3s_gateway.protocols.headers import Headers

__all__ = ["Trace"]


class Trace:
    """The exchange's span and request id, and how they go on every upstream request."""

    __slots__ = ("forms", "name", "request_id", "span")

    def __init__(self, span: Span | None, forms: int, name: bytes, request_id: bytes) -> None:
        self.span = span
        self.forms = forms
        self.name = name
        self.request_id = request_id

    def apply(self, headers: Headers) -> Headers:
        """``headers`` with the trace headers replaced by the span's (SPEC §9.4 "Inject") and
        the request id set (§9.5)."""
        if self.span is not None:
            headers = inject(headers, self.span, self.forms)
        if self.name:
            headers = set_request_id(headers, self.name, self.request_id)
        return headers
