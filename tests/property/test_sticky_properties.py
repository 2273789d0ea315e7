"""Properties of the sticky cookie (SPEC §7.6).

A minted cookie leads back to its backend until it expires; no byte edit of a value ever leads to
another backend (in fact to none, unless the edit leaves the cookie as the server reads it
unchanged); no ``Cookie`` field, however malformed, makes ``lookup`` raise or return a backend
that is unavailable; and the no-secret key is the SPEC's derivation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from hypothesis import assume, example, given
from hypothesis import strategies as st

from a3s_gateway.config.schema_services import Sticky
from a3s_gateway.services.backend import Backend
from a3s_gateway.services.sticky import StickyPool, StickySettings, derived_key
from tests.property.strategies_services import server_url

NAME = b"a3s_sticky"
SERVICE = "web"

keys = st.one_of(st.binary(min_size=16, max_size=64), st.just(derived_key(SERVICE)))
max_ages = st.one_of(st.just(0), st.integers(min_value=1, max_value=10**8))
nows = st.integers(min_value=0, max_value=2**40)
availability = st.lists(st.booleans(), min_size=1, max_size=6)


def build(flags: list[bool], key: bytes, max_age: int) -> tuple[StickyPool, list[Backend]]:
    """A pool of distinct URLs; ``flags[i]`` False makes backend i unavailable (weight 0)."""
    backends = [Backend(server_url(i), int(up), i) for i, up in enumerate(flags)]
    config = StickySettings(
        cookie=NAME.decode(),
        max_age=max_age,
        secure=None,
        http_only=True,
        same_site="lax",
        path="/",
        domain=None,
        key=key,
        keyed_by_secret=False,
    )
    return StickyPool(SERVICE, backends, config), backends


def minted(pool: StickyPool, backend: Backend, now: int) -> bytes:
    """The cookie value of the ``Set-Cookie`` field, as a browser would send it back."""
    _, field = pool.set_cookie(backend, now, tls=False)
    pair = field.split(b";", 1)[0]
    assert pair.startswith(NAME + b"=")
    return pair[len(NAME) + 1 :]


@given(availability, keys, max_ages, nows, st.data())
def test_a_minted_cookie_finds_its_backend_until_it_expires(
    flags: list[bool], key: bytes, max_age: int, now: int, data: st.DataObject
) -> None:
    pool, backends = build(flags, key, max_age)
    for backend in backends:
        value = minted(pool, backend, now)
        limit = 2**41 if max_age == 0 else now + max_age - 1
        later = data.draw(st.integers(min_value=0, max_value=limit), label="lookup time")
        found = pool.lookup([(b"cookie", NAME + b"=" + value)], later)
        assert found is (backend if backend.available else None)
        if max_age:
            assert pool.lookup([(b"cookie", NAME + b"=" + value)], now + max_age) is None


@dataclass(frozen=True, slots=True)
class Edit:
    """One byte edit: replace, insert before, or delete at ``position`` (modulo the length)."""

    kind: str
    position: int
    byte: int

    def apply(self, value: bytes) -> bytes:
        at = self.position % (len(value) + 1)
        if self.kind == "insert":
            return value[:at] + bytes([self.byte]) + value[at:]
        at = min(at, len(value) - 1)
        if self.kind == "delete":
            return value[:at] + value[at + 1 :]
        return value[:at] + bytes([self.byte]) + value[at + 1 :]


# Bytes that matter to the parser are drawn often; any other byte now and then.
cookie_bytes = st.one_of(
    st.sampled_from(b"0123456789abcdefABCDEF-_.=; \t\"'"), st.integers(min_value=0, max_value=255)
)
edits = st.builds(
    Edit,
    kind=st.sampled_from(["replace", "insert", "delete"]),
    position=st.integers(min_value=0, max_value=200),
    byte=cookie_bytes,
)


def as_read(value: bytes) -> bytes:
    """The value the server reads from ``name=<value>``: up to the first ';', trimmed."""
    return value.split(b";", 1)[0].strip(b" \t")


@given(
    availability,
    keys,
    max_ages,
    nows,
    st.lists(edits, min_size=1, max_size=4),
    st.integers(min_value=0, max_value=5),
)
@example([True, True], b"k" * 16, 60, 1000, [Edit("replace", 0, ord("1"))], 1)
@example([True, True], b"k" * 16, 60, 1000, [Edit("replace", 2, ord("0"))], 1)
@example([True, True], b"k" * 16, 0, 1000, [Edit("insert", 999, ord(" "))], 0)
@example([True, True], b"k" * 16, 0, 1000, [Edit("insert", 999, ord(";"))], 0)
@example([True, False], b"k" * 16, 0, 1000, [Edit("insert", 0, ord("\t"))], 1)
def test_no_edit_leads_to_another_backend(
    flags: list[bool],
    key: bytes,
    max_age: int,
    now: int,
    changes: list[Edit],
    target_index: int,
) -> None:
    pool, backends = build(flags, key, max_age)
    target = backends[target_index % len(backends)]
    original = minted(pool, target, now)
    value = original
    for change in changes:
        value = change.apply(value)
    found = pool.lookup([(b"cookie", NAME + b"=" + value)], now)
    if as_read(value) == original:
        assert found is (target if target.available else None)
    else:
        assert found is None


cookie_lines = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda a, b: a + NAME + b, st.binary(max_size=40), st.binary(max_size=120)),
    st.lists(
        st.tuples(st.sampled_from([NAME, b"x", b" a3s_sticky "]), st.binary(max_size=80)),
        max_size=5,
    ).map(lambda pairs: b";".join(name + b"=" + value for name, value in pairs)),
)
header_lists = st.lists(
    st.tuples(st.sampled_from([b"cookie", b"set-cookie", b"x-other"]), cookie_lines), max_size=5
)


@given(availability, keys, max_ages, nows, header_lists)
@example([True], b"k" * 16, 0, 0, [(b"cookie", NAME + b"=1." + b"\xff" * 16 + b".0.x")])
@example([True], b"k" * 16, 0, 0, [(b"cookie", NAME + b"=1.0011223344556677.\xd9\xa3.x")])
def test_arbitrary_cookie_fields_never_raise(
    flags: list[bool],
    key: bytes,
    max_age: int,
    now: int,
    headers: list[tuple[bytes, bytes]],
) -> None:
    pool, _ = build(flags, key, max_age)
    # Never raises; and random bytes cannot carry a valid MAC, so nothing is found.
    assert pool.lookup(headers, now) is None


@given(
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z"),
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z"),
    nows,
)
def test_the_no_secret_key_is_the_spec_derivation(service: str, other: str, now: int) -> None:
    assume(service != other)
    compiled = StickySettings.from_config(Sticky(), service)
    assert compiled.key == hashlib.sha256(b"a3s-sticky\n" + service.encode()).digest()
    assert not compiled.keyed_by_secret
    # A cookie minted by one service's pool does not validate in another's, even for the same
    # server URL: both the bid and the key differ.
    backend = Backend(server_url(0))
    mine = StickyPool(service, [backend], compiled)
    theirs = StickyPool(other, [backend], StickySettings.from_config(Sticky(), other))
    value = minted(mine, backend, now)
    assert mine.lookup([(b"cookie", NAME + b"=" + value)], now) is backend
    assert theirs.lookup([(b"cookie", NAME + b"=" + value)], now) is None
