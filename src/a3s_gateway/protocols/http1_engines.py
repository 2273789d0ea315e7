"""Choosing the HTTP/1.1 parser engine: llhttp (the default) or h11 (the reference).

Ring 0: names and factories only; no trio, sockets, TLS, clocks or logging. Must not: parse.

The configuration names one engine (``http1_parser = "llhttp" | "h11"``); the composition root
turns it into a ``RequestHeadParser`` for every ``Http1Server`` (``request_head_parser``) and an
``UpstreamAdapterFactory`` for the upstream pools (``upstream_adapter_factory``). Both engines
of a direction keep one contract, checked by ``tests/property/test_http1_differential.py``;
``UpstreamAdapter`` is that contract for the client side, which ``Http1Client`` and
``LlhttpClient`` both satisfy, so Ring 1 code types against it rather than either class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeAlias

from a3s_gateway.protocols.http1_client import Http1Client
from a3s_gateway.protocols.http1_heads import H11Heads, LlhttpHeads, RequestHeadParser
from a3s_gateway.protocols.http1_llhttp import LlhttpClient

if TYPE_CHECKING:
    from a3s_gateway.protocols.events import BodyChunk, EndOfBody, Event, RequestHead

__all__ = [
    "DEFAULT_PARSER",
    "Http1Parser",
    "UpstreamAdapter",
    "UpstreamAdapterFactory",
    "request_head_parser",
    "upstream_adapter_factory",
]

#: The configuration values of ``http1_parser``.
Http1Parser: TypeAlias = Literal["llhttp", "h11"]
DEFAULT_PARSER: Final[Http1Parser] = "llhttp"


class UpstreamAdapter(Protocol):
    """The client side of one upstream HTTP/1.1 connection (see ``Http1Client``)."""

    def send(self, event: RequestHead | BodyChunk | EndOfBody) -> bytes: ...

    def receive(self, data: bytes) -> list[Event]: ...

    def send_failed(self) -> None: ...

    @property
    def received_any(self) -> bool: ...

    @property
    def reusable(self) -> bool: ...

    def start_next_cycle(self) -> None: ...

    @property
    def switched(self) -> bool: ...

    def take_leftover(self) -> bytes: ...


class UpstreamAdapterFactory(Protocol):
    """Makes a fresh ``UpstreamAdapter`` (``Http1Client``'s constructor signature)."""

    def __call__(self, *, max_head_bytes: int = ..., max_headers: int = ...) -> UpstreamAdapter: ...


_HEADS: Final[dict[Http1Parser, RequestHeadParser]] = {"llhttp": LlhttpHeads(), "h11": H11Heads()}
_CLIENTS: Final[dict[Http1Parser, UpstreamAdapterFactory]] = {
    "llhttp": LlhttpClient,
    "h11": Http1Client,
}


def request_head_parser(name: Http1Parser = DEFAULT_PARSER) -> RequestHeadParser:
    """The request-head engine named ``name`` (stateless: one serves every connection)."""
    return _HEADS[name]


def upstream_adapter_factory(name: Http1Parser = DEFAULT_PARSER) -> UpstreamAdapterFactory:
    """The class whose instances speak to upstreams with the engine named ``name``."""
    return _CLIENTS[name]
