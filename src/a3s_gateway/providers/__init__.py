"""Config providers and the reload path (SPEC §10).

Ring 1. ``file`` watches the config file and its conf.d directory; ``candidate`` builds reload
candidates in a child process; ``aggregator`` debounces changes and runs the one reload path
(``Reloader.reload_now``) that the watcher, SIGHUP, the management API and the dynamic providers
share. ``hub`` runs the dynamic providers (``dns``, ``discovery``, ``kubernetes``, each
publishing a ``dynamic.Snapshot``) and ``merge`` folds their snapshots into every candidate.

May import ``config`` (its loader reads the files), ``errors``, ``version``, ``preflight``,
``runtime`` and ``acme`` (the hub derives the ACME settings from a config); never ``server``,
``app``, ``management``, ``supervisor`` or ``cli``, which call it.
"""

from __future__ import annotations

from a3s_gateway.providers.aggregator import (
    Builder,
    Debouncer,
    Reloader,
    ReloadOutcome,
    ReloadResult,
    ReloadTarget,
)
from a3s_gateway.providers.candidate import BuildError, Candidate, CandidateBuilder
from a3s_gateway.providers.file import FileProvider, WatchTargets
from a3s_gateway.providers.provider_hub import ProviderHub

__all__ = [
    "BuildError",
    "Builder",
    "Candidate",
    "CandidateBuilder",
    "Debouncer",
    "FileProvider",
    "ProviderHub",
    "ReloadOutcome",
    "ReloadResult",
    "ReloadTarget",
    "Reloader",
    "WatchTargets",
]
