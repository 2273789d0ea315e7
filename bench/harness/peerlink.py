"""The link to ``bench/peers`` (the Python comparison proxies), imported lazily.

``bench/peers/__init__.py`` exposes ``PEERS``, ``ensure_peer``, ``peer_command``,
``peer_version`` and ``PeerUnavailable``. It is imported by name at run time, so the harness
works (and type-checks) without it: every peer is then recorded as unavailable with the reason.
"""

from __future__ import annotations

import importlib
import traceback
from dataclasses import dataclass, field
from typing import Final, Protocol, cast

DEFAULT_PEERS: Final = ("mitmproxy", "proxy.py", "hypercorn-httpx", "aiohttp-uvloop")
MODULE: Final = "bench.peers"


class PeersModule(Protocol):
    """The interface of ``bench/peers/__init__.py``."""

    PEERS: tuple[str, ...]
    PeerUnavailable: type[Exception]

    def ensure_peer(self, name: str) -> None: ...

    def peer_command(self, name: str, *, listen_port: int, upstream_port: int) -> list[str]: ...

    def peer_version(self, name: str) -> str: ...


@dataclass(slots=True)
class Peers:
    """The peers module (or why it is missing) and what was learnt about each peer."""

    module: PeersModule | None
    missing_reason: str | None
    names: tuple[str, ...]
    unavailable: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    ready: set[str] = field(default_factory=set)

    def ensure(self, name: str) -> bool:
        """Make the peer's venv if needed; False (and the reason recorded) if it can't be had."""
        if self.module is None:
            self.unavailable[name] = self.missing_reason or "bench/peers is not available"
            return False
        if name in self.ready:
            return True
        if name in self.unavailable:
            return False
        try:
            self.module.ensure_peer(name)
            self.versions[name] = self.module.peer_version(name)
        except self.module.PeerUnavailable as error:
            self.unavailable[name] = str(error) or type(error).__name__
            return False
        except Exception as error:  # a broken peer must not stop the run
            self.unavailable[name] = f"{type(error).__name__}: {error}"
            return False
        self.ready.add(name)
        return True

    def command(self, name: str, *, listen_port: int, upstream_port: int) -> list[str]:
        if self.module is None:
            raise RuntimeError(self.missing_reason or "bench/peers is not available")
        return self.module.peer_command(name, listen_port=listen_port, upstream_port=upstream_port)


def load() -> Peers:
    """Import ``bench/peers``; its absence or import error becomes a reason, not a crash."""
    try:
        module = cast("PeersModule", importlib.import_module(MODULE))
        names = tuple(module.PEERS)
    except Exception as error:  # any import failure: peers unavailable
        last = traceback.format_exception_only(error)[-1].strip()
        return Peers(None, f"bench/peers could not be imported: {last}", DEFAULT_PEERS)
    return Peers(module, None, names)
