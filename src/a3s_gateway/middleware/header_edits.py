"""The ``headers`` middleware (SPEC §8.9): set or remove request and response fields.

Ring 0: pure; no trio, sockets, TLS, clocks or logging.

Each configured entry replaces *every* line of its name with one line carrying the value, at the
position of the first line it replaces (appended when there was none); the value ``""`` removes
the field (Traefik semantics). Entries are applied in lower-case name order, so the result is
deterministic whatever the order of the config map; of two entries whose names differ only in
case, the one sorting last wins.

Setting ``Host`` on the request side replaces the client's ``host`` line in
``RequestState.headers``; the exchange sends that value upstream instead of the one chosen by
``pass_host_header`` (SPEC §8.9). ``host_override`` states it for the chain builder.

Must not: validate names or values (the config loader rejected CR, LF, NUL and connection or
framing fields, SPEC §3.15), touch hop-by-hop or forwarding fields itself (SPEC §5.4 runs after
the request side), or keep per-request state on the instance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Self

from a3s_gateway.middleware.contract import Middleware

if TYPE_CHECKING:
    from collections.abc import Mapping

    from a3s_gateway.config.schema_middlewares import Headers as HeadersBlock
    from a3s_gateway.middleware.contract import RequestState
    from a3s_gateway.protocols.headers import Headers
    from a3s_gateway.protocols.responses import GeneratedResponse

__all__ = ["FieldChanges", "HeadersMiddleware"]

_HOST: Final = b"host"


class FieldChanges:
    """Compiled entries of one ``request_headers`` or ``response_headers`` map.

    ``changes`` maps each lower-case name to its value, ``None`` meaning "remove"; ``order`` is
    the names in lower-case order (the order new lines are appended in).
    """

    __slots__ = ("changes", "order")

    def __init__(self, entries: Mapping[str, str]) -> None:
        changes: dict[bytes, bytes | None] = {}
        for name, value in sorted(entries.items(), key=lambda item: (item[0].lower(), item[0])):
            changes[name.lower().encode("ascii")] = value.encode() if value else None
        self.changes: Final = changes
        self.order: Final = tuple(sorted(changes))

    def apply(self, headers: Headers) -> None:
        """Replace or remove the configured fields of ``headers``, in place."""
        changes = self.changes
        if not changes:
            return
        out: Headers = []
        placed: set[bytes] = set()
        for line in headers:
            name = line[0]
            if name not in changes:
                out.append(line)
            elif name not in placed:
                placed.add(name)
                value = changes[name]
                if value is not None:
                    out.append((name, value))
        for name in self.order:
            value = changes[name]
            if value is not None and name not in placed:
                out.append((name, value))
        headers[:] = out


class HeadersMiddleware(Middleware):
    """``headers``: ``request_headers`` on the request, ``response_headers`` on the response.

    ``host_override`` is the configured ``Host`` value, ``None`` when the definition sets none
    (or removes ``Host``, which leaves ``pass_host_header`` in charge).
    """

    __slots__ = ("_request", "_response", "host_override")

    def __init__(
        self,
        name: str,
        *,
        request_headers: Mapping[str, str] | None = None,
        response_headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name)
        self._request = FieldChanges(request_headers or {})
        self._response = FieldChanges(response_headers or {})
        self.host_override: Final = self._request.changes.get(_HOST)

    @classmethod
    def from_config(cls, name: str, block: HeadersBlock) -> Self:
        """The middleware of the validated ``headers`` definition ``name``."""
        return cls(
            name,
            request_headers=block.request_headers,
            response_headers=block.response_headers,
        )

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        """Apply ``request_headers`` to the client's lines; never answers."""
        self._request.apply(state.headers)
        return None

    def response(self, state: RequestState, status: int, headers: Headers) -> None:
        """Apply ``response_headers`` to the response of any status."""
        del state, status
        self._response.apply(headers)
