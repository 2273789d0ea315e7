"""Entry point of the HTTP load benchmark (issue #5, SPEC §15): ``just bench`` runs it.

``python bench/run_bench.py [--quick] [--profile NAME[,NAME]]... [--product NAME[,NAME]]...``;
``python bench/run_bench.py --ab`` is the one-minute A/B of the request path (1-worker GET:
NGINX, a3s-1w, the aiohttp-uvloop peer); ``--help`` lists the options. The work is done by
``bench.harness``; the Python peers come from ``bench.peers`` when present. Also runs as
``python -m bench.run_bench`` from the repository root.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a file: the root of the `bench` package is the repository's
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
