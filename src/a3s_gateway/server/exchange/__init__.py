"""The exchange: one request, protocol-neutral, as stages over one per-request ``Exchange``.

Ring 1. ``handle_request`` (``handle.py``) is the entry point every connection driver calls
per request with its ``Downstream`` (``server/downstream.py``); the stages are ``prepare.py``,
``middlewares.py``, ``dispatch.py`` (with ``retrying.py`` and ``mirror.py``), ``attempt.py``
and ``relay.py`` (one attempt, over the ``Upstream`` seam of ``upstream/seam.py``) and
``recording.py``. ``send_generated`` (``answer.py``) is how a driver answers a request it refuses
itself.

Modules outside this package import only what is re-exported here; modules inside import
their siblings, never this package's root, so no import cycle can form through it.
"""

from __future__ import annotations

from a3s_gateway.server.exchange.answer import send_generated
from a3s_gateway.server.exchange.handle import handle_request

__all__ = ["handle_request", "send_generated"]
