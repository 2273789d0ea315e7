"""The downstream data plane (Ring 1): listeners and accept loops, the connection drivers
(``http1_driver.py``, ``http2_driver.py``), the ``Downstream`` seam (``downstream.py``,
``http1_downstream.py``, ``http2_downstream.py``), one proxied request as stages
(``exchange/``), the WebSocket relay (``websocket_relay.py``), the config generation's
background tasks (``generation.py``), the access-log writer, the OTLP exporter and the
per-process counters (``server_context.py``).

Owns the listener group, the connection handlers' and each connection's tasks and their
deadlines (each module's docstring names its nurseries). May import every Ring 0 package,
``upstream``, ``streams``, ``probes`` and ``wsmux`` (the multiplexer a ``websocket_mux`` service
runs); never ``app``, ``management``, ``supervisor`` or ``cli``.
"""
