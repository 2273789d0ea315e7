"""The management API (``/health``, ``/config``, ``/routes``, ``/backends``, ``/metrics``,
``/reload``, ``/drain``): ``api.py`` answers one request as a pure function of the gateway's
view, ``server.py`` is the trio listener that serves it for one gateway, ``fleet.py`` is the
supervisor's view that merges its workers' answers.

``api.py`` is Ring 0 (no trio, no I/O: it reads a ``GatewayView`` and returns bytes);
``server.py`` and ``fleet.py`` are Ring 1 and own the management listener's connection tasks.
May import ``config``, ``middleware``, ``observability``, ``routing`` and ``state``;
``fleet.py`` also reads the workers' reply types from ``supervisor.worker_main``.
"""
