"""The ``cors`` middleware (SPEC §8.8): answers preflights and labels responses for browsers.

Ring 0: pure; no trio, sockets, TLS, clocks or logging.

Request side: a *preflight* (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
is answered here, 204 with the allowed methods and headers or 403 ``cors preflight rejected``;
every other request, other ``OPTIONS`` requests included, goes on unchanged (the browser, not
the gateway, enforces CORS on actual requests).

Response side, for any status (proxied answers, gateway errors, short-circuits of middlewares
listed later): when the request carried an ``Origin``, the gateway owns
``Access-Control-Allow-Origin``, ``-Allow-Credentials`` and ``-Expose-Headers``: copies sent by
the upstream are removed and, for an allowed origin, the configured ones added. ``Vary: Origin``
is appended unless the policy is a plain ``*`` without credentials (then the answer never
depends on the origin). The response side is idempotent up to line order: running it twice
leaves the same lines.

Everything that does not depend on the request (the origin sets, the joined method, header and
expose lists, ``Max-Age``) is computed at construction (DESIGN.md §3.5). Origins are compared as
bytes, ASCII case-insensitively; default ports are not normalised (browsers never send them).

Must not: raise on any ``Origin`` or ``Access-Control-Request-*`` value, echo a requested
method or header name that is not an RFC 9110 token, keep per-request state on the instance,
or build a response once and reuse it (response sides change header lists in place).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, Self

from a3s_gateway.middleware.contract import Middleware
from a3s_gateway.protocols.events import ResponseHead
from a3s_gateway.protocols.responses import GeneratedResponse, error_response

if TYPE_CHECKING:
    from collections.abc import Iterable

    from a3s_gateway.config.schema_middlewares import Cors
    from a3s_gateway.middleware.contract import RequestState
    from a3s_gateway.protocols.headers import HeaderLine, Headers

__all__ = ["PREFLIGHT_REJECTED", "PREFLIGHT_VARY", "CorsMiddleware"]

#: The 403 ``error`` text of a rejected preflight (SPEC §8.8).
PREFLIGHT_REJECTED: Final = "cors preflight rejected"
#: The ``Vary`` value of both preflight answers (SPEC §8.8).
PREFLIGHT_VARY: Final = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"

_OPTIONS: Final = b"OPTIONS"
_ORIGIN: Final = b"origin"
_REQUEST_METHOD: Final = b"access-control-request-method"
_REQUEST_HEADERS: Final = b"access-control-request-headers"
_ALLOW_ORIGIN: Final = b"access-control-allow-origin"
_ALLOW_CREDENTIALS: Final = b"access-control-allow-credentials"
_EXPOSE_HEADERS: Final = b"access-control-expose-headers"
_ALLOW_METHODS: Final = b"access-control-allow-methods"
_ALLOW_HEADERS: Final = b"access-control-allow-headers"
_MAX_AGE: Final = b"access-control-max-age"
_VARY: Final = b"vary"
#: The fields the response side owns when the request has an ``Origin``.
_OWNED: Final = frozenset({_ALLOW_ORIGIN, _ALLOW_CREDENTIALS, _EXPOSE_HEADERS})
_CREDENTIALS_LINE: Final[HeaderLine] = (_ALLOW_CREDENTIALS, b"true")
_VARY_ORIGIN_LINE: Final[HeaderLine] = (_VARY, b"Origin")
_SERVER_LINE: Final[HeaderLine] = (b"server", b"a3s-gateway")
_ANY: Final = b"*"
_ANY_TEXT: Final = "*"
_SCHEME_END: Final = "://"
_WILDCARD_LABEL: Final = "*."
_OWS: Final = b" \t"
#: ``Vary`` members that already make a response vary on ``Origin``.
_VARY_COVERED: Final = frozenset({_ORIGIN, _ANY})
#: RFC 9110 §5.6.2 ``tchar``: what a method or field name may consist of.
_TCHARS: Final = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
#: The characters of the one host label a ``scheme://*.domain`` pattern stands for.
_LABEL_CHARS: Final = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyz-_")
#: A serialised origin (RFC 6454 §6.2) or ``null``: the only values echoed for ``*`` with
#: credentials, so an arbitrary ``Origin`` line is never reflected.
_SERIALISED_ORIGIN: Final = re.compile(
    rb"null|[a-z][a-z0-9+.-]*://(?:[a-z0-9._~!$&'()*+;=%-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?",
    re.IGNORECASE,
)


class CorsMiddleware(Middleware):
    """``cors``: preflight answers and ``Access-Control-*`` fields on responses (SPEC §8.8)."""

    __slots__ = (
        "_actual_lines",
        "_allow_headers",
        "_allow_methods",
        "_any_header",
        "_any_method",
        "_any_origin",
        "_credentials",
        "_exact",
        "_headers",
        "_max_age",
        "_methods",
        "_patterns",
        "_plain_any",
    )

    def __init__(
        self,
        name: str,
        *,
        allowed_origins: Iterable[str],
        allowed_methods: Iterable[str],
        allowed_headers: Iterable[str],
        expose_headers: Iterable[str] = (),
        allow_credentials: bool = False,
        max_age: int = 86400,
    ) -> None:
        super().__init__(name)
        origins = tuple(allowed_origins)
        methods = tuple(allowed_methods)
        headers = tuple(allowed_headers)
        exposed = tuple(expose_headers)
        self._credentials = allow_credentials
        self._any_origin = _ANY_TEXT in origins
        # A plain "*" answers "*" whatever the origin, so nothing varies with it (SPEC §8.8).
        self._plain_any = self._any_origin and not allow_credentials
        exact: set[bytes] = set()
        patterns: list[tuple[bytes, bytes]] = []
        for origin in origins:
            if origin == _ANY_TEXT:
                continue
            scheme, found, rest = origin.lower().partition(_SCHEME_END)
            if found and rest.startswith(_WILDCARD_LABEL):
                # "https://*.example.com:8443" → head "https://", tail ".example.com:8443".
                patterns.append(((scheme + found).encode(), rest[1:].encode()))
            else:
                exact.add(origin.lower().encode())
        self._exact = frozenset(exact)
        self._patterns = tuple(patterns)
        self._any_method = _ANY_TEXT in methods
        self._methods = frozenset(method.encode() for method in methods)
        self._allow_methods = ", ".join(methods).encode()
        self._any_header = _ANY_TEXT in headers
        self._headers = frozenset(header.lower().encode() for header in headers)
        self._allow_headers = ", ".join(headers).encode() if headers else None
        self._max_age = str(max_age).encode()
        actual: list[HeaderLine] = []
        if allow_credentials:
            actual.append(_CREDENTIALS_LINE)
        if exposed:
            actual.append((_EXPOSE_HEADERS, ", ".join(exposed).encode()))
        self._actual_lines = tuple(actual)

    @classmethod
    def from_config(cls, name: str, block: Cors) -> Self:
        """The middleware of the validated ``cors`` definition ``name``."""
        return cls(
            name,
            allowed_origins=block.allowed_origins,
            allowed_methods=block.allowed_methods,
            allowed_headers=block.allowed_headers,
            expose_headers=block.expose_headers,
            allow_credentials=block.allow_credentials,
            max_age=block.max_age,
        )

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        """Answer a preflight (204 or 403); let every other request through."""
        if state.method != _OPTIONS:
            return None
        origins = state.values(_ORIGIN)
        if not origins:
            return None
        methods = state.values(_REQUEST_METHOD)
        if not methods:
            return None
        return self.preflight(origins, methods, state.values(_REQUEST_HEADERS))

    def response(self, state: RequestState, status: int, headers: Headers) -> None:
        """Set the CORS fields of any response to a request with an ``Origin``; add ``Vary``."""
        del status
        origins = state.values(_ORIGIN)
        if origins:
            _remove(headers, _OWNED)
            allowed = self.allowed_origin(origins)
            if allowed is not None:
                headers.append((_ALLOW_ORIGIN, allowed))
                headers.extend(self._actual_lines)
        if not self._plain_any:
            _vary_on_origin(headers)

    def allowed_origin(self, origins: list[bytes]) -> bytes | None:
        """The ``Access-Control-Allow-Origin`` value for these ``Origin`` lines, or ``None``.

        ``*`` for a plain ``*`` policy; otherwise the origin as received when it is listed,
        matches a ``*.`` pattern, or (``*`` with credentials) is a well-formed origin. More than
        one ``Origin`` line is never an allowed origin.
        """
        if self._plain_any:
            return _ANY
        if len(origins) != 1:
            return None
        origin = origins[0]
        lowered = origin.lower()
        if lowered in self._exact:
            return origin
        for head, tail in self._patterns:
            if _matches_one_label(lowered, head, tail):
                return origin
        if self._any_origin and _SERIALISED_ORIGIN.fullmatch(origin) is not None:
            return origin
        return None

    def preflight(
        self, origins: list[bytes], methods: list[bytes], requested: list[bytes]
    ) -> GeneratedResponse:
        """The answer to a preflight with these ``Origin``, ``Access-Control-Request-Method``
        and ``Access-Control-Request-Headers`` lines: 204 when all are allowed, else 403."""
        allowed_origin = self.allowed_origin(origins)
        if allowed_origin is None or len(methods) != 1:
            return _rejected()
        method = methods[0]
        if self._any_method:
            if not _is_token(method):
                return _rejected()
            allow_methods = method
        elif method in self._methods:
            allow_methods = self._allow_methods
        else:
            return _rejected()
        names = _field_names(requested)
        if names is None:
            return _rejected()
        if self._any_header:
            allow_headers = b", ".join(names) if names else None
        elif all(name in self._headers for name in names):
            allow_headers = self._allow_headers
        else:
            return _rejected()
        lines: Headers = [(_ALLOW_ORIGIN, allowed_origin), (_ALLOW_METHODS, allow_methods)]
        if allow_headers is not None:
            lines.append((_ALLOW_HEADERS, allow_headers))
        lines.append((_MAX_AGE, self._max_age))
        if self._credentials:
            lines.append(_CREDENTIALS_LINE)
        lines += [(_VARY, PREFLIGHT_VARY), _SERVER_LINE]
        return GeneratedResponse(ResponseHead(status=204, headers=lines), b"", close=False)


def _rejected() -> GeneratedResponse:
    """403 ``cors preflight rejected``; like the 204, it varies on the preflight fields."""
    return error_response(403, PREFLIGHT_REJECTED, extra=[(_VARY, PREFLIGHT_VARY)])


def _matches_one_label(origin: bytes, head: bytes, tail: bytes) -> bool:
    """Whether lower-case ``origin`` is ``head`` + one non-empty host label + ``tail``."""
    if len(origin) <= len(head) + len(tail):
        return False
    if not (origin.startswith(head) and origin.endswith(tail)):
        return False
    label = origin[len(head) : len(origin) - len(tail)]
    return all(byte in _LABEL_CHARS for byte in label)


def _is_token(value: bytes) -> bool:
    return bool(value) and all(byte in _TCHARS for byte in value)


def _field_names(lines: list[bytes]) -> list[bytes] | None:
    """The lower-case names listed in ``Access-Control-Request-Headers`` lines, in order.

    Empty list elements are skipped (RFC 9110 §5.6.1); ``None`` when an element is not a token.
    """
    names: list[bytes] = []
    for line in lines:
        for element in line.split(b","):
            name = element.strip(_OWS)
            if not name:
                continue
            if not _is_token(name):
                return None
            names.append(name.lower())
    return names


def _remove(headers: Headers, names: frozenset[bytes]) -> None:
    """Drop every line called one of ``names``, in place; no copy when there is none."""
    if any(line[0] in names for line in headers):
        headers[:] = [line for line in headers if line[0] not in names]


def _vary_on_origin(headers: Headers) -> None:
    """Append ``Vary: Origin`` unless a ``Vary`` line already lists ``Origin`` or ``*``."""
    for name, value in headers:
        if name != _VARY:
            continue
        for element in value.split(b","):
            token = element.strip(_OWS).lower()
            if token in _VARY_COVERED:
                return
    headers.append(_VARY_ORIGIN_LINE)
