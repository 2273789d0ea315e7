"""Protocol code (Ring 0): the sans-IO adapters and the protocol rules the data plane shares.

``events.py`` is the protocol-neutral vocabulary; ``http1*.py`` are the HTTP/1.1 server and
client adapters over two engines (h11, the reference, and llhttp), their strict head and body
checks and writers; ``headers.py`` the proxy header rules; ``target.py`` request targets;
``responses.py`` the gateway's own error bodies.

Must not: import trio, sockets, TLS, clocks or logging, or any package but ``errors`` and
``version``: bytes in, events and bytes out, so that every adapter is property-testable
without an event loop.
"""
