"""Active health checks, the pure part (SPEC §3.10 ``health_check``, §7.1, §7.4).

Ring 0: no trio, sockets, TLS or clocks. Three things live here:

* ``parse_expected_status`` and ``StatusSet``: the ``expected_status`` grammar (a comma list of
  codes 100–599 and ``low-high`` ranges, blanks allowed around items and dashes) and membership.
  The grammar is the config validator's (``config/semantic_services.py``), so a value that
  passed validation always parses here.
* ``CheckSettings``: one ``health_check`` block compiled into the values the prober uses (seconds
  as floats, header lines as lower-case bytes, the probe type resolved).
* ``ActiveHealth``: one backend's threshold machine. It owns ``Backend.active_healthy``: a healthy
  backend turns unhealthy after ``unhealthy_threshold`` consecutive failures, an unhealthy one
  healthy after ``healthy_threshold`` consecutive successes; the opposite result resets a streak.

And two helpers of the places where the flag moves without a machine: ``carry_active_health``
(a reload: the new generation's backends take the flags of the old ones with the same URL) and
``HealthBoard``, the flags a worker of ``run --workers N`` is told (SPEC §7.4 "Multi-worker",
§13.4): there the supervisor probes every backend once and pushes the verdicts; the worker,
which runs no prober, keeps the latest one per (service, server URL) on its board and applies
the board to every generation it serves.

The Ring 1 prober that feeds ``ActiveHealth`` is ``probes/checker.py``; the supervisor's, which
fills the workers' boards, is ``probes/broadcast.py``.

Must not: import trio, socket, ssl or time; log (the caller logs transitions); touch
``Backend.passive_ejected`` (SPEC §7.4's re-admission is the passive machine's decision).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

from a3s_gateway.config.values import quote_value

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from a3s_gateway.config.schema_services import HealthCheck
    from a3s_gateway.config.values import ServerUrl
    from a3s_gateway.services.backend import Backend
    from a3s_gateway.upstream.peer import UpstreamTlsSettings

__all__ = [
    "ActiveHealth",
    "ActiveHealthState",
    "BackendKey",
    "CheckKind",
    "CheckSettings",
    "HealthBoard",
    "StatusSet",
    "carry_active_health",
    "kind_for_servers",
    "parse_expected_status",
]

CheckKind: TypeAlias = Literal["http", "tcp"]
#: A probed backend across generations and processes: ``(service name, server URL text)``.
BackendKey: TypeAlias = tuple[str, str]

#: One item of ``expected_status``: the same pattern as the config validator's.
_STATUS_ITEM: Final = re.compile(r"\s*([0-9]{3})(?:\s*-\s*([0-9]{3}))?\s*")
_LOWEST: Final = 100
_HIGHEST: Final = 599
_EXAMPLE: Final = 'expected codes and ranges like "200,204,300-399" (codes 100-599)'

#: Header names the prober writes itself; a configured ``host`` becomes the probe's hostname.
_RESERVED: Final = frozenset({b"connection", b"content-length", b"transfer-encoding"})


# -- expected_status --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusSet:
    """A set of HTTP status codes as sorted, disjoint, non-adjacent ``(low, high)`` ranges.

    ``str()`` is the canonical text (``"200-299,301"``), which ``parse_expected_status`` reads
    back to an equal set.
    """

    ranges: tuple[tuple[int, int], ...]

    def __contains__(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.ranges)

    def __str__(self) -> str:
        return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in self.ranges)


def parse_expected_status(text: str) -> StatusSet:
    """The ``StatusSet`` of an ``expected_status`` value such as ``"200-299,301"``.

    Raises ``ValueError`` naming the value and the offending item: an empty item, something
    other than a 3-digit code or ``low-high`` range, a code outside 100–599, or a reversed range.
    """
    found: list[tuple[int, int]] = []
    for item in text.split(","):
        shown = quote_value(item.strip())
        matched = _STATUS_ITEM.fullmatch(item)
        if matched is None:
            problem = (
                "an empty item" if not item.strip() else f"item {shown} is not a code or range"
            )
            raise _invalid(text, problem)
        low = int(matched[1])
        high = int(matched[2]) if matched[2] is not None else low
        if not _LOWEST <= low <= _HIGHEST or not _LOWEST <= high <= _HIGHEST:
            raise _invalid(text, f"item {shown} is outside 100-599")
        if low > high:
            raise _invalid(text, f"range {shown} is reversed")
        found.append((low, high))
    return StatusSet(_merge(found))


def _invalid(text: str, problem: str) -> ValueError:
    return ValueError(f"expected_status {quote_value(text)} is invalid ({problem}): {_EXAMPLE}")


def _merge(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sort and join overlapping or adjacent ranges."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)


# -- settings ---------------------------------------------------------------------------------


def kind_for_servers(urls: Iterable[ServerUrl]) -> CheckKind:
    """The probe type when ``type`` is unset (SPEC §3.10 "from the server scheme").

    The validator's rule: ``tcp`` when the service has servers and none of them is http-like
    (http, https, h2c, ws, wss), else ``http``. Pass every server of the service (all pools).
    """
    servers = list(urls)
    if servers and not any(url.is_http_like for url in servers):
        return "tcp"
    return "http"


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckSettings:
    """One compiled ``health_check`` block (SPEC §3.10); times in seconds.

    ``path`` is ``""`` for tcp probes. ``headers`` are the extra probe headers with lower-case
    names, in config order, without ``host``, ``connection`` and framing fields (the prober
    writes those). ``hostname`` is the probe's ``Host`` (None: the probed host:port); ``port``
    overrides the server URL's port for the probe (None: the URL's). ``tls`` is the service's
    ``upstream_tls`` (None: the defaults), used by probes of ``https``/``wss``/``tls`` backends
    (SPEC §7.4: "TLS with ``upstream_tls``"); set by ``runtime/compile.py``.
    """

    kind: CheckKind
    path: str
    method: str = "GET"
    interval: float = 10.0
    timeout: float = 5.0
    healthy_threshold: int = 1
    unhealthy_threshold: int = 3
    expected: StatusSet = StatusSet(((200, 299),))
    headers: tuple[tuple[bytes, bytes], ...] = ()
    hostname: str | None = None
    port: int | None = None
    tls: UpstreamTlsSettings | None = None

    def __post_init__(self) -> None:
        if self.kind == "http" and not self.path.startswith("/"):
            raise ValueError(f"http health check path {quote_value(self.path)} must start with /")
        if not self.interval > 0 or not self.timeout > 0:  # also rejects NaN
            raise ValueError("health check interval and timeout must be > 0")
        if self.healthy_threshold < 1 or self.unhealthy_threshold < 1:
            raise ValueError("health check thresholds must be >= 1")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"health check port must be 1-65535, got {self.port}")

    @classmethod
    def from_config(cls, block: HealthCheck, *, default_kind: CheckKind) -> CheckSettings:
        """Compile ``block``; ``default_kind`` is ``kind_for_servers`` of the service.

        The type is ``block.type`` if set, else ``http`` when a ``path`` is given, else
        ``default_kind``. A configured ``Host`` header acts as ``hostname`` when ``hostname`` is
        unset (``hostname`` wins otherwise). Raises ``ValueError`` for what the validator
        rejects (http without a path, a bad ``expected_status``).
        """
        kind: CheckKind = block.type or ("http" if block.path is not None else default_kind)
        if kind == "http" and block.path is None:
            raise ValueError('field "path" is required for http health checks, e.g. "/health"')
        hostname = block.hostname
        headers: list[tuple[bytes, bytes]] = []
        for name, value in block.headers.items():
            key = name.lower().encode("ascii")
            if key == b"host":
                hostname = hostname if hostname is not None else value
            elif key not in _RESERVED:
                headers.append((key, value.encode()))
        return cls(
            kind=kind,
            path=(block.path or "") if kind == "http" else "",
            method=block.method,
            interval=block.interval.seconds,
            timeout=block.timeout.seconds,
            healthy_threshold=block.healthy_threshold,
            unhealthy_threshold=block.unhealthy_threshold,
            expected=parse_expected_status(block.expected_status),
            headers=tuple(headers),
            hostname=hostname,
            port=block.port,
        )


# -- the threshold machine --------------------------------------------------------------------


class ActiveHealth:
    """One backend's consecutive-result counters; the owner of ``backend.active_healthy``.

    The current health is the backend's flag, so a machine created for an already unhealthy
    backend (a ``scaling`` service, or a prober restarted by a reload) carries that state on.
    """

    __slots__ = ("_failures", "_successes", "backend", "healthy_threshold", "unhealthy_threshold")

    backend: Backend
    healthy_threshold: int
    unhealthy_threshold: int

    def __init__(self, backend: Backend, healthy_threshold: int, unhealthy_threshold: int) -> None:
        if healthy_threshold < 1 or unhealthy_threshold < 1:
            raise ValueError("health check thresholds must be >= 1")
        self.backend = backend
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self._successes = 0  # consecutive, capped at healthy_threshold
        self._failures = 0  # consecutive, capped at unhealthy_threshold

    @property
    def healthy(self) -> bool:
        """The backend's active health."""
        return self.backend.active_healthy

    @property
    def streak(self) -> tuple[int, int]:
        """``(consecutive successes, consecutive failures)``; one of them is always 0."""
        return self._successes, self._failures

    def record(self, success: bool) -> bool | None:
        """Count one probe result; return the new health if it flipped, else None."""
        backend = self.backend
        if success:
            self._failures = 0
            self._successes = min(self._successes + 1, self.healthy_threshold)
            if not backend.active_healthy and self._successes >= self.healthy_threshold:
                backend.active_healthy = True
                return True
        else:
            self._successes = 0
            self._failures = min(self._failures + 1, self.unhealthy_threshold)
            if backend.active_healthy and self._failures >= self.unhealthy_threshold:
                backend.active_healthy = False
                return False
        return None

    def __repr__(self) -> str:
        state = "healthy" if self.healthy else "unhealthy"
        return (
            f"<ActiveHealth {self.backend.url.text} {state} successes={self._successes}/"
            f"{self.healthy_threshold} failures={self._failures}/{self.unhealthy_threshold}>"
        )


