"""The DNS provider's resolver (SPEC §10.4): what one question answers (``Records``,
``NoRecords``, ``LookupFailed``), the ``Resolver`` protocol ``providers/dns.py`` asks, and
``DnspythonResolver``, the production resolver.

Ring 1 (trio, UDP/TCP through dnspython). ``DnspythonResolver`` is dnspython's async stub
resolver asked for the trio backend by name (``dns.asyncbackend.get_backend("trio")``) on every
query: left to itself dnspython sniffs the running library with ``sniffio`` once and keeps the
result as a process-wide default, which another caller (an asyncio thread) could have set.
Nameservers come from ``providers.dns.nameservers`` (``ip``, ``ip:port``, ``[v6]:port``;
``parse_nameserver``) or else from ``/etc/resolv.conf`` (read off the event loop until it could
be used, then kept; its search list applies to names without a trailing dot, as for the system
resolver). A file dnspython cannot use (a ``nameserver`` that is not an IP address, an
over-long ``search`` label) fails every query with ``LookupFailed("invalid resolver
configuration (<path>): <why>")``; a missing file, or one naming no server, with ``no resolver
configuration (<path>): <why>``. No cache: every query goes to the nameservers.

What an answer becomes: a positive answer is ``Records`` with the shortest TTL of the answer
(CNAME chain included) and, for SRV, the addresses the server added for the targets (the
additional section); NXDOMAIN and NODATA raise ``NoRecords`` with the negative TTL of the SOA
in the authority section (RFC 2308 §5: the SOA's own TTL capped by its ``minimum``); a
timeout, SERVFAIL, REFUSED or no nameserver answering raise ``LookupFailed`` with a one-line
message that is the same for the same cause (no query ids or timings), since the provider
compares messages to log a change of problem once.

Nurseries: none. Deadlines: every query is bounded by ``query_timeout`` (``QUERY_TIMEOUT``,
5 s): dnspython's lifetime and a trio ``fail_after`` around it; reading ``resolv.conf`` runs in
a worker thread. Must not: block the event loop, cache answers, or raise anything but
``NoRecords`` and ``LookupFailed`` out of ``query``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol

import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.resolver
import trio

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "QUERY_TIMEOUT",
    "DnspythonResolver",
    "LookupFailed",
    "NoRecords",
    "RecordKind",
    "Records",
    "Resolver",
    "SrvRecord",
    "TargetAddresses",
    "parse_nameserver",
]

#: The bound of one query (dnspython's lifetime, retries over the nameservers included).
QUERY_TIMEOUT: Final = 5.0

RecordKind = Literal["A", "AAAA", "SRV"]


# -- what a resolver answers -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One SRV record (RFC 2782); ``target`` is absolute and lower-case (``api.test.``)."""

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class TargetAddresses:
    """The A and AAAA addresses of one name and the shortest TTL among them."""

    addresses: tuple[str, ...]
    ttl: int


def _no_additional() -> Mapping[str, TargetAddresses]:
    return {}


@dataclass(frozen=True, slots=True)
class Records:
    """One positive answer. ``ttl``: the shortest TTL of the answer (CNAME chain included).
    ``addresses`` for A/AAAA, ``srv`` for SRV; ``additional``: the addresses the server added
    for names in the answer (SRV targets), by absolute lower-case name."""

    ttl: int
    addresses: tuple[str, ...] = ()
    srv: tuple[SrvRecord, ...] = ()
    additional: Mapping[str, TargetAddresses] = field(default_factory=_no_additional)


class NoRecords(Exception):  # noqa: N818 - an answer, not an error: the name has no such records
    """A negative answer: ``NXDOMAIN`` (no such name) or ``NODATA`` (no records of the type).
    ``ttl``: the negative-caching TTL from the SOA (RFC 2308), when the answer had one."""

    def __init__(self, kind: Literal["NXDOMAIN", "NODATA"], ttl: int | None = None) -> None:
        super().__init__(kind)
        self.kind: Literal["NXDOMAIN", "NODATA"] = kind
        self.ttl = ttl


class LookupFailed(Exception):  # noqa: N818 - the name says what happened to the lookup
    """No usable answer (timeout, SERVFAIL, REFUSED, no nameserver answering); the message is
    one line, the same for the same cause (it is compared to log a change only once)."""


class Resolver(Protocol):
    """Answers one question; ``DnspythonResolver`` in production, a script in tests."""

    async def query(self, name: str, kind: RecordKind, /) -> Records:
        """The records of ``kind`` for ``name``. Raises ``NoRecords`` or ``LookupFailed``;
        bounded by the resolver itself."""
        ...


