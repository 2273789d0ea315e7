"""The ``forward-auth`` middleware: ask an auth service about each request (SPEC §8.5).

Ring 0: no trio, sockets, TLS or clocks. The HTTP call goes through the ``HttpCaller`` seam
(``middleware/outbound.py``; ``upstream/caller.py`` in the gateway, a fake in unit tests),
which bounds it by ``forward_auth_timeout``, never follows redirects and raises only the
outbound exceptions, mapped here to statuses.

Per request (request side only):

1. The auth request: ``GET forward_auth_url``. Its fields are the client's request fields as
   earlier middlewares left them (``state.headers``), or only those named in
   ``forward_auth_request_headers`` when that list is non-empty, without hop-by-hop fields
   (``Connection`` and every field it names included, SPEC §5.4 step 1), ``Content-Length``,
   ``Transfer-Encoding``, ``Expect`` and ``Host`` (the caller sends the auth server's own);
   then the gateway's ``X-Forwarded-Method``, ``-Proto``, ``-Host``, ``-Uri`` and ``-For``.
   Client-sent copies of those five are dropped first, so a client cannot describe its request
   to the auth service as another one.
2. A 2xx reply lets the request continue: each field named in
   ``forward_auth_response_headers`` is removed from the request, then every line of it in the
   reply is added (a client cannot smuggle its own identity header past the auth service).
3. Any other status, 3xx included (login redirects), answers the client with that status, the
   reply's body and its ``Content-Type``, ``Location``, ``WWW-Authenticate``, ``Set-Cookie``,
   ``Cache-Control`` and ``Retry-After`` lines, nothing else.
4. Failures: a reply body over 64 KiB → 502 ``auth response too large``; timeout → 504
   ``auth service timeout``; connect or protocol error → 502 ``auth service unavailable``.

``X-Forwarded-For`` follows SPEC §5.4: the peer's IP, preceded by the client's incoming chain
when the peer is a trusted proxy (``RequestState.peer_trusted``); otherwise only the peer IP.

Must not: follow redirects, pass any other reply field to the client (the auth server's
framing, ``Server`` and the like stay out), keep per-request state on the instance, or log
credentials.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Self

from a3s_gateway.errors import StartError
from a3s_gateway.middleware.contract import Middleware
from a3s_gateway.middleware.outbound import OutboundFailed, OutboundTimeout, ReplyTooLarge
from a3s_gateway.protocols.events import ResponseHead
from a3s_gateway.protocols.headers import strip_hop_by_hop
from a3s_gateway.protocols.responses import GeneratedResponse, error_response

if TYPE_CHECKING:
    from collections.abc import Iterable

    from a3s_gateway.config.schema_middlewares import ForwardAuth
    from a3s_gateway.config.urls import HttpUrl
    from a3s_gateway.middleware.contract import RequestState
    from a3s_gateway.middleware.outbound import HttpCaller, HttpReply, MiddlewareDeps
    from a3s_gateway.protocols.headers import Headers

__all__ = [
    "AUTH_TIMEOUT",
    "AUTH_TOO_LARGE",
    "AUTH_UNAVAILABLE",
    "MAX_AUTH_BODY",
    "PASSED_REPLY_FIELDS",
    "ForwardAuthMiddleware",
]

#: The largest auth reply body passed to the client (SPEC §8.5).
MAX_AUTH_BODY: Final = 65536
#: The ``error`` texts of the failures (SPEC §8.5 "Failures").
AUTH_TOO_LARGE: Final = "auth response too large"
AUTH_TIMEOUT: Final = "auth service timeout"
AUTH_UNAVAILABLE: Final = "auth service unavailable"
#: The reply fields a denial passes to the client (SPEC §8.5 "Any other status").
PASSED_REPLY_FIELDS: Final = frozenset(
    {
        b"content-type",
        b"location",
        b"www-authenticate",
        b"set-cookie",
        b"cache-control",
        b"retry-after",
    }
)

# Never forwarded to the auth service (besides hop-by-hop fields): the framing of the client's
# body (the auth request has none), its expectation, its Host (the caller sends the auth
# server's), and the forwarding fields the gateway sets itself.
_XF_METHOD: Final = b"x-forwarded-method"
_XF_PROTO: Final = b"x-forwarded-proto"
_XF_HOST: Final = b"x-forwarded-host"
_XF_URI: Final = b"x-forwarded-uri"
_XFF: Final = b"x-forwarded-for"
_NOT_SENT: Final = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"host",
        _XF_METHOD,
        _XF_PROTO,
        _XF_HOST,
        _XF_URI,
        _XFF,
    }
)
_PROTO: Final = {False: b"http", True: b"https"}
_OWS: Final = b" \t"
#: Statuses whose response has no body and no ``Content-Length`` (RFC 9110 §8.6, §15.3.5).
_NO_BODY: Final = frozenset({204, 304})


class ForwardAuthMiddleware(Middleware):
    """``forward-auth`` (SPEC §8.5): see the module docstring."""

    __slots__ = ("_caller", "_copied", "_selected", "_timeout", "_url")

    def __init__(
        self,
        name: str,
        *,
        url: HttpUrl,
        caller: HttpCaller,
        timeout: float,
        request_headers: Iterable[str] = (),
        response_headers: Iterable[str] = (),
    ) -> None:
        super().__init__(name)
        self._url = url
        self._caller = caller
        self._timeout = timeout
        #: The request fields sent to the auth service; empty: all of them.
        self._selected = frozenset(_field(name) for name in request_headers)
        #: The reply fields copied into the request on success, in config order, no repeats.
        self._copied = tuple(dict.fromkeys(_field(name) for name in response_headers))

    @classmethod
    def from_config(cls, name: str, block: ForwardAuth, deps: MiddlewareDeps) -> Self:
        """The middleware of the validated ``forward-auth`` definition ``name``.

        Raises ``StartError`` when ``deps`` has no HTTP caller.
        """
        if deps.http is None:
            raise StartError(
                f'middleware "{name}" (forward-auth) needs an outbound HTTP client, '
                "and none was given"
            )
        return cls(
            name,
            url=block.forward_auth_url,
            caller=deps.http,
            timeout=block.forward_auth_timeout.seconds,
            request_headers=block.forward_auth_request_headers,
            response_headers=block.forward_auth_response_headers,
        )

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        """Ask the auth service; continue on 2xx, otherwise answer with its verdict."""
        try:
            reply = await self._caller.get(
                self._url, self.auth_headers(state), within=self._timeout, max_body=MAX_AUTH_BODY
            )
        except OutboundTimeout:
            return error_response(504, AUTH_TIMEOUT)
        except ReplyTooLarge:
            return error_response(502, AUTH_TOO_LARGE)
        except OutboundFailed:
            return error_response(502, AUTH_UNAVAILABLE)
        if reply.status < 200:  # never a final answer (the caller skips 1xx and refuses 101)
            return error_response(502, AUTH_UNAVAILABLE)
        if 200 <= reply.status < 300:
            self._copy_identity(state, reply)
            return None
        return denial(reply)

    def auth_headers(self, state: RequestState) -> Headers:
        """The fields of the auth request (``Host`` is added by the caller)."""
        selected = self._selected
        out: Headers = [
            line
            for line in strip_hop_by_hop(state.headers)
            if line[0] not in _NOT_SENT and (not selected or line[0] in selected)
        ]
        uri = state.received
        out.extend(
            (
                (_XF_METHOD, state.method),
                (_XF_PROTO, _PROTO[state.tls]),
                (_XF_HOST, state.authority),
                (_XF_URI, uri),
                (_XFF, forwarded_for(state)),
            )
        )
        return out

    def _copy_identity(self, state: RequestState, reply: HttpReply) -> None:
        """SPEC §8.5 2xx: the configured fields come from the reply only."""
        copied = self._copied
        if not copied:
            return
        names = frozenset(copied)
        headers = [line for line in state.headers if line[0] not in names]
        for name in copied:
            headers.extend(line for line in reply.headers if line[0] == name)
        state.headers = headers


def denial(reply: HttpReply) -> GeneratedResponse:
    """The client's answer for a non-2xx auth reply: its status, body and passed fields."""
    headers = [line for line in reply.headers if line[0] in PASSED_REPLY_FIELDS]
    body = reply.body
    if reply.status in _NO_BODY:
        body = b""
    else:
        headers.append((b"content-length", str(len(body)).encode("ascii")))
    return GeneratedResponse(ResponseHead(reply.status, headers), body, close=False)


def forwarded_for(state: RequestState) -> bytes:
    """``X-Forwarded-For`` for the auth request (SPEC §5.4; see the module docstring)."""
    peer = state.peer_ip.encode("ascii", "replace")
    if not state.peer_trusted:
        return peer
    chain = [
        entry
        for value in state.values(_XFF)
        for item in value.split(b",")
        if (entry := item.strip(_OWS))
    ]
    return b", ".join([*chain, peer])


def _field(name: str) -> bytes:
    return name.lower().encode("ascii")
