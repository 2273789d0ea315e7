"""The DNS provider (SPEC §10.4, §3.12 ``providers.dns``): the servers of a service from DNS
records, re-resolved as their TTLs run out.

Ring 1 (trio, UDP/TCP through dnspython). ``DnsDiscovery`` follows every
``services "<name>"`` entry of ``providers.dns`` in its own task and publishes one ``Snapshot``
whose ``servers[<name>]`` is that entry's current set:

- ``A``, ``AAAA``, ``A+AAAA`` (both queried at once; either may be empty, and one that fails
  while the other has addresses counts as empty): one server ``<scheme>://<addr>:<port>`` per
  address (IPv6 bracketed), weight = the entry's ``weight``.
- ``SRV`` (``hostname`` is the whole SRV name, ``_http._tcp.api.internal``): every record
  becomes the *addresses* of its target at the record's port, weight = the SRV weight (0 → 1).
  Addresses rather than the target name, so that the gateway balances over what the record set
  names now and the TTLs of the targets' addresses drive the re-resolution like the SRV TTL
  does; the addresses come from the answer's additional section when the server put any there
  for that target (then they are taken as complete), else from A and AAAA queries for the
  target (``TARGET_LOOKUPS`` = 16 targets at once, each target's two queries together, with the
  same rule as ``A+AAAA``). A target whose lookup failed keeps the addresses it had at the
  entry's previous answer (none if it is new); the attempt fails as a whole only when every
  target failed. A target of ``.`` ("no service", RFC 2782) is skipped; the priority is not
  used (every record serves, SPEC §10.4). Two records that end at the same address and port are
  one server with the sum of their weights (a service must not name a URL twice).

Servers are sorted by URL, so equal answers give equal snapshots, and a snapshot is published
only when it differs from the previous one. The first snapshot is published once every entry
has had its first answer or failure (so the first reload sees them all, not one at a time); an
entry whose first attempt failed is there with no servers (its service exists and answers 503).

Timing (``next_delay``, pure): after an answer the entry is queried again when the shortest TTL
of what it used runs out (answer, CNAME chain, SRV targets; for a negative answer the SOA's
negative TTL, RFC 2308), but never sooner than ``MIN_DELAY`` (1 s) after the answer and at the
latest ``refresh_interval_secs`` after it; after consecutive failures 1 s, 2 s, 4 s … up to
``refresh_interval_secs``; after an answer with failed SRV targets whichever of the two comes
first.

Failures: a timeout, SERVFAIL, REFUSED, no nameserver answering or an unusable resolver
configuration keeps the entry's last good set (failed SRV targets: see above); the provider's
status becomes "error" (``ProviderStatus.failed``, a one-line message naming the service and
the host name, or the SRV target) until every entry's latest attempt answered fully. NXDOMAIN or
an answer without records (NODATA) is an answer: the set becomes empty (requests get 503) until
records return. Both kinds are logged as a warning once per change of problem (not every retry),
and a recovery once at info level. ``status.details["services"][<name>]`` holds ``hostname``,
``record_type``, ``servers`` (URLs), ``ttl``, ``last_error`` (the latest attempt's problem, or
None) and ``resolved_at`` (Unix time of the latest answer).

Resolution: a ``Resolver`` (``providers/dns_resolver.py``) answers each question; by default
``DnspythonResolver`` on the configured ``nameservers`` or else ``/etc/resolv.conf``, with no
cache. Tests inject their own ``Resolver``.

Nurseries: ``DnsDiscovery.run`` owns one (one task per entry), cancelled with the provider;
within an attempt, one per name asked for both families (its A and AAAA queries) and one for an
SRV answer's target lookups (at most ``TARGET_LOOKUPS`` workers), each closed before the
attempt ends. Deadlines: every query is bounded by ``query_timeout`` (``QUERY_TIMEOUT``, 5 s),
which the default resolver enforces (dnspython's lifetime and a trio ``fail_after`` around it).
Must not: raise out of ``run`` for a DNS failure, block the event loop, or cache answers beyond
their TTL (a failed SRV target's last known addresses are kept, not cached: they serve only
while its lookups fail).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.providers.dns_resolver import (
    QUERY_TIMEOUT,
    DnspythonResolver,
    LookupFailed,
    NoRecords,
    RecordKind,
    Records,
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

__all__ = ["MIN_DELAY", "TARGET_LOOKUPS", "DnsDiscovery", "next_delay"]

log: Final = logging.getLogger("a3s_gateway.providers.dns")

#: SPEC §10.4: an entry is never queried again sooner than this after its previous answer.
MIN_DELAY: Final = 1.0
#: SRV targets whose addresses are looked up at once (each its A and AAAA queries together).
TARGET_LOOKUPS: Final = 16
#: The doubling of the failure backoff stops growing here (2**62 s is beyond any ceiling).
_MAX_DOUBLINGS: Final = 62
_ADDRESS_KINDS: Final[tuple[RecordKind, ...]] = ("A", "AAAA")


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


def _no_targets() -> Mapping[str, TargetAddresses]:
    return {}


@dataclass(frozen=True, slots=True)
class _Resolved:
    servers: tuple[Server, ...]
    ttl: int | None
    #: SRV: the addresses of every current target (what a failed lookup of one falls back to).
    targets: Mapping[str, TargetAddresses] = field(default_factory=_no_targets)
    #: SRV: some targets' lookups failed (their last known addresses were used).
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class _Missing:
    reason: str
    ttl: int | None


@dataclass(frozen=True, slots=True)
class _Failed:
    reason: str


_Outcome = _Resolved | _Missing | _Failed


@dataclass(frozen=True, slots=True)
class _Addresses:
    """The answers of one name to A and/or AAAA queries: the addresses (in the order of the
    kinds asked), the shortest TTL of the answers (negative ones included), the negative answers
    and the first failure. A family that failed counts as missing when another has addresses."""

    addresses: tuple[str, ...]
    ttl: int | None
    negatives: tuple[NoRecords, ...]
    failure: LookupFailed | None

    @property
    def failed(self) -> bool:
        """No address, and a query failed (rather than answering that there are none)."""
        return not self.addresses and self.failure is not None


@dataclass(slots=True)
class _Entry:
    """What the provider knows of one ``services`` entry (mutated by its own task only).

    ``failed``: the latest attempt had a failed lookup (the whole attempt, or some SRV targets);
    ``kept``: the whole attempt failed, so ``servers`` and ``ttl`` are an older answer's;
    ``failures``: consecutive attempts with a failed lookup; ``targets``: SRV, the last known
    addresses of each current target."""

    name: str
    settings: DnsService
    servers: tuple[Server, ...] = ()
    ttl: int | None = None
    targets: dict[str, TargetAddresses] = field(default_factory=dict)
    problem: str | None = None
    failed: bool = False
    kept: bool = False
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


def _targets_problem(failures: Mapping[str, LookupFailed], total: int) -> str:
    """``SRV target b.test.: timed out after 5 s``, or with several
    ``3 of 8 SRV targets failed (b.test.: timed out after 5 s; …)`` (the same text for the same
    outage: it is compared to log a change once)."""
    first = min(failures)
    cause = f"{first}: {failures[first]}"
    if len(failures) == 1:
        return f"SRV target {cause}"
    return f"{len(failures)} of {total} SRV targets failed ({cause}; …)"


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
            outcome = await self._attempt(entry)
            self._record(entry, outcome)
            self._report(entry, outcome)
            self._maybe_publish(publish)
            await trio.sleep(self._delay(entry))

    def _delay(self, entry: _Entry) -> float:
        """After an answer its TTL, after a failure the backoff; after an answer with failed
        SRV targets whichever comes first."""
        delay = next_delay(None if entry.kept else entry.ttl, 0, self._refresh)
        if entry.failures:
            delay = min(delay, next_delay(None, entry.failures, self._refresh))
        return delay

    async def _attempt(self, entry: _Entry) -> _Outcome:
        settings = entry.settings
        try:
            if settings.record_type == "SRV":
                return await self._resolve_srv(settings, entry.targets)
            return await self._resolve_addresses(settings)
        except LookupFailed as error:
            return _Failed(str(error))
        except ValueError as error:  # an answer that makes no valid server URL
            return _Failed(f"unusable answer: {error}")

    async def _resolve_addresses(self, settings: DnsService) -> _Outcome:
        kinds: tuple[RecordKind, ...] = (
            _ADDRESS_KINDS if settings.record_type == "A+AAAA" else (settings.record_type,)
        )
        assert settings.port is not None
        found = await self._families(settings.hostname, kinds)
        if found.failure is not None and found.failed:
            return _Failed(str(found.failure))
        weights = {
            _url(settings.scheme, address, settings.port): settings.weight
            for address in found.addresses
        }
        if not weights:
            return _Missing(_missing_reason(settings.record_type, found.negatives), found.ttl)
        return _Resolved(_servers(weights), found.ttl)

    async def _families(self, name: str, kinds: Sequence[RecordKind]) -> _Addresses:
        """The address records of ``name`` of each of ``kinds``, asked at once."""
        results: dict[RecordKind, Records | NoRecords | LookupFailed] = {}
        async with trio.open_nursery() as nursery:
            for kind in kinds:
                nursery.start_soon(self._ask, name, kind, results)
        addresses: list[str] = []
        ttls: list[int | None] = []
        negatives: list[NoRecords] = []
        failure: LookupFailed | None = None
        for kind in kinds:
            match results[kind]:
                case LookupFailed() as error:
                    failure = failure or error
                case NoRecords() as negative:
                    negatives.append(negative)
                    ttls.append(negative.ttl)
                case Records() as records:
                    addresses.extend(records.addresses)
                    ttls.append(records.ttl)
        return _Addresses(tuple(addresses), _min_ttl(ttls), tuple(negatives), failure)

    async def _ask(
        self,
        name: str,
        kind: RecordKind,
        results: dict[RecordKind, Records | NoRecords | LookupFailed],
    ) -> None:
        try:
            results[kind] = await self._resolver.query(name, kind)
        except (NoRecords, LookupFailed) as error:
            results[kind] = error

    async def _resolve_srv(
        self, settings: DnsService, known: Mapping[str, TargetAddresses]
    ) -> _Outcome:
        """The SRV records and their targets' addresses; a target whose lookup failed keeps its
        ``known`` addresses, and the attempt fails only when every target failed."""
        try:
            records = await self._resolver.query(settings.hostname, "SRV")
        except NoRecords as negative:
            return _Missing(_missing_reason("SRV", [negative]), negative.ttl)
        names = sorted({record.target for record in records.srv if record.target != "."})
        targets = {name: records.additional[name] for name in names if name in records.additional}
        unknown = [name for name in names if name not in targets]
        found, failures = await self._target_addresses(unknown)
        targets |= found
        ttls = [records.ttl, *(target.ttl for target in targets.values())]
        problem = _targets_problem(failures, len(names)) if failures else None
        if problem is not None and len(failures) == len(names):
            return _Failed(problem)
        targets |= {name: known[name] for name in failures if name in known}
        weights: dict[str, int] = {}
        for record in records.srv:
            target = targets.get(record.target)  # None: ".", or failed with nothing known
            for address in target.addresses if target is not None else ():
                url = _url(settings.scheme, address, record.port)
                weights[url] = weights.get(url, 0) + max(record.weight, 1)
        if weights:
            return _Resolved(_servers(weights), _min_ttl(ttls), targets, problem)
        if problem is not None:
            return _Failed(problem)
        return _Missing("no addresses for the SRV targets", _min_ttl(ttls))

    async def _target_addresses(
        self, names: Sequence[str]
    ) -> tuple[dict[str, TargetAddresses], dict[str, LookupFailed]]:
        """A and AAAA of the SRV targets the answer had no addresses for, ``TARGET_LOOKUPS``
        targets at once: the addresses of those that answered (none is not an error: the record
        just gives no server) and the failure of those that did not."""
        found: dict[str, TargetAddresses] = {}
        failures: dict[str, LookupFailed] = {}
        pending = iter(names)

        async def look_up() -> None:
            for name in pending:  # the workers share the iterator: each name is taken once
                answer = await self._families(name, _ADDRESS_KINDS)
                if answer.failure is not None and answer.failed:
                    failures[name] = answer.failure
                else:
                    ttl = int(self._refresh) if answer.ttl is None else answer.ttl
                    found[name] = TargetAddresses(answer.addresses, ttl)

        async with trio.open_nursery() as nursery:
            for _ in range(min(TARGET_LOOKUPS, len(names))):
                nursery.start_soon(look_up)
        return found, failures

    def _record(self, entry: _Entry, outcome: _Outcome) -> None:
        entry.attempted = True
        match outcome:
            case _Resolved(servers, ttl, targets, problem):
                entry.servers, entry.ttl, entry.problem = servers, ttl, problem
                entry.targets = dict(targets)
            case _Missing(reason, ttl):
                entry.servers, entry.ttl, entry.problem = (), ttl, reason
                entry.targets = {}
            case _Failed(reason):
                entry.problem, entry.failed, entry.kept = reason, True, True
                entry.failures += 1
                return
        entry.failed = isinstance(outcome, _Resolved) and outcome.problem is not None
        entry.kept = False
        entry.failures = entry.failures + 1 if entry.failed else 0
        entry.resolved_at = time.time()  # for display only; timing uses trio's clock

    def _report(self, entry: _Entry, outcome: _Outcome) -> None:
        """Status and log lines after an attempt (a warning once per change of problem)."""
        problem = None if entry.problem is None else f"{entry.label()}: {entry.problem}"
        if entry.failed:
            assert problem is not None
            self.status.failed(problem)
            if problem != entry.logged and isinstance(outcome, _Failed):
                kept = len(entry.servers)
                log.warning("dns: %s; keeping the last %d servers", problem, kept)
            elif problem != entry.logged:
                log.warning(
                    "dns: %s; those targets keep their last known addresses (%d servers)",
                    problem,
                    len(entry.servers),
                )
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
