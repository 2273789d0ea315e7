"""Entry point of the HTTP load benchmark (issue #5, SPEC §15): ``just bench`` runs it.

``python bench/run_bench.py [--quick] [--profile NAME[,NAME]]... [--product NAME[,NAME]]...``;
``python bench/run_bench.py --ab`` is the one-minute A/B of the request path (1-worker GET:
NGINX, a3s-1w, the aiohttp-uvloop peer); ``--help`` lists the options. The work is done by the
``harness`` package beside this file; the Python peers come from ``peers`` (also beside it)
when present.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # run as a script this is already sys.path[0]
    sys.path.insert(0, str(BENCH))

from harness.cli import main  # noqa: E402 - needs the path above

if __name__ == "__main__":
    sys.exit(main())
