"""Middlewares (SPEC §8): the per-request pipeline (``phases.py`` compiles the chains), the
contract a middleware implements (``contract.py``), the seams to the outside world
(``outbound.py``: HTTP and Redis callers, handed in as ``MiddlewareDeps``) and one module per
family of types.

Ring 0: no I/O except through the ``outbound.py`` seams, time only through a ``now`` argument
or the injected clock. May import ``config`` (the blocks it is built from), ``protocols``
(header rules), ``routing`` (request views) and ``observability`` formatters; never ``server``,
``upstream`` or trio.
"""

from __future__ import annotations

from a3s_gateway.middleware.contract import Middleware, RequestState
from a3s_gateway.middleware.phases import compile_chains, through

__all__ = ["Middleware", "RequestState", "compile_chains", "through"]
