"""One replica of the demo's echo service, for the ``local`` scale executor (SPEC §11.9):
``python -m a3s_gateway.demo.replica --port P [--name NAME]`` serves the echo endpoints
(``demo/echo.py``: the echo document, ``…/status/<code>``, ``…/bytes/<n>``, ``…/delay/<ms>``)
on 127.0.0.1:P until SIGTERM or SIGINT, and prints ``listening on 127.0.0.1:<port>`` once it
accepts connections. ``examples/scaling.hcl`` runs it as ``command = [..., "{port}"]``.

Ring 1. Nurseries: the echo listener's, in ``trio.run``. Must not: bind anything but loopback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING

import trio

from a3s_gateway.demo.echo import handle_echo
from a3s_gateway.demo.exchange import HOST, serve_backend
from a3s_gateway.errors import StartError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]


async def _serve(name: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(_listen, name, port)
            print(f"listening on {HOST}:{bound}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


async def _listen(
    name: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    await serve_backend(name, handle_echo, port=port, task_status=task_status)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until a signal; 0, or 1 when the port cannot be bound."""
    parser = argparse.ArgumentParser(
        prog="python -m a3s_gateway.demo.replica",
        description="One replica of the demo echo service (for the local scale executor).",
    )
    parser.add_argument("--port", type=int, required=True, help="the port to listen on")
    parser.add_argument("--name", default="replica", help="the service name it reports")
    args = parser.parse_args(argv)
    try:
        trio.run(_serve, args.name, args.port)
    except StartError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
