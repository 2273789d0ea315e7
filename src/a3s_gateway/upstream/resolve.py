"""Host names of backends, resolved at connect time and cached by their TTL (SPEC §5.7 "DNS").

Ring 1 (trio, dnspython, files). ``RESOLVER`` is the process's one ``Resolver``; the dialer
(``upstream/dialer.py``) asks it for the addresses of every backend whose host is a name, then
tries them in the order given. IP literals never get here: ``is_ip_literal`` is the dialer's fast
path (no lookup, no allocation), and ``Resolver.resolve`` answers one with itself.

Sources, in this order (the C library's ``hosts: files dns``):

- ``/etc/hosts``: parsed on first use and again whenever its stamp (inode, size, mtime) changes,
  checked with one ``stat`` per lookup (like the TLS files in ``dialer.TlsContexts``). Names
  compare lower-case without a trailing dot; a name's addresses come in file order, from every
  line naming it. ``localhost`` and ``*.localhost`` (RFC 6761 §6.3) are 127.0.0.1 then ::1 when
  the file does not name them.
- DNS (``SystemDns``): dnspython's async resolver on its trio backend, configured from
  ``/etc/resolv.conf`` (name servers, ``search``, ``ndots``, ``timeout``; the file is re-read in
  a worker thread when its stamp changes) and applying the search list as the C library does.
  The AAAA and A queries run at once (``both_families``); once one of them has addresses, the
  other gets ``RESOLUTION_DELAY`` (50 ms, RFC 8305 §3) more and is then cancelled and counts as
  missing, so a server that never answers AAAA (or A) costs 50 ms, not ``LOOKUP_LIMIT``. The
  addresses are interleaved, IPv6 first (RFC 8305 §4: v6, v4, v6, v4, …, each family in the
  server's order), so with the dialer's staggered attempts a host whose IPv6 is broken costs one
  attempt delay, not the connect timeout. A ``resolv.conf`` dnspython cannot use (a name server
  that is not an IP address, an over-long ``search`` label) fails the lookups that need it with
  the reason (remembered until the file changes), as does any error of dnspython during a query:
  nothing but ``ResolveError`` leaves ``SystemDns``.

Cache (DNS answers only; ``/etc/hosts`` is its own table): an answer is kept for the smallest TTL
of its records (of the families that have addresses), clamped to [``MIN_TTL``, ``MAX_TTL``] =
[1 s, 300 s]; a failure (NXDOMAIN, no A or AAAA records, no server answering, a timeout, an
unusable ``resolv.conf``) for ``NEGATIVE_TTL`` = 1 s, so a burst of connects to a dead name asks
once, and a fixed name is found a second later. At most ``MAX_NAMES`` names, the one stored
longest ago evicted first. Concurrent lookups of one name share one query: the first runs it,
the others wait on its ``trio.Event``; when the one running it is cancelled (its own connect
deadline), a waiter runs it again. Expiry times are on trio's clock, so the cache and the
in-flight table belong to one trio run (a ``RunVar``: one run per process in the gateway; each
test its own).

A failure is ``ConnectFailed("resolve", 'cannot resolve "<host>": <why>')``, e.g.
``cannot resolve "api.internal": no such host``: the reason word a failed ``getaddrinfo`` got
before, so the exchange, the probes, the TCP proxy and the outbound caller treat it as any other
connect failure (an attempt that failed, retried on the next backend, 502 in the end).

Nurseries: ``both_families`` opens one per lookup, local to the call (its AAAA and A queries).
Deadlines: a lookup is bounded by ``LOOKUP_LIMIT`` (5 s, trio's clock; it then fails as
"timed out") and, like the whole dial, by its caller's connect deadline; the slower family by
``RESOLUTION_DELAY`` once the other has addresses. dnspython's own lifetime is set beyond
``LOOKUP_LIMIT``, so ours decides (dnspython measures that one on the wall clock; its
per-server timeouts are trio scopes).

Must not: connect, log (the callers log the failure), block the event loop on more than a
``stat`` and the read of ``/etc/hosts`` (a small file), read the wall clock, or keep a failure
longer than ``NEGATIVE_TTL``.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
import trio

from a3s_gateway.upstream.connect_errors import ConnectFailed

__all__ = [
    "HOSTS_PATH",
    "LOOKUP_LIMIT",
    "LOOPBACK",
    "MAX_NAMES",
    "MAX_TTL",
    "MIN_TTL",
    "NEGATIVE_TTL",
    "RESOLUTION_DELAY",
    "RESOLVER",
    "RESOLV_CONF",
    "DnsAnswer",
    "FamilyQuery",
    "HostsFile",
    "Query",
    "ResolveError",
    "Resolver",
    "SystemDns",
    "both_families",
    "describe",
    "interleave",
    "is_ip_literal",
    "parse_hosts",
]

HOSTS_PATH: Final = "/etc/hosts"
RESOLV_CONF: Final = "/etc/resolv.conf"
#: An answer is kept at least this long (a TTL of 0 would mean one query per connect) ...
MIN_TTL: Final = 1.0
#: ... and at most this long (SPEC §5.7), whatever its TTL says.
MAX_TTL: Final = 300.0
#: How long a failed lookup is remembered.
NEGATIVE_TTL: Final = 1.0
#: Names kept in the cache; the one stored longest ago makes room.
MAX_NAMES: Final = 4096
#: The bound of one lookup (both families), seconds of trio's clock.
LOOKUP_LIMIT: Final = 5.0
#: Once one family has addresses, how long the other may still take (RFC 8305 §3).
RESOLUTION_DELAY: Final = 0.05
#: ``localhost`` when ``/etc/hosts`` does not name it.
LOOPBACK: Final = ("127.0.0.1", "::1")

#: (inode, size, mtime in ns) of a file, None when it cannot be read.
_Stamp: TypeAlias = tuple[int, int, int] | None
_FAMILIES: Final = (dns.rdatatype.AAAA, dns.rdatatype.A)


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """What one DNS lookup found: addresses in the order to try them and the TTL of the records
    in seconds, before clamping (not used when ``addresses`` is empty: no such records)."""

    addresses: tuple[str, ...]
    ttl: float


class ResolveError(Exception):
    """A DNS lookup found no address; ``why`` says so in a few words (``no such host``)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


