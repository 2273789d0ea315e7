"""Command-line overrides applied to a loaded config (SPEC §2.1 ``--listen``).

Ring 0: pure functions from ``Config`` to ``Config``. The override is kept by the gateway and
re-applied to every reloaded config, so it survives reloads (A3S lost it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from a3s_gateway.config.schema import remember_secrets, secrets_of
from a3s_gateway.config.schema_entrypoints import Entrypoint

if TYPE_CHECKING:
    from a3s_gateway.config.schema import Config
    from a3s_gateway.config.values import Address

LISTEN_ENTRYPOINT = "web"


def apply_listen_override(config: Config, address: Address) -> Config:
    """Replace entrypoint ``web``'s address (all its other fields kept), or add a plain
    ``http`` entrypoint ``web`` on ``address``. Routers with no ``entrypoints`` attach to every
    http entrypoint, so they reach it either way."""
    entrypoints = dict(config.entrypoints)
    current = entrypoints.get(LISTEN_ENTRYPOINT)
    if current is not None:
        entrypoints[LISTEN_ENTRYPOINT] = msgspec.structs.replace(current, address=address)
    else:
        entrypoints[LISTEN_ENTRYPOINT] = Entrypoint(address=address)
    replaced = msgspec.structs.replace(config, entrypoints=entrypoints)
    remember_secrets(replaced, secrets_of(config))
    return replaced
