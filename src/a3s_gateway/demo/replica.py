"""One replica of the demo's echo service, for the ``local`` scale executor (SPEC §11.9) and
the discovery provider (SPEC §10.5): ``python -m a3s_gateway.demo.replica --port P [--name
NAME] [--route RULE ... --version V]`` serves the echo endpoints (``demo/echo.py``: the echo
document, ``…/status/<code>``, ``…/bytes/<n>``, ``…/delay/<ms>``) on 127.0.0.1:P until SIGTERM
or SIGINT, and prints ``listening on 127.0.0.1:<port>`` once it accepts connections.
``examples/scaling.hcl`` runs it as ``command = [..., "{port}"]``. With ``--route`` it also
describes itself at ``/.well-known/a3s-service.json`` (service ``NAME``, version ``V``, one
route per ``--route``, health at ``/status/200``), as ``examples/discovery.hcl`` expects.

Ring 1. Nurseries: the echo listener's, in ``trio.run``. Must not: bind anything but loopback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.demo.echo import handle_echo
from a3s_gateway.demo.exchange import HOST, Exchange, Handler, Request, serve_backend
from a3s_gateway.errors import StartError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["WELL_KNOWN", "describing", "main"]


#: Where the discovery provider reads a service's description.
WELL_KNOWN: Final = "/.well-known/a3s-service.json"


def describing(name: str, version: str, routes: Sequence[str]) -> Handler:
    """The echo handler, plus the service's description at ``WELL_KNOWN``."""
    document: dict[str, object] = {
        "name": name,
        "version": version,
        "routes": [{"rule": rule} for rule in routes],
        "health_path": "/status/200",
    }

    async def handle(exchange: Exchange, request: Request) -> None:
        if request.path == WELL_KNOWN:
            await exchange.respond_json(200, document)
        else:
            await handle_echo(exchange, request)

    return handle


async def _serve(name: str, port: int, handler: Handler) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(_listen, name, port, handler)
            print(f"listening on {HOST}:{bound}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


async def _listen(
    name: str,
    port: int,
    handler: Handler,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve_backend(name, handler, port=port, task_status=task_status)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until a signal; 0, or 1 when the port cannot be bound."""
    parser = argparse.ArgumentParser(
        prog="python -m a3s_gateway.demo.replica",
        description="One replica of the demo echo service (for the local scale executor).",
    )
    parser.add_argument("--port", type=int, required=True, help="the port to listen on")
    parser.add_argument("--name", default="replica", help="the service name it reports")
    parser.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="RULE",
        help="describe itself for the discovery provider with this route (repeatable)",
    )
    parser.add_argument("--version", default="1.0.0", help="the version it describes")
    args = parser.parse_args(argv)
    handler = describing(args.name, args.version, args.route) if args.route else handle_echo
    try:
        trio.run(_serve, args.name, args.port, handler)
    except StartError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
