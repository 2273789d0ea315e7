"""Properties of ``tcp-filter`` counting (SPEC §6.4): each admitted connection gives its count back
exactly once, however it ends, so after any mix of admissions, releases, double releases and
context-manager exits (normal, by an exception, by a cancellation-like ``BaseException``) every
filter's ``active`` is the number of its unreleased tickets, never above ``max_connections``,
and zero once every connection ended."""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from a3s_gateway.middleware.tcp_filter import FilterTicket, TcpFilter
from a3s_gateway.routing.request import PeerAddress, parse_peer

#: Client addresses, as ``parse_peer`` reads them (None: a peer text that does not parse).
ADDRESSES: tuple[PeerAddress | None, ...] = (
    parse_peer("10.0.0.1"),
    parse_peer("[::ffff:10.0.0.2]:80"),
    parse_peer("192.0.2.9:443"),
    parse_peer("2001:db8::1"),
    parse_peer("garbage"),
)
NETWORKS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))


class EndedError(Exception):
    """A connection that ended by an error inside its ``with`` block."""


class Aborted(BaseException):
    """A connection that ended by something that is not an ``Exception`` (a cancellation)."""


@dataclass(frozen=True)
class Settings:
    allowlisted: bool
    max_connections: int | None


@dataclass(frozen=True)
class Admit:
    """One connection through the filters ``route`` (indices), as ``serve_tcp`` admits it: a
    ticket per filter in an ``ExitStack``, all given back if one filter refuses."""

    route: tuple[int, ...]
    address: int


@dataclass(frozen=True)
class Release:
    """``release()`` on an admitted connection's tickets, ``times`` times (idempotence)."""

    pick: int
    times: int


@dataclass(frozen=True)
class Exit:
    """An admitted connection's ``with`` blocks end: ``how`` is ``ok``, ``error`` or
    ``abort``; ``released_inside``: it released a ticket before the block ended."""

    pick: int
    how: str
    released_inside: bool


Operation = Admit | Release | Exit

FILTER_SETTINGS = st.lists(
    st.builds(Settings, st.booleans(), st.none() | st.integers(1, 4)), min_size=1, max_size=4
)


def operations(filters: int) -> st.SearchStrategy[list[Operation]]:
    route = st.lists(st.integers(0, filters - 1), min_size=1, max_size=filters, unique=True)
    admit = st.builds(Admit, route.map(tuple), st.integers(0, len(ADDRESSES) - 1))
    release = st.builds(Release, st.integers(0, 1000), st.integers(1, 3))
    end = st.builds(
        Exit, st.integers(0, 1000), st.sampled_from(["ok", "error", "abort"]), st.booleans()
    )
    return st.lists(admit | release | end, max_size=60)


def allowed(settings: Settings, address: PeerAddress | None) -> bool:
    if not settings.allowlisted:
        return True
    return address is not None and any(address in network for network in NETWORKS)


class Model:
    """The filters under test and what their counts must be."""

    def __init__(self, settings: list[Settings]) -> None:
        self.settings = settings
        self.filters = [
            TcpFilter(
                f"f{index}",
                allowed=NETWORKS if s.allowlisted else (),
                max_connections=s.max_connections,
            )
            for index, s in enumerate(settings)
        ]
        #: Admitted connections: their tickets (one per filter of the route) and the index
        #: of the filter each came from.
        self.open: list[list[tuple[int, FilterTicket]]] = []

    def expected(self, index: int) -> int:
        return sum(
            1
            for tickets in self.open
            for owner, ticket in tickets
            if owner == index and not ticket.released
        )

    def has_room(self, index: int, address: PeerAddress | None) -> bool:
        limit = self.settings[index].max_connections
        if limit is not None and self.filters[index].active >= limit:
            return False
        return allowed(self.settings[index], address)

    def check(self) -> None:
        for index, (owner, settings) in enumerate(zip(self.filters, self.settings, strict=True)):
            assert owner.active == self.expected(index)
            assert owner.active >= 0
            if settings.max_connections is not None:
                assert owner.active <= settings.max_connections

    def admit(self, op: Admit) -> None:
        address = ADDRESSES[op.address]
        room = all(self.has_room(index, address) for index in op.route)
        before = [owner.active for owner in self.filters]
        tickets: list[tuple[int, FilterTicket]] = []
        with contextlib.ExitStack() as stack:
            for index in op.route:
                ticket = self.filters[index].admit(address)
                if ticket is None:
                    break
                tickets.append((index, stack.enter_context(ticket)))
            else:
                stack.pop_all()
                self.open.append(tickets)
        if room:
            assert self.open
            assert self.open[-1] is tickets
        else:
            assert [owner.active for owner in self.filters] == before  # all given back

    def release(self, op: Release) -> None:
        if not self.open:
            return
        tickets = self.open[op.pick % len(self.open)]
        for _ in range(op.times):
            for _, ticket in tickets:
                ticket.release()
        assert all(ticket.released for _, ticket in tickets)

    def exit(self, op: Exit) -> None:
        if not self.open:
            return
        tickets = self.open.pop(op.pick % len(self.open))
        with contextlib.suppress(EndedError, Aborted), contextlib.ExitStack() as stack:
            for _, ticket in tickets:
                stack.enter_context(ticket)
            if op.released_inside:
                tickets[0][1].release()
            if op.how == "error":
                raise EndedError
            if op.how == "abort":
                raise Aborted
        assert all(ticket.released for _, ticket in tickets)
        self.open.append(tickets)  # kept: a later Release on it must not count twice

    def run(self, op: Operation) -> None:
        if isinstance(op, Admit):
            self.admit(op)
        elif isinstance(op, Release):
            self.release(op)
        else:
            self.exit(op)
        self.check()

    def end_all(self) -> None:
        for tickets in reversed(self.open):
            with contextlib.ExitStack() as stack:
                for _, ticket in tickets:
                    stack.enter_context(ticket)
        self.check()
        assert all(owner.active == 0 for owner in self.filters)


@given(FILTER_SETTINGS.flatmap(lambda s: st.tuples(st.just(s), operations(len(s)))))
def test_counts_match_unreleased_tickets_and_return_to_zero(
    case: tuple[list[Settings], list[Operation]],
) -> None:
    settings, ops = case
    model = Model(settings)
    for op in ops:
        model.run(op)
    model.end_all()


@given(st.integers(1, 5), st.lists(st.booleans(), max_size=40))
def test_active_never_exceeds_the_limit_under_pressure(
    limit: int, admit_or_release: list[bool]
) -> None:
    """Admissions beyond the limit are refused and take nothing; a release makes room for one."""
    tcp_filter = TcpFilter("limit", max_connections=limit)
    held: list[FilterTicket] = []
    for admit in admit_or_release:
        if admit:
            ticket = tcp_filter.admit(None)
            assert (ticket is None) == (len(held) == limit)
            if ticket is not None:
                held.append(ticket)
        elif held:
            held.pop(0).release()
        assert tcp_filter.active == len(held) <= limit
    for ticket in held:
        ticket.release()
        ticket.release()
    assert tcp_filter.active == 0
