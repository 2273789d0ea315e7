"""The demo's backends (SPEC §2.1 ``demo``): two HTTP echo services and a streaming service.

Ring 1: starts three ``exchange.serve_backend`` listeners on 127.0.0.1 with ephemeral ports.
Nurseries: none of its own; ``start_backends`` starts every listener in the nursery it is given,
which owns them until it is cancelled. Must not: bind anything but loopback, or use the
gateway's own server code (the backends are an independent peer on h11).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from a3s_gateway.demo.echo import handle_echo
from a3s_gateway.demo.exchange import serve_backend
from a3s_gateway.demo.streaming_backend import handle_stream

if TYPE_CHECKING:
    import trio


@dataclass(frozen=True, slots=True)
class BackendPorts:
    """Where the demo backends listen (all on 127.0.0.1)."""

    echo_a: int
    echo_b: int
    stream: int


async def start_backends(nursery: trio.Nursery) -> BackendPorts:
    """Start ``echo-a``, ``echo-b`` and ``stream`` in ``nursery`` (which owns them until it is
    cancelled) and return their ports once all three listen."""
    echo_a: int = await nursery.start(serve_backend, "echo-a", handle_echo)
    echo_b: int = await nursery.start(serve_backend, "echo-b", handle_echo)
    stream: int = await nursery.start(serve_backend, "stream", handle_stream)
    return BackendPorts(echo_a=echo_a, echo_b=echo_b, stream=stream)