#: One DNS lookup (``SystemDns``, or a test's stand-in): a name → its addresses and TTL; raises
#: ``ResolveError``. The ``Resolver`` bounds it in time and caches what it says.
Query: TypeAlias = Callable[[str], Awaitable[DnsAnswer]]
#: One family of one name (``SystemDns``'s query of one type, or a test's stand-in): the name and
#: ``dns.rdatatype.AAAA`` or ``A`` → that family's addresses (none: no records of the type) and
#: TTL; raises ``ResolveError``.
FamilyQuery: TypeAlias = Callable[[str, dns.rdatatype.RdataType], Awaitable[DnsAnswer]]


def is_ip_literal(host: str) -> bool:
    """Whether a ``Peer.host`` is an IP literal (the dialer's fast path: no allocation).

    Only IPv6 literals hold ``:``. A host made of digits and dots is an IPv4 literal: the config
    takes a host whose last label is all digits as IPv4 or rejects it (``config/authority.py``).
    ``strip`` returns the shared empty string for such a host.
    """
    return ":" in host or not host.strip("0123456789.")


def _stamp(path: str) -> _Stamp:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_hosts(text: str) -> dict[str, tuple[str, ...]]:
    """A hosts(5) file: name (lower-case, no trailing dot) → its addresses in file order.
    Comments, blank lines and lines whose first field is not an IP address are skipped."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.partition("#")[0].split()
        if len(fields) < 2 or not _is_address(fields[0]):
            continue
        for name in fields[1:]:
            addresses = found.setdefault(name.lower().rstrip("."), [])
            if fields[0] not in addresses:
                addresses.append(fields[0])
    return {name: tuple(addresses) for name, addresses in found.items()}


class HostsFile:
    """The static table of ``/etc/hosts``: parsed on first use and again when the file's stamp
    changed (one ``stat`` per lookup); a missing or unreadable file is an empty table."""

    __slots__ = ("_loaded", "_path", "_stamp", "_table")

    def __init__(self, path: str = HOSTS_PATH) -> None:
        self._path = path
        self._loaded = False
        self._stamp: _Stamp = None
        self._table: dict[str, tuple[str, ...]] = {}

    def lookup(self, name: str) -> tuple[str, ...] | None:
        """The addresses of ``name`` (lower-case, no trailing dot); None when not listed."""
        stamp = _stamp(self._path)
        if not self._loaded or stamp != self._stamp:
            self._table = self._read()
            self._stamp = stamp
            self._loaded = True
        found = self._table.get(name)
        if found is None and (name == "localhost" or name.endswith(".localhost")):
            return LOOPBACK
        return found

    def _read(self) -> dict[str, tuple[str, ...]]:
        try:
            with open(self._path, encoding="utf-8", errors="replace") as file:
                return parse_hosts(file.read())
        except OSError:
            return {}


# -- DNS ---------------------------------------------------------------------------------------


class SystemDns:
    """The default ``Query``: AAAA and A at once through dnspython's async resolver (see the
    module docstring). ``nameservers`` (``(ip, port)`` pairs) replace ``resolv_conf``'s servers
    (a test's own DNS server); the search list then is empty."""

    __slots__ = ("_backend", "_broken", "_nameservers", "_path", "_resolver", "_stamp")

    def __init__(
        self, *, resolv_conf: str = RESOLV_CONF, nameservers: Sequence[tuple[str, int]] = ()
    ) -> None:
        self._path = resolv_conf
        self._nameservers = tuple(nameservers)
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._stamp: _Stamp = None
        #: The stamp of a ``resolv_conf`` that could not be used, and why.
        self._broken: tuple[_Stamp, str] | None = None
        self._backend = dns.asyncbackend.get_backend("trio")

    async def __call__(self, name: str) -> DnsAnswer:
        """The addresses of ``name``, IPv6 and IPv4 interleaved; a checkpoint. Raises
        ``ResolveError``."""
        resolver = await self._configured()
        return await both_families(name, functools.partial(self._ask, resolver))

    async def _ask(
        self, resolver: dns.asyncresolver.Resolver, name: str, rdtype: dns.rdatatype.RdataType
    ) -> DnsAnswer:
        """One family of ``name`` (a ``FamilyQuery``). Raises ``ResolveError``, whatever went
        wrong in dnspython."""
        try:
            answer = await resolver.resolve(
                name, rdtype, search=True, raise_on_no_answer=False, backend=self._backend
            )
        except (dns.exception.DNSException, ValueError, OSError) as error:
            raise ResolveError(_why(error)) from None
        rrset = answer.rrset
        if rrset is None:
            return DnsAnswer((), 0.0)
        return DnsAnswer(tuple(rdata.to_text() for rdata in rrset), float(rrset.ttl))

    async def _configured(self) -> dns.asyncresolver.Resolver:
        """The resolver, (re)built when ``resolv_conf`` changed: the file is read in a worker
        thread. Raises ``ResolveError`` when it names no server or cannot be used (remembered
        until the file changes)."""
        if self._nameservers:
            if self._resolver is None:
                self._resolver = _fixed_resolver(self._nameservers)
            return self._resolver
        stamp = _stamp(self._path)
        if self._resolver is not None and stamp == self._stamp:
            return self._resolver
        if self._broken is not None and self._broken[0] == stamp:
            raise ResolveError(self._broken[1])
        try:
            resolver = await trio.to_thread.run_sync(
                _configured_resolver, self._path, abandon_on_cancel=True
            )
        except dns.resolver.NoResolverConfiguration:
            why = f"no name servers configured in {self._path}"
        except (dns.exception.DNSException, ValueError, OSError) as error:
            why = f"unusable {self._path} ({_why(error)})"
        else:
            self._resolver, self._stamp, self._broken = resolver, stamp, None
            return resolver
        self._broken = (stamp, why)
        raise ResolveError(why)


def _configured_resolver(path: str) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(filename=path)
    resolver.lifetime = LOOKUP_LIMIT + 1.0  # ours (trio's clock) ends a lookup first
    return resolver


def _fixed_resolver(nameservers: Sequence[tuple[str, int]]) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in nameservers]
    resolver.lifetime = LOOKUP_LIMIT + 1.0
    return resolver


