"""``MirrorSampler`` and ``BodyCopy`` (SPEC §7.7): any first n requests mirror ⌊n·p/100⌋ or
⌈n·p/100⌉ of them, spread evenly; a body copy keeps everything up to its bound and nothing
once past it."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from a3s_gateway.services.mirror_sampling import BodyCopy, MirrorSampler


@given(
    percentage=st.one_of(st.integers(0, 100).map(float), st.floats(0.0, 100.0)),
    n=st.integers(1, 500),
)
def test_any_prefix_mirrors_floor_or_ceil_of_its_share(percentage: float, n: int) -> None:
    sampler = MirrorSampler(percentage)
    taken = 0
    for i in range(1, n + 1):
        taken += sampler.take()
        share = i * percentage / 100
        # Float accumulation may land a hair either side of an exact boundary.
        assert math.floor(share - 1e-9) <= taken <= math.ceil(share + 1e-9)


def test_ten_percent_is_every_tenth_request() -> None:
    sampler = MirrorSampler(10)
    assert [i for i in range(1, 31) if sampler.take()] == [10, 20, 30]


@given(limit=st.integers(0, 200), chunks=st.lists(st.binary(max_size=60), max_size=10))
def test_a_body_copy_is_exact_until_it_overflows(limit: int, chunks: list[bytes]) -> None:
    copy = BodyCopy(limit)
    kept = [copy.add(chunk) for chunk in chunks]
    total = sum(map(len, chunks))
    if total <= limit:
        assert all(kept)
        assert copy.value() == b"".join(chunks)
        assert not copy.overflowed
    else:
        assert copy.overflowed
        assert copy.value() == b""
        assert not kept[-1]
