"""Hypothesis profiles for the property suite (DESIGN.md §3.7).

``dev`` is fast, ``ci`` is derandomised with more examples and no deadline, ``nightly`` runs many
examples, freshly random each run, and prints the blob that reproduces a failure.
``A3S_HYPOTHESIS_PROFILE`` chooses; under ``CI=true`` the default is ``ci``. One command runs a
profile: ``just prop nightly`` (or ``./dev prop nightly``); an unknown name is a usage error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

import pytest
from hypothesis import HealthCheck, settings

PROFILES: Final = ("dev", "ci", "nightly")

settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "nightly",
    max_examples=5000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def chosen_profile(environ: Mapping[str, str]) -> str:
    """The profile ``environ`` asks for (``A3S_HYPOTHESIS_PROFILE``, else by ``CI``)."""
    name = environ.get("A3S_HYPOTHESIS_PROFILE", "ci" if environ.get("CI") == "true" else "dev")
    if name not in PROFILES:
        raise pytest.UsageError(
            f"A3S_HYPOTHESIS_PROFILE={name!r} is not a profile: use one of {', '.join(PROFILES)}"
        )
    return name


settings.load_profile(chosen_profile(os.environ))