async def both_families(name: str, ask: FamilyQuery) -> DnsAnswer:
    """AAAA and A of ``name`` at once through ``ask``, combined (IPv6 first, interleaved; the
    smaller TTL of the families that have addresses). Once one family has addresses the other
    gets ``RESOLUTION_DELAY`` more; then it is cancelled and counts as missing. Raises
    ``ResolveError`` when neither has an address (with the first failure's reason, if any)."""
    results: dict[dns.rdatatype.RdataType, DnsAnswer | ResolveError] = {}
    async with trio.open_nursery() as nursery:
        for rdtype in _FAMILIES:
            nursery.start_soon(_ask_family, ask, name, rdtype, results, nursery.cancel_scope)
    return _combine(results)


async def _ask_family(
    ask: FamilyQuery,
    name: str,
    rdtype: dns.rdatatype.RdataType,
    results: dict[dns.rdatatype.RdataType, DnsAnswer | ResolveError],
    lookup: trio.CancelScope,
) -> None:
    """One family into ``results``; the first to find addresses while the other is still out
    gives that one ``RESOLUTION_DELAY`` (the deadline of the ``lookup`` scope)."""
    try:
        answer = await ask(name, rdtype)
    except ResolveError as error:
        results[rdtype] = error
        return
    results[rdtype] = answer
    if answer.addresses and len(results) < len(_FAMILIES):
        lookup.deadline = min(lookup.deadline, trio.current_time() + RESOLUTION_DELAY)


