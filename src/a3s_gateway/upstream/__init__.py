"""The upstream side of the data plane: pool keys, connection pooling and dialling (SPEC §5.7).

``peer``, ``pool_state`` and ``connect_errors`` are Ring 0 (pure); ``dialer``,
``pooled_connection``, ``pool``, ``http1_upstream``, ``caller`` and ``redis`` are Ring 1
(trio). This package owns the pool nursery (``pool.UpstreamPool.run``) and no deadlines: every
connect is bounded by the caller's ``connect_timeout`` scope.

This ``__init__`` imports nothing, so that the pure modules load without trio: import from the
module that defines a name (``from a3s_gateway.upstream.peer import Peer``).
"""
