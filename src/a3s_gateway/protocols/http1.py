"""HTTP/1.1 sans-IO adapters over h11: ``Http1Server`` (downstream) and ``Http1Client`` (upstream).

SKELETON: the public signatures below are the contract that ``server/connection.py``,
``server/exchange.py`` and ``upstream/connection.py`` are written against; the bodies are being
written (issue #4).
"""

from __future__ import annotations

from dataclasses import dataclass

from a3s_gateway.protocols.events import (
    BodyChunk,
    EndOfBody,
    Event,
    Informational,
    RequestHead,
    ResponseHead,
)


@dataclass(frozen=True, slots=True)
class Http1Limits:
    """Downstream head limits (SPEC §3.7 ``limits``)."""

    max_request_line_bytes: int = 8192
    max_header_bytes: int = 32768
    max_headers: int = 100


class Http1Server:
    """The server side of one downstream HTTP/1.x connection."""

    def __init__(self, limits: Http1Limits = Http1Limits()) -> None:
        raise NotImplementedError

    def receive(self, data: bytes) -> list[Event]:
        raise NotImplementedError

    @property
    def head_started(self) -> bool:
        raise NotImplementedError

    @property
    def keep_alive(self) -> bool:
        raise NotImplementedError

    def close_after_response(self) -> None:
        raise NotImplementedError

    def send(self, event: Informational | ResponseHead | BodyChunk | EndOfBody) -> bytes:
        raise NotImplementedError

    def send_failed(self) -> None:
        raise NotImplementedError

    def start_next_cycle(self) -> list[Event]:
        raise NotImplementedError


class Http1Client:
    """The client side of one upstream HTTP/1.1 connection."""

    def __init__(self, *, max_head_bytes: int = 65536, max_headers: int = 200) -> None:
        raise NotImplementedError

    def send(self, event: RequestHead | BodyChunk | EndOfBody) -> bytes:
        raise NotImplementedError

    def receive(self, data: bytes) -> list[Event]:
        raise NotImplementedError

    def send_failed(self) -> None:
        raise NotImplementedError

    @property
    def reusable(self) -> bool:
        raise NotImplementedError

    def start_next_cycle(self) -> None:
        raise NotImplementedError
