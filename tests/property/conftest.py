"""Hypothesis profiles for the property suite (DESIGN.md §3.7).

``dev`` is fast, ``ci`` is derandomised with more examples and no deadline, ``nightly`` runs many
examples. ``A3S_HYPOTHESIS_PROFILE`` chooses; under ``CI=true`` the default is ``ci``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("nightly", max_examples=5000, deadline=None)
settings.load_profile(
    os.environ.get("A3S_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") == "true" else "dev")
)