def _combine(results: Mapping[dns.rdatatype.RdataType, DnsAnswer | ResolveError]) -> DnsAnswer:
    """One answer from the AAAA and A results (a family absent from ``results`` was cancelled):
    the addresses of both, the smaller TTL; a family that failed counts only when the other
    found nothing either."""
    families: list[tuple[str, ...]] = []
    ttls: list[float] = []
    failure: ResolveError | None = None
    for rdtype in _FAMILIES:
        result = results.get(rdtype)
        if isinstance(result, ResolveError):
            failure = failure or result
        elif result is not None and result.addresses:
            families.append(result.addresses)
            ttls.append(result.ttl)
            continue
        families.append(())
    addresses = interleave(*families)
    if not addresses:
        raise ResolveError("no A or AAAA records" if failure is None else failure.why)
    return DnsAnswer(addresses, min(ttls))


def interleave(first: Sequence[str], second: Sequence[str]) -> tuple[str, ...]:
    """``first[0], second[0], first[1], second[1], …``, the longer one's rest at the end."""
    pairs = itertools.zip_longest(first, second)
    return tuple(address for pair in pairs for address in pair if address is not None)


def _why(error: dns.exception.DNSException | ValueError | OSError) -> str:
    if isinstance(error, dns.exception.DNSException):
        return describe(error)
    return str(error) or type(error).__name__


def describe(error: dns.exception.DNSException) -> str:
    """Why a DNS query failed, in a few words."""
    match error:
        case dns.resolver.NXDOMAIN():
            return "no such host"
        case dns.resolver.NoAnswer():
            return "no A or AAAA records"
        case dns.exception.Timeout():
            return "timed out"
        case dns.resolver.NoNameservers():
            errors = error.kwargs.get("errors") or ()
            first = f" ({errors[0][3]})" if errors else ""
            return f"no name server could answer{first}"
        case _:
            return str(error) or type(error).__name__