# -- nameservers -------------------------------------------------------------------------------


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"10.0.0.2"``, ``"10.0.0.2:5353"``, ``"::1"``, ``"[::1]"`` or ``"[::1]:5353"`` →
    ``(address, port)`` (port 53 when absent). Raises ``ValueError``."""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f'nameserver "{text}" is invalid: expected ip or ip:port')
            port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f'nameserver "{text}" is invalid: expected ip or ip:port') from None
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f'nameserver "{text}" has an invalid port')
    return address.compressed, int(port)


# -- dnspython ---------------------------------------------------------------------------------


class DnspythonResolver:
    """dnspython's async stub resolver on trio's backend, with no cache.

    ``nameservers``: ``(address, port)`` pairs; empty = the system's ``resolv_conf`` (read at
    the first query, off the event loop, then kept). Each ``query`` is bounded by
    ``query_timeout``.
    """

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]] = (),
        *,
        query_timeout: float = QUERY_TIMEOUT,
        resolv_conf: str = "/etc/resolv.conf",
    ) -> None:
        self._nameservers = tuple(nameservers)
        self._query_timeout = query_timeout
        self._resolv_conf = resolv_conf
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._building = trio.Lock()  # the entries' tasks start together: build it once

    async def query(self, name: str, kind: RecordKind, /) -> Records:
        """See ``Resolver.query``."""
        resolver = await self._configured()
        backend = dns.asyncbackend.get_backend("trio")
        try:
            with trio.fail_after(self._query_timeout):
                answer = await resolver.resolve(
                    name, kind, lifetime=self._query_timeout, backend=backend
                )
        except (trio.TooSlowError, dns.exception.Timeout):
            raise LookupFailed(f"timed out after {self._query_timeout:g} s") from None
        except dns.resolver.NXDOMAIN as error:
            raise NoRecords("NXDOMAIN", _nxdomain_ttl(error)) from None
        except dns.resolver.NoAnswer as error:
            raise NoRecords("NODATA", _negative_ttl(error.kwargs.get("response"))) from None
        except dns.resolver.NoNameservers as error:
            raise LookupFailed(_no_nameservers(error)) from None
        except (dns.exception.DNSException, OSError, ValueError) as error:
            raise LookupFailed(f"{type(error).__name__}: {error}") from None
        return _records(answer, kind)

    async def _configured(self) -> dns.asyncresolver.Resolver:
        async with self._building:
            if self._resolver is None:
                try:
                    self._resolver = await trio.to_thread.run_sync(self._build)
                except (dns.resolver.NoResolverConfiguration, OSError) as error:
                    message = f"no resolver configuration ({self._resolv_conf}): {error}"
                    raise LookupFailed(message) from None
                except (dns.exception.DNSException, ValueError) as error:
                    why = str(error) or type(error).__name__
                    message = f"invalid resolver configuration ({self._resolv_conf}): {why}"
                    raise LookupFailed(message) from None
            return self._resolver

    def _build(self) -> dns.asyncresolver.Resolver:
        if self._nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(address, port) for address, port in self._nameservers
            ]
        else:
            resolver = dns.asyncresolver.Resolver(filename=self._resolv_conf)
            resolver.use_search_by_default = True
        resolver.cache = None
        return resolver


def _records(answer: dns.resolver.Answer, kind: RecordKind) -> Records:
    ttl = int(answer.chaining_result.minimum_ttl)
    rrset = answer.rrset
    rdatas = list(rrset) if rrset is not None else []
    if kind != "SRV":
        addresses = tuple(
            str(rdata.address)
            for rdata in rdatas
            if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA)
        )
        return Records(ttl=ttl, addresses=addresses)
    srv = tuple(
        SrvRecord(
            priority=int(rdata.priority),
            weight=int(rdata.weight),
            port=int(rdata.port),
            target=_name_text(rdata.target),
        )
        for rdata in rdatas
        if isinstance(rdata, dns.rdtypes.IN.SRV.SRV)
    )
    return Records(ttl=ttl, srv=srv, additional=_additional(answer.response))


def _name_text(name: object) -> str:
    assert isinstance(name, dns.name.Name)
    return name.canonicalize().to_text()


def _additional(response: dns.message.Message) -> Mapping[str, TargetAddresses]:
    found: dict[str, TargetAddresses] = {}
    for rrset in response.additional:
        if rrset.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
            continue
        key = _name_text(rrset.name)
        addresses = tuple(
            str(rdata.address)
            for rdata in rrset
            if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA)
        )
        before = found.get(key)
        if before is not None:
            addresses = before.addresses + addresses
        ttl = int(rrset.ttl) if before is None else min(before.ttl, int(rrset.ttl))
        found[key] = TargetAddresses(addresses=addresses, ttl=ttl)
    return found


def _negative_ttl(response: object) -> int | None:
    """RFC 2308 §5: the SOA's own TTL, capped by its ``minimum`` field."""
    if not isinstance(response, dns.message.Message):
        return None
    for rrset in response.authority:
        for rdata in rrset:
            if isinstance(rdata, dns.rdtypes.ANY.SOA.SOA):
                return min(int(rrset.ttl), int(rdata.minimum))
    return None


def _nxdomain_ttl(error: dns.resolver.NXDOMAIN) -> int | None:
    responses = error.kwargs.get("responses")
    if not isinstance(responses, dict):
        return None
    ttls = [ttl for ttl in map(_negative_ttl, responses.values()) if ttl is not None]
    return min(ttls, default=None)


def _no_nameservers(error: dns.resolver.NoNameservers) -> str:
    """``no nameserver answered (127.0.0.1:53 SERVFAIL; …)``: what each said, without ids or
    timings, so the same outage gives the same text."""
    said: set[str] = set()
    errors = error.kwargs.get("errors")
    for item in errors if isinstance(errors, list) else []:
        if not (isinstance(item, tuple) and len(item) >= 4):
            continue
        server, port, problem = str(item[0]), item[2], item[3]
        address = server.removeprefix("Do53:").rpartition("@")[0] or server
        what = problem if isinstance(problem, str) else type(problem).__name__
        said.add(f"{address}:{port} {what}")
    return "no nameserver answered" + (f" ({'; '.join(sorted(said))})" if said else "")
