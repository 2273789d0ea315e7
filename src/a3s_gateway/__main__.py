"""``python -m a3s_gateway``: the command line (see ``cli.py``)."""

from __future__ import annotations

import sys

from a3s_gateway.cli import main

sys.exit(main())
