"""Configuration: HCL text to a validated ``Config`` (SPEC §3): the HCL reader and its
positions (``hcl*.py``), interpolation, the msgspec schema (``schema*.py``), value types,
conversion with every problem reported, the semantic checks (``semantic*.py``), the pure
pipeline over texts and an environment mapping (``assemble.py``) and the loader that reads the
files and ``os.environ`` for it (``load.py``).

Ring 0 (but ``load.py``, the package's one Ring 1 module: it reads files), and the floor of
the tree: it imports only itself, ``errors``, ``version`` and ``routing`` (the semantic checks
compile each rule to report its column), never the runtime compiler that reads it
(``runtime/``). The pure helpers of SPEC §2.8 are re-exported here.
"""

from __future__ import annotations

from a3s_gateway.config.interpolate import interpolate
from a3s_gateway.config.values import parse_duration

__all__ = ["interpolate", "parse_duration"]
