"""Configuration: HCL loading, interpolation, the schema, semantic checks (SPEC §3).

Ring 0. The pure helpers of SPEC §2.8 are re-exported here.
"""

from __future__ import annotations

from a3s_gateway.config.interpolate import interpolate
from a3s_gateway.config.values import parse_duration

__all__ = ["interpolate", "parse_duration"]
