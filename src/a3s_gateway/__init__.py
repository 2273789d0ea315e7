"""a3s_gateway: an API gateway and reverse proxy on trio, h11, h2 and wsproto, configured in HCL.

The public library API (SPEC §2.7)::

    config = a3s_gateway.load_config("gateway.hcl")
    gateway = a3s_gateway.Gateway(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve)
        ...
        await gateway.shutdown()

Everything here is typed (``py.typed``); nothing installs signal handlers or logging.
"""

from __future__ import annotations

from a3s_gateway.app import Gateway
from a3s_gateway.config.load import load_config, load_config_text
from a3s_gateway.config.problems import Problem
from a3s_gateway.config.schema import Config
from a3s_gateway.errors import ConfigError, GatewayError, ReloadError, StartError
from a3s_gateway.preflight import validate_config
from a3s_gateway.state import GatewayState, HealthSnapshot, ReloadStatus
from a3s_gateway.version import __version__

__all__ = [
    "Config",
    "ConfigError",
    "Gateway",
    "GatewayError",
    "GatewayState",
    "HealthSnapshot",
    "Problem",
    "ReloadError",
    "ReloadStatus",
    "StartError",
    "__version__",
    "load_config",
    "load_config_text",
    "validate_config",
]
