"""The local quick start, ``a3s-gateway demo`` (SPEC §2.1): demo backends on h11 and a gateway
on the packaged ``demo.hcl``, in one process, with the gRPC backend as its child process when
grpcio is installed (the ``demo`` extra).

- ``demo.exchange``: the h11 server side shared by the backends (Ring 1);
- ``demo.echo``, ``demo.streaming_backend``: the HTTP echo service and the SSE/WebSocket
  service (Ring 1);
- ``demo.grpc_backend``, ``demo.grpc_client``: the gRPC service ``demo.Echo`` and its client on
  grpcio, separate programs (grpcio is imported by them alone, inside their functions);
- ``demo.tcp_echo``: the TCP echo and the TLS echo (its own ``echo.localhost`` certificate)
  behind entrypoint ``tcp`` (Ring 1);
- ``demo.backends``: starts ``echo-a``, ``echo-b``, ``stream``, ``tcp-echo`` and ``tls-echo``
  on free loopback ports, and ``demo.grpc_backend`` as a child process (or holds a closed port
  in its place);
- ``demo.certs``: the throwaway CA, the ``localhost`` certificate of the HTTPS entrypoint and
  the TLS echo's ``echo.localhost`` one (Ring 1);
- ``demo.run``: ``run_demo`` / ``Demo``, which load ``demo.hcl`` with those ports and run
  ``Gateway`` (Ring 2, like ``app.py``; no signal handlers, no logging setup).

Nothing here is used by the gateway itself; nothing outside ``cli.py`` imports it.
"""

from __future__ import annotations

from a3s_gateway.demo.backends import BackendPorts, start_backends
from a3s_gateway.demo.run import Demo, RunningDemo, run_demo

__all__ = ["BackendPorts", "Demo", "RunningDemo", "run_demo", "start_backends"]
