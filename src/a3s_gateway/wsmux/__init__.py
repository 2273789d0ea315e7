"""WebSocket multiplexing (SPEC §5.13): many named channels over one client WebSocket.

The package is Ring 1 (``session.py`` owns the client stream and the session nursery,
``upstream.py`` the upstream WebSockets), except ``protocol.py``, the JSON control protocol,
which is Ring 0. Modules: ``protocol`` (control frames, parsed and encoded), ``hub`` (per-worker
broadcast hubs), ``outbox`` (the bounded queue of one client's writer), ``upstream`` (the
channel opener seam and the gateway's trio-websocket opener), ``subscriptions`` (what the control
messages do to one client's channels) and ``session`` (``serve_mux``: the client's WebSocket).

May import: ``upstream`` (the pool, its errors, the ``Handover`` seam), ``config`` (the
``websocket_mux`` block), ``services`` and ``runtime`` (backends and service runtimes, for
types), besides trio, wsproto, trio-websocket and msgspec. The server's exchange imports this
package; this package imports nothing of the server.

Must not: import anything in this ``__init__``: loading ``protocol`` loads this package first,
and Ring 0 must stay free of trio.
"""
