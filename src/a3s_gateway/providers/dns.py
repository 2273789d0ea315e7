"""The DNS provider (SPEC §10.4, §3.12 ``providers.dns``): the servers of a service from DNS
records, re-resolved as their TTLs run out.

Ring 1 (trio, UDP/TCP through dnspython). ``DnsDiscovery`` follows every
``services "<name>"`` entry of ``providers.dns`` in its own task and publishes one ``Snapshot``
whose ``servers[<name>]`` is that entry's current set:

- ``A``, ``AAAA``, ``A+AAAA`` (both queried; either may be empty): one server
  ``<scheme>://<addr>:<port>`` per address (IPv6 bracketed), weight = the entry's ``weight``.
- ``SRV`` (``hostname`` is the whole SRV name, ``_http._tcp.api.internal``): every record
  becomes the *addresses* of its target at the record's port, weight = the SRV weight (0 → 1).
  Addresses rather than the target name, so that the gateway balances over what the record set
  names now and the TTLs of the targets' addresses drive the re-resolution like the SRV TTL
  does; the addresses come from the answer's additional section when the server put any there
  for that target (then they are taken as complete), else from A and AAAA queries for the
  target. A target of ``.`` ("no service", RFC 2782) is skipped; the priority is not used
  (every record serves, SPEC §10.4). Two records that end at the same address and port are one
  server with the sum of their weights (a service must not name a URL twice).

Servers are sorted by URL, so equal answers give equal snapshots, and a snapshot is published
only when it differs from the previous one. The first snapshot is published once every entry
has had its first answer or failure (so the first reload sees them all, not one at a time); an
entry whose first attempt failed is there with no servers (its service exists and answers 503).

Timing (``next_delay``, pure): after an answer the entry is queried again when the shortest TTL
of what it used runs out (answer, CNAME chain, SRV targets; for a negative answer the SOA's
negative TTL, RFC 2308), but never sooner than ``MIN_DELAY`` (1 s) after the answer and at the
latest ``refresh_interval_secs`` after it; after consecutive failures 1 s, 2 s, 4 s … up to
``refresh_interval_secs``.

Failures: a timeout, SERVFAIL, REFUSED or no nameserver answering keeps the entry's last good
set; the provider's status becomes "error" (``ProviderStatus.failed``, a one-line message naming
the service and the host name) until every entry's latest attempt answered again. NXDOMAIN or
an answer without records (NODATA) is an answer: the set becomes empty (requests get 503) until
records return. Both kinds are logged as a warning once per change of problem (not every retry),
and a recovery once at info level. ``status.details["services"][<name>]`` holds ``hostname``,
``record_type``, ``servers`` (URLs), ``ttl``, ``last_error`` (the latest attempt's problem, or
None) and ``resolved_at`` (Unix time of the latest answer).

Resolution: a ``Resolver`` (``providers/dns_resolver.py``) answers each question; by default
``DnspythonResolver`` on the configured ``nameservers`` or else ``/etc/resolv.conf``, with no
cache. Tests inject their own ``Resolver``.

Nurseries: ``DnsDiscovery.run`` owns one (one task per entry), cancelled with the provider.
Deadlines: every query is bounded by ``query_timeout`` (``QUERY_TIMEOUT``, 5 s), which the
default resolver enforces (dnspython's lifetime and a trio ``fail_after`` around it). Must
not: raise out of ``run`` for a DNS failure, block the event loop, or cache answers beyond
their TTL.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.providers.dns_resolver import (
    QUERY_TIMEOUT,
    DnspythonResolver,
    LookupFailed,
    NoRecords,
    RecordKind,
    TargetAddresses,
    parse_nameserver,
)
from a3s_gateway.providers.dynamic import ProviderStatus, Snapshot, build_server

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from a3s_gateway.config.schema import DnsProvider, DnsService
    from a3s_gateway.config.schema_services import Server
    from a3s_gateway.providers.dns_resolver import Resolver
    from a3s_gateway.providers.dynamic import Publish

__all__ = ["MIN_DELAY", "DnsDiscovery", "next_delay"]

log: Final = logging.getLogger("a3s_gateway.providers.dns")

#: SPEC §10.4: an entry is never queried again sooner than this after its previous answer.
MIN_DELAY: Final = 1.0
#: The doubling of the failure backoff stops growing here (2**62 s is beyond any ceiling).
_MAX_DOUBLINGS: Final = 62


# -- the pure parts ----------------------------------------------------------------------------


def next_delay(ttl: int | None, failures: int, refresh: float) -> float:
    """Seconds from an entry's latest attempt to its next query.

    ``failures``: consecutive failed attempts up to and including the latest (0: it answered);
    ``ttl``: the shortest TTL of that answer (None: none known, wait ``refresh``); ``refresh``:
    ``refresh_interval_secs``. Always within ``[MIN_DELAY, max(MIN_DELAY, refresh)]``; after
    failures 1, 2, 4 … seconds (the TTL of an older answer no longer counts).
    """
    ceiling = max(MIN_DELAY, refresh)
    if failures > 0:
        wanted = MIN_DELAY * 2.0 ** min(failures - 1, _MAX_DOUBLINGS)
    elif ttl is None:
        wanted = ceiling
    else:
        wanted = float(ttl)
    return min(max(wanted, MIN_DELAY), ceiling)


def _url(scheme: str, address: str, port: int) -> str:
    parsed = ipaddress.ip_address(address)
    host = f"[{parsed.compressed}]" if parsed.version == 6 else parsed.compressed
    return f"{scheme}://{host}:{port}"


def _servers(weights: Mapping[str, int]) -> tuple[Server, ...]:
    return tuple(build_server(url, weights[url]) for url in sorted(weights))


# -- the provider ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Resolved:
    servers: tuple[Server, ...]
    ttl: int | None


@dataclass(frozen=True, slots=True)
class _Missing:
    reason: str
    ttl: int | None


@dataclass(frozen=True, slots=True)
class _Failed:
    reason: str


_Outcome = _Resolved | _Missing | _Failed


@dataclass(slots=True)
class _Entry:
    """What the provider knows of one ``services`` entry (mutated by its own task only)."""

    name: str
    settings: DnsService
    servers: tuple[Server, ...] = ()
    ttl: int | None = None
    problem: str | None = None
    failed: bool = False
    attempted: bool = False
    failures: int = 0
    resolved_at: float | None = None
    logged: str | None = None

    def label(self) -> str:
        return f'service "{self.name}" ({self.settings.hostname})'


def _min_ttl(ttls: Iterable[int | None]) -> int | None:
    return min((ttl for ttl in ttls if ttl is not None), default=None)


def _missing_reason(kind: str, negatives: Sequence[NoRecords]) -> str:
    if any(negative.kind == "NXDOMAIN" for negative in negatives):
        return "no such name (NXDOMAIN)"
    return f"no {kind} records"


class DnsDiscovery:
    """The DNS provider (a ``DynamicProvider``): see the module docstring.

    Raises ``ValueError`` for an invalid nameserver or an A/AAAA entry without a port (the
    config checks reject both first). ``resolver`` replaces dnspython (tests);
    ``query_timeout`` bounds each query of the default resolver.
    """

    def __init__(
        self,
        settings: DnsProvider,
        *,
        resolver: Resolver | None = None,
        query_timeout: float = QUERY_TIMEOUT,
    ) -> None:
        self.status = ProviderStatus(name="dns")
        self._refresh = float(settings.refresh_interval_secs)
        nameservers = [parse_nameserver(text) for text in settings.nameservers]
        if resolver is None:
            resolver = DnspythonResolver(nameservers, query_timeout=query_timeout)
        self._resolver = resolver
        self._entries = [_Entry(name, entry) for name, entry in sorted(settings.services.items())]
        for entry in self._entries:
            if entry.settings.record_type != "SRV" and entry.settings.port is None:
                raise ValueError(f"{entry.label()}: a port is required for A/AAAA records")
        self._published: Snapshot | None = None
        self._update_details()

    async def run(
        self, publish: Publish, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Follow every entry until cancelled; ``started()`` at once."""
        task_status.started()
        if not self._entries:
            self._maybe_publish(publish)
            self.status.synced()
            await trio.sleep_forever()
        async with trio.open_nursery() as nursery:
            for entry in self._entries:
                nursery.start_soon(self._follow, entry, publish)

    async def _follow(self, entry: _Entry, publish: Publish) -> None:
        while True:
            outcome = await self._attempt(entry.settings)
            self._record(entry, outcome)
            self._report(entry, outcome)
            self._maybe_publish(publish)
            ttl = None if entry.failed else entry.ttl
            await trio.sleep(next_delay(ttl, entry.failures, self._refresh))

    async def _attempt(self, settings: DnsService) -> _Outcome:
        try:
            if settings.record_type == "SRV":
                return await self._resolve_srv(settings)
            return await self._resolve_addresses(settings)
        except LookupFailed as error:
            return _Failed(str(error))
        except ValueError as error:  # an answer that makes no valid server URL
            return _Failed(f"unusable answer: {error}")

    async def _resolve_addresses(self, settings: DnsService) -> _Outcome:
        kinds: tuple[RecordKind, ...] = (
            ("A", "AAAA") if settings.record_type == "A+AAAA" else (settings.record_type,)
        )
        assert settings.port is not None
        weights: dict[str, int] = {}
        ttls: list[int | None] = []
        negatives: list[NoRecords] = []
        for kind in kinds:
            try:
                records = await self._resolver.query(settings.hostname, kind)
            except NoRecords as negative:
                negatives.append(negative)
                ttls.append(negative.ttl)
                continue
            ttls.append(records.ttl)
            for address in records.addresses:
                weights[_url(settings.scheme, address, settings.port)] = settings.weight
        if not weights:
            return _Missing(_missing_reason(settings.record_type, negatives), _min_ttl(ttls))
        return _Resolved(_servers(weights), _min_ttl(ttls))

    async def _resolve_srv(self, settings: DnsService) -> _Outcome:
        try:
            records = await self._resolver.query(settings.hostname, "SRV")
        except NoRecords as negative:
            return _Missing(_missing_reason("SRV", [negative]), negative.ttl)
        weights: dict[str, int] = {}
        ttls: list[int | None] = [records.ttl]
        targets = dict(records.additional)
        for record in records.srv:
            if record.target == ".":
                continue
            found = targets.get(record.target)
            if found is None:
                found = await self._target_addresses(record.target)
                targets[record.target] = found
            ttls.append(found.ttl)
            for address in found.addresses:
                url = _url(settings.scheme, address, record.port)
                weights[url] = weights.get(url, 0) + max(record.weight, 1)
        if not weights:
            return _Missing("no addresses for the SRV targets", _min_ttl(ttls))
        return _Resolved(_servers(weights), _min_ttl(ttls))

    async def _target_addresses(self, target: str) -> TargetAddresses:
        """A and AAAA of an SRV target the answer had no addresses for (none is not an error:
        the record just gives no server)."""
        addresses: list[str] = []
        ttls: list[int | None] = []
        for kind in ("A", "AAAA"):
            try:
                records = await self._resolver.query(target, kind)
            except NoRecords as negative:
                ttls.append(negative.ttl)
                continue
            addresses.extend(records.addresses)
            ttls.append(records.ttl)
        ttl = _min_ttl(ttls)
        return TargetAddresses(tuple(addresses), int(self._refresh) if ttl is None else ttl)

    def _record(self, entry: _Entry, outcome: _Outcome) -> None:
        entry.attempted = True
        match outcome:
            case _Resolved(servers, ttl):
                entry.servers, entry.ttl, entry.problem = servers, ttl, None
            case _Missing(reason, ttl):
                entry.servers, entry.ttl, entry.problem = (), ttl, reason
            case _Failed(reason):
                entry.problem, entry.failed = reason, True
                entry.failures += 1
                return
        entry.failed, entry.failures = False, 0
        entry.resolved_at = time.time()  # for display only; timing uses trio's clock

    def _report(self, entry: _Entry, outcome: _Outcome) -> None:
        """Status and log lines after an attempt (a warning once per change of problem)."""
        problem = None if entry.problem is None else f"{entry.label()}: {entry.problem}"
        if isinstance(outcome, _Failed):
            assert problem is not None
            self.status.failed(problem)
            if problem != entry.logged:
                kept = len(entry.servers)
                log.warning("dns: %s; keeping the last %d servers", problem, kept)
        elif problem is not None and problem != entry.logged:
            log.warning("dns: %s; the service has no servers until records return", problem)
        elif problem is None and entry.logged is not None:
            log.info("dns: %s resolves again: %d servers", entry.label(), len(entry.servers))
        entry.logged = problem
        if all(other.attempted and not other.failed for other in self._entries):
            self.status.synced()
        self._update_details()

    def _update_details(self) -> None:
        self.status.details = {
            "services": {
                entry.name: {
                    "hostname": entry.settings.hostname,
                    "record_type": entry.settings.record_type,
                    "servers": [server.url.text for server in entry.servers],
                    "ttl": entry.ttl,
                    "last_error": entry.problem,
                    "resolved_at": entry.resolved_at,
                }
                for entry in self._entries
            }
        }

    def _maybe_publish(self, publish: Publish) -> None:
        if not all(entry.attempted for entry in self._entries):
            return
        snapshot = Snapshot(
            servers={entry.name: entry.servers for entry in self._entries},
            origins={
                ("services", entry.name): f"DNS {entry.settings.hostname}"
                for entry in self._entries
            },
        )
        if snapshot != self._published:
            self._published = snapshot
            publish(snapshot)