# -- the cache ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    """A cached lookup: ``addresses`` (empty when it failed, ``why`` then says why) until
    ``expires`` on trio's clock."""

    expires: float
    addresses: tuple[str, ...]
    why: str = ""


class _RunCache:
    """What one trio run knows: answers by name, and an event per lookup in flight."""

    __slots__ = ("entries", "pending")

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}
        self.pending: dict[str, trio.Event] = {}


class Resolver:
    """Host name → addresses: ``/etc/hosts``, then DNS through a TTL cache with one query in
    flight per name (see the module docstring). ``query`` replaces ``SystemDns()`` (tests),
    ``hosts`` the path of the hosts file, ``max_names`` the cache's bound."""

    __slots__ = ("_hosts", "_max_names", "_query", "_runs")

    def __init__(
        self, query: Query | None = None, *, hosts: str = HOSTS_PATH, max_names: int = MAX_NAMES
    ) -> None:
        if max_names < 1:
            raise ValueError("max_names must be >= 1")
        self._query: Query = query if query is not None else SystemDns()
        self._hosts = HostsFile(hosts)
        self._max_names = max_names
        self._runs: trio.lowlevel.RunVar[_RunCache] = trio.lowlevel.RunVar("a3s_resolver")

    async def resolve(self, host: str) -> tuple[str, ...]:
        """The addresses of ``host`` in the order to try them (never empty); an IP literal is
        its own answer. A checkpoint only when it asks DNS. Raises ``ConnectFailed("resolve",
        'cannot resolve "<host>": <why>')``."""
        if is_ip_literal(host):
            return (host,)
        name = host.lower()
        found = self._hosts.lookup(name.rstrip("."))
        if found is not None:
            return found
        entry = await self._cached(name)
        if entry.addresses:
            return entry.addresses
        raise ConnectFailed("resolve", f'cannot resolve "{host}": {entry.why}')

    async def _cached(self, name: str) -> _Entry:
        """A fresh entry for ``name``: the cached one, the one a lookup in flight stores, or a
        new lookup's (run by this task, which others then wait for)."""
        cache = self._run_cache()
        while True:
            entry = cache.entries.get(name)
            if entry is not None and entry.expires > trio.current_time():
                return entry
            pending = cache.pending.get(name)
            if pending is None:
                break
            await pending.wait()  # then look again: its runner may have been cancelled
        done = cache.pending[name] = trio.Event()
        try:
            entry = await self._look_up(name)
            self._store(cache, name, entry)
        finally:
            del cache.pending[name]
            done.set()
        return entry

    async def _look_up(self, name: str) -> _Entry:
        why = "timed out"
        with trio.move_on_after(LOOKUP_LIMIT):
            try:
                answer = await self._query(name)
            except ResolveError as error:
                why = error.why
            except (dns.exception.DNSException, ValueError, OSError) as error:  # any ``Query``
                why = _why(error)
            else:
                if answer.addresses:
                    ttl = min(max(MIN_TTL, answer.ttl), MAX_TTL)  # NaN: MIN_TTL
                    return _Entry(trio.current_time() + ttl, answer.addresses)
                why = "no A or AAAA records"
        return _Entry(trio.current_time() + NEGATIVE_TTL, (), why)

    def _store(self, cache: _RunCache, name: str, entry: _Entry) -> None:
        entries = cache.entries
        entries.pop(name, None)  # stored again: now the newest
        if len(entries) >= self._max_names:
            del entries[next(iter(entries))]
        entries[name] = entry

    def _run_cache(self) -> _RunCache:
        try:
            return self._runs.get()
        except LookupError:
            cache = _RunCache()
            self._runs.set(cache)
            return cache


#: The gateway's resolver: the dialer's, for every connection to a backend named by host name.
RESOLVER: Final = Resolver()
