"""Suite-wide fixtures: a virtual per-test time limit for trio tests (DESIGN.md §3.6 item 6)."""

from __future__ import annotations
