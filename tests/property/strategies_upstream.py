"""Hypothesis strategies for the upstream pool properties (DESIGN.md §3.7 "Pool").

Kept apart from ``strategies.py`` by that file's owner's request; same rules: every strategy says
what it generates. Operations are plain values interpreted by ``test_pool_properties.py``;
``pick`` fields index (modulo) whatever the operation applies to, so every generated sequence is
valid and shrinks well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

from hypothesis import strategies as st

from a3s_gateway.upstream.peer import Peer, PoolSettings

#: The peers the operations spread over (two plaintext, one TLS: all distinct keys).
PEERS: Final = (
    Peer("http", "10.0.0.1", 80),
    Peer("http", "10.0.0.2", 80),
    Peer("https", "10.0.0.1", 443, tls=True, server_name="a.test"),
)


@dataclass(frozen=True)
class Acquire:
    """An exchange asks for a connection to ``PEERS[peer]``; a reused one is found ``dead``.

    ``timeout`` (when not None) is a new ``idle_conn_timeout`` for that peer from now on, as
    after a config reload; the connection limits never change, so they stay invariants.
    """

    peer: int
    dead: bool
    timeout: float | None = None


@dataclass(frozen=True)
class Release:
    """``count`` held connections come back one after the other, ``reusable`` or not (several
    at once is what builds deep idle stacks)."""

    pick: int
    reusable: bool
    count: int = 1


@dataclass(frozen=True)
class FinishDial:
    """A dial in progress succeeds (``ok``) or fails or is cancelled."""

    pick: int
    ok: bool


@dataclass(frozen=True)
class Resume:
    """A waiter that was granted a connection or a dial permit runs; a handed-over connection
    turns out ``dead``."""

    pick: int
    dead: bool


@dataclass(frozen=True)
class Cancel:
    """A waiter gives up (its deadline passed), whether still queued or already granted."""

    pick: int


@dataclass(frozen=True)
class Advance:
    """Time passes and the reaper runs."""

    seconds: float


PoolOp: TypeAlias = Acquire | Release | FinishDial | Resume | Cancel | Advance

_PICK: Final = st.integers(min_value=0, max_value=7)
_TIMEOUTS: Final = (0.0, 1.0, 2.5, 10.0)
#: Mostly unchanged settings; sometimes a reload with another idle timeout.
_RETUNE: Final = st.sampled_from((None,) * 6 + _TIMEOUTS)
#: Biased to the first peer, so one peer's stack and queue get deep; the others check isolation.
_PEER_INDEX: Final = st.sampled_from((0, 0, 0, 1, 2))
#: Mostly successful dials, so connections accumulate.
_DIAL_OK: Final = st.sampled_from((True, True, True, False))


def pool_settings() -> st.SearchStrategy[PoolSettings]:
    """Small limits, so the sequences reach them: 0–3 idle, 1–4 connections, short timeouts
    (0 expires a connection the moment it is released). Weighted towards the roomier values,
    which Hypothesis would otherwise rarely pick, so that idle stacks get deep."""
    return st.builds(
        PoolSettings,
        max_idle_per_backend=st.sampled_from((0, 1, 2, 3, 3, 3)),
        idle_conn_timeout=st.sampled_from((*_TIMEOUTS, 10.0, 10.0)),
        max_conns_per_backend=st.sampled_from((1, 2, 3, 4, 4, 4)),
    )


def peer_settings() -> st.SearchStrategy[tuple[PoolSettings, ...]]:
    """One ``PoolSettings`` per entry of ``PEERS``."""
    return st.tuples(*(pool_settings() for _ in PEERS))


def pool_ops() -> st.SearchStrategy[PoolOp]:
    """One pool operation; acquires are the most frequent so the limits get hit."""
    return st.one_of(
        st.builds(Acquire, _PEER_INDEX, st.booleans(), _RETUNE),
        st.builds(Acquire, _PEER_INDEX, st.just(False), _RETUNE),
        st.builds(
            Release,
            _PICK,
            st.sampled_from((True, True, False)),
            st.integers(min_value=1, max_value=3),
        ),
        st.builds(FinishDial, _PICK, _DIAL_OK),
        st.builds(Resume, _PICK, st.booleans()),
        st.builds(Cancel, _PICK),
        st.builds(Advance, st.sampled_from((0.0, 0.5, 0.5, 1.0, 2.5, 4.0, 11.0))),
    )


def pool_op_sequences() -> st.SearchStrategy[list[PoolOp]]:
    """Random sequences of pool operations over ``PEERS``; at least 20 long, because reaching
    a limit, an idle stack and a waiter queue at once takes a dozen steps."""
    return st.lists(pool_ops(), min_size=20, max_size=100)
