"""Path rewriting middlewares: ``strip-prefix`` (SPEC §8.10).

Ring 0: pure; no trio, sockets, TLS, clocks or logging.

``strip-prefix`` runs on the request side, after routing (which used the original path). It
works on the raw (escaped) path bytes, never decoding them: the first configured prefix that
matches is removed, an empty result becomes ``/`` and a result without a leading ``/`` gets
one, the query is left alone, and the removed part becomes ``RequestState.forwarded_prefix``
(sent upstream as ``X-Forwarded-Prefix``). A prefix is either plain (a byte-string prefix:
``/api`` on ``/apiv2`` leaves ``/v2``, as in A3S and Traefik) or ends in ``/*`` (A3S v1.0.4):
that prefix plus exactly one non-empty segment, followed by ``/`` or the end of the path
(``/apps/*`` removes ``/apps/x`` from ``/apps/x/y``).

Must not: decode or normalise the path (percent-escapes and dot segments pass as received),
change the query, method or headers, or answer the request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Self

from a3s_gateway.middleware.contract import Middleware

if TYPE_CHECKING:
    from collections.abc import Iterable

    from a3s_gateway.config.schema_middlewares import StripPrefix
    from a3s_gateway.middleware.contract import RequestState
    from a3s_gateway.protocols.responses import GeneratedResponse

__all__ = ["StripPrefixMiddleware"]

_SLASH: Final = b"/"
_ONE_SEGMENT: Final = "/*"


class StripPrefixMiddleware(Middleware):
    """``strip-prefix``: remove the first matching prefix from the raw path (SPEC §8.10)."""

    __slots__ = ("_prefixes",)

    def __init__(self, name: str, *, prefixes: Iterable[str]) -> None:
        super().__init__(name)
        compiled: list[tuple[bytes, bool]] = []
        for prefix in prefixes:
            if prefix.endswith(_ONE_SEGMENT):
                # "/apps/*" keeps its "/": the segment is looked for after "/apps/".
                compiled.append((prefix[:-1].encode(), True))
            else:
                compiled.append((prefix.encode(), False))
        #: (bytes to match, whether one more segment is part of the prefix), in list order.
        self._prefixes: Final = tuple(compiled)

    @classmethod
    def from_config(cls, name: str, block: StripPrefix) -> Self:
        """The middleware of the validated ``strip-prefix`` definition ``name``."""
        return cls(name, prefixes=block.prefixes)

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        """Strip ``state.path`` and set ``state.forwarded_prefix`` when a prefix matches."""
        stripped = self.strip(state.path)
        if stripped is not None:
            state.path, state.forwarded_prefix = stripped
        return None

    def strip(self, path: bytes) -> tuple[bytes, bytes] | None:
        """``(new path, removed part)`` for the first matching prefix, or ``None``."""
        for base, one_segment in self._prefixes:
            if not path.startswith(base):
                continue
            end = len(base)
            if one_segment:
                slash = path.find(_SLASH, end)
                end = len(path) if slash < 0 else slash
                if end == len(base):
                    continue  # the segment after "/apps/" is empty
            rest = path[end:]
            if not rest.startswith(_SLASH):
                rest = _SLASH + rest
            return rest, path[:end]
        return None
