"""Traffic mirroring decisions (SPEC §7.7): which requests are copied, and the bounded copy of a
request body.

Ring 0: pure and synchronous. ``MirrorSampler`` spreads ``percentage`` evenly by error diffusion
(10 % = every tenth request; any first n requests mirror ⌊n·p/100⌋ or ⌈n·p/100⌉). ``BodyCopy``
collects a body up to ``max_bytes`` and gives up for good beyond it, freeing what it held.
``MirrorSettings`` is the compiled ``mirror {}`` block.

Must not: send anything, wait, or read the time (``server/exchange/mirror.py`` does the sending).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from a3s_gateway.config.schema_services import Mirror

__all__ = ["OUTCOMES", "BodyCopy", "MirrorSampler", "MirrorSettings", "MirrorState"]

#: The outcomes of SPEC §7.7's ``a3s_mirror_requests_total``.
OUTCOMES = ("sent", "error", "timeout", "saturated", "body_too_large", "no_backend", "unresolved")


@dataclass(frozen=True, slots=True)
class MirrorSettings:
    """One compiled ``mirror {}`` block; ``timeout`` in seconds."""

    service: str
    percentage: float
    mirror_body: bool
    max_body_bytes: int
    max_concurrency: int
    timeout: float

    @classmethod
    def from_config(cls, block: Mirror) -> MirrorSettings:
        return cls(
            service=block.service,
            percentage=float(block.percentage),
            mirror_body=block.mirror_body,
            max_body_bytes=block.max_body_bytes,
            max_concurrency=block.max_concurrency,
            timeout=block.timeout.seconds,
        )


class MirrorSampler:
    """Deterministic error diffusion: ``take()`` is True for an even ``percentage`` share."""

    __slots__ = ("_acc", "_percentage")

    def __init__(self, percentage: float) -> None:
        if not 0.0 <= percentage <= 100.0:
            raise ValueError(f"percentage must be within 0..100, got {percentage}")
        self._percentage = percentage
        self._acc = 0.0

    def take(self) -> bool:
        """Whether this request is mirrored."""
        self._acc += self._percentage
        if self._acc >= 100.0:
            self._acc -= 100.0
            return True
        return False


class BodyCopy:
    """A request body collected for the mirror, bounded by ``max_bytes``."""

    __slots__ = ("_chunks", "_max", "_size", "overflowed")

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0
        #: The body went past ``max_bytes``: the mirror is abandoned (``body_too_large``).
        self.overflowed = False

    def add(self, data: bytes) -> bool:
        """Keep ``data``; False (and nothing kept any more) once the bound is passed."""
        if self.overflowed:
            return False
        self._size += len(data)
        if self._size > self._max:
            self.overflowed = True
            self._chunks.clear()
            return False
        self._chunks.append(data)
        return True

    def value(self) -> bytes:
        """The whole body collected so far."""
        return b"".join(self._chunks)


class MirrorState:
    """One service's mirror: its settings, sampler, copies in flight and outcome counts
    (per worker, like every runtime counter)."""

    __slots__ = ("in_flight", "outcomes", "sampler", "settings")

    def __init__(self, settings: MirrorSettings) -> None:
        self.settings = settings
        self.sampler = MirrorSampler(settings.percentage)
        self.in_flight = 0
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
