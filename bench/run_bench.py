"""Entry point of the HTTP load benchmark (issue #5, SPEC §15): ``just bench`` runs it.

``python bench/run_bench.py [--quick] [--profile NAME]... [--product NAME]...``; ``--help``
lists the options. The work is done by the ``harness`` package beside this file; the Python
peers come from ``peers`` (also beside it) when present.
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