#: The name SPEC §2.8 lists among the pure services APIs.
ActiveHealthState: TypeAlias = ActiveHealth


# -- health decided elsewhere -----------------------------------------------------------------


def carry_active_health(before: Iterable[Backend], after: Iterable[Backend]) -> None:
    """Give each backend of ``after`` the active health of the backend of ``before`` with the
    same server URL (a reload keeps the verdicts, SPEC §7.4 "Reload"); others keep theirs."""
    by_url = {backend.url.text: backend.active_healthy for backend in before}
    for backend in after:
        healthy = by_url.get(backend.url.text)
        if healthy is not None:
            backend.active_healthy = healthy


class HealthBoard:
    """The active health a worker is told (module docstring): the latest flag per
    ``BackendKey``. ``update`` records what arrived; ``apply`` sets the flags of a generation's
    backends from it (a backend the board does not name keeps its flag)."""

    __slots__ = ("_states",)

    def __init__(self) -> None:
        self._states: dict[BackendKey, bool] = {}

    def update(self, states: Iterable[tuple[str, str, bool]], *, full: bool = False) -> None:
        """Record ``(service, url, healthy)`` verdicts; ``full``: they are every verdict there
        is, so the ones not among them are forgotten (their backends left the probed config)."""
        if full:
            self._states = {}
        for service, url, healthy in states:
            self._states[service, url] = healthy

    def healthy(self, service: str, url: str) -> bool | None:
        """The recorded verdict on that backend; None: none recorded."""
        return self._states.get((service, url))

    @property
    def states(self) -> Mapping[BackendKey, bool]:
        """Every recorded verdict."""
        return self._states

    def apply(self, service: str, backends: Iterable[Backend]) -> list[Backend]:
        """Set the flag of each of ``service``'s ``backends`` the board names; the backends
        whose flag changed."""
        changed: list[Backend] = []
        for backend in backends:
            healthy = self._states.get((service, backend.url.text))
            if healthy is not None and healthy != backend.active_healthy:
                backend.active_healthy = healthy
                changed.append(backend)
        return changed

    def __repr__(self) -> str:
        down = sum(1 for healthy in self._states.values() if not healthy)
        return f"<HealthBoard {len(self._states)} backend(s), {down} unhealthy>"
