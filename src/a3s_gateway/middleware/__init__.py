"""Middlewares (SPEC §8): the per-request pipeline (``phases.py``), the contract
(``base.py``) and one module per family of types. Ring 0: no IO outside the clients a
middleware owns, time only through a ``now`` argument."""

from __future__ import annotations

from a3s_gateway.middleware.contract import Middleware, RequestState
from a3s_gateway.middleware.phases import compile_chains, through

__all__ = ["Middleware", "RequestState", "compile_chains", "through"]
