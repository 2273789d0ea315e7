"""Properties of the discovery provider's choices (SPEC §10.5): which instance's routes win, and
how its routers are named.

- ``version_key`` agrees with a reference comparison written from the SemVer 2.0.0 text (a
  leading ``v`` allowed; build metadata ignored): semantic versions by precedence, free-form
  versions as strings, every semantic version above every free-form one; and it is a total
  order (comparable, transitive, antisymmetric on keys).
- ``newest`` picks a highest version and, on a tie, the first listed (the seed order).
- Router names: ``discovered-<name>`` for one route, ``discovered-<name>-<i>`` otherwise, unique
  within a service; a provider that polls instances of one service serves the routes of the
  reference choice under exactly those names.
"""

from __future__ import annotations

import json
from functools import cmp_to_key
from itertools import pairwise

import msgspec
from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.config.schema import DiscoveryProvider
from a3s_gateway.config.values import dec_hook
from a3s_gateway.providers.discovery import (
    WELL_KNOWN,
    ServiceDiscovery,
    newest,
    router_name,
    version_key,
)
from a3s_gateway.providers.http_fetch import Fetched

# -- a reference reading of SemVer 2.0.0 ----------------------------------------------------

_ALNUM = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-")
Parsed = tuple[tuple[int, int, int], list[str] | None]


def _numeric(text: str) -> bool:
    return text.isascii() and text.isdigit() and (text == "0" or not text.startswith("0"))


def reference_parse(version: str) -> Parsed | None:
    """(major, minor, patch), pre-release identifiers (None for a release); None when
    ``version`` is not a semantic version."""
    text = version[1:] if version[:1] in ("v", "V") else version
    text, plus, build = text.partition("+")
    if plus and not all(part and set(part) <= _ALNUM for part in build.split(".")):
        return None
    core, dash, pre = text.partition("-")
    numbers = core.split(".")
    if len(numbers) != 3 or not all(_numeric(number) for number in numbers):
        return None
    identifiers = pre.split(".") if dash else None
    for identifier in identifiers or ():
        if not identifier or not set(identifier) <= _ALNUM:
            return None
        if identifier.isdigit() and not _numeric(identifier):
            return None  # a numeric identifier with a leading zero
    major, minor, patch = (int(number) for number in numbers)
    return (major, minor, patch), identifiers


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def _compare_identifiers(left: str, right: str) -> int:
    if left.isdigit() and right.isdigit():
        return _sign(int(left) - int(right))
    if left.isdigit() != right.isdigit():
        return -1 if left.isdigit() else 1  # numeric identifiers are lower
    return (left > right) - (left < right)


def _compare_pre(left: list[str] | None, right: list[str] | None) -> int:
    if left is None or right is None:
        return (left is None) - (right is None)  # a release is above its pre-releases
    for one, other in zip(left, right, strict=False):
        found = _compare_identifiers(one, other)
        if found:
            return found
    return _sign(len(left) - len(right))


def reference_compare(left: str, right: str) -> int:
    """-1, 0 or 1: the order SPEC §10.5 and the module docstring describe."""
    a, b = reference_parse(left), reference_parse(right)
    if a is None and b is None:
        return (left > right) - (left < right)
    if a is None or b is None:
        return -1 if a is None else 1
    for one, other in zip(a[0], b[0], strict=True):
        if one != other:
            return _sign(one - other)
    return _compare_pre(a[1], b[1])


def key_compare(left: str, right: str) -> int:
    a, b = version_key(left), version_key(right)
    return (a > b) - (a < b)


# -- strategies -----------------------------------------------------------------------------

_numbers = st.integers(0, 30).map(str)
_word = st.text("abcXYZ-019", min_size=1, max_size=5)
_identifier = st.one_of(_numbers, _word)


@st.composite
def semantic_versions(draw: st.DrawFn) -> str:
    core = ".".join(draw(_numbers) for _ in range(3))
    pre = draw(st.lists(_identifier, max_size=3))
    build = draw(st.lists(_word, max_size=2))
    prefix = draw(st.sampled_from(["", "", "v", "V"]))
    text = prefix + core + ("-" + ".".join(pre) if pre else "")
    return text + ("+" + ".".join(build) if build else "")


@st.composite
def near_misses(draw: st.DrawFn) -> str:
    """Strings that look like semantic versions and may or may not be one."""
    parts = draw(st.lists(st.sampled_from(["0", "1", "01", "10", "2", ""]), min_size=1, max_size=4))
    tail = draw(st.sampled_from(["", "-", "-rc", "-01", "-rc.01", "+", "+b", "-a+", "..", "x"]))
    return ".".join(parts) + tail


versions = st.one_of(
    semantic_versions(), near_misses(), st.text(max_size=8), st.sampled_from(["latest", ""])
)


# -- version order --------------------------------------------------------------------------


@given(versions, versions)
@example("1.10.0", "1.9.0")
@example("1.0.0-alpha", "1.0.0")
@example("1.0.0+build.1", "1.0.0+build.2")
@example("v1.2.3", "1.2.3")
@example("1.0.0-01", "1.0.0-1")
@example("zzz", "0.0.1")
def test_the_version_order_is_the_reference_order(left: str, right: str) -> None:
    assert key_compare(left, right) == reference_compare(left, right)
    assert (version_key(left).semantic) == (reference_parse(left) is not None)


def test_the_semver_specification_example_chain_ascends() -> None:
    chain = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "2.0.0",
        "10.0.0",
    ]
    keys = [version_key(version) for version in chain]
    assert all(low < high for low, high in pairwise(keys))


@given(versions, versions, versions)
def test_the_version_order_is_total(a: str, b: str, c: str) -> None:
    ka, kb, kc = version_key(a), version_key(b), version_key(c)
    assert ka <= kb or kb <= ka
    if ka <= kb and kb <= kc:
        assert ka <= kc
    if ka <= kb and kb <= ka:
        assert ka == kb
        assert reference_compare(a, b) == 0


@given(st.lists(versions, max_size=8))
def test_sorting_by_the_key_agrees_with_the_reference(values: list[str]) -> None:
    ordered = sorted(values, key=version_key)
    assert ordered == sorted(values, key=cmp_to_key(reference_compare))
    assert all(reference_compare(a, b) <= 0 for a, b in pairwise(ordered))


@given(st.lists(versions, min_size=1, max_size=8))
def test_newest_is_a_highest_version_and_the_first_on_a_tie(values: list[str]) -> None:
    chosen = newest(values)
    assert all(reference_compare(values[chosen], other) >= 0 for other in values)
    assert all(reference_compare(values[chosen], other) > 0 for other in values[:chosen])


@given(versions)
def test_equal_versions_tie_and_the_first_listed_wins(version: str) -> None:
    assert newest([version, version, version]) == 0
    assert newest(["0.0.0-a", version, version]) == (
        0 if key_compare(version, "0.0.0-a") < 0 else 1
    )


# -- router names ---------------------------------------------------------------------------

_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(_names, st.integers(1, 20))
def test_router_names_are_unique_within_a_service(service: str, count: int) -> None:
    names = [router_name(service, index, count) for index in range(count)]
    assert len(set(names)) == count
    if count == 1:
        assert names == [f"discovered-{service}"]
    else:
        prefix = f"discovered-{service}-"
        assert [name.removeprefix(prefix) for name in names] == [str(i) for i in range(count)]


# -- the provider's choice ------------------------------------------------------------------


class Instances:
    """A ``fetch`` serving one document and one health status per seed."""

    def __init__(self, documents: dict[str, bytes], health: dict[str, int]) -> None:
        self.documents = documents
        self.health = health

    async def __call__(
        self,
        url: str,
        *,
        timeout: float,  # noqa: ASYNC109 -- the shape of http_fetch.fetch
        max_body: int,
    ) -> Fetched:
        for seed, body in self.documents.items():
            if url == seed + WELL_KNOWN:
                return Fetched(200, (), body)
            if url == seed + "/health":
                return Fetched(self.health[seed], (), b"")
        return Fetched(404, (), b"")


@given(
    st.lists(
        st.tuples(versions.filter(lambda v: v.isascii()), st.booleans(), st.integers(0, 3)),
        min_size=1,
        max_size=5,
    )
)
async def test_the_provider_serves_the_reference_choice_under_the_reference_names(
    instances: list[tuple[str, bool, int]],
) -> None:
    seeds = [f"http://10.0.0.{index + 1}:8080" for index in range(len(instances))]
    documents = {
        seed: json.dumps(
            {
                "name": "api",
                "version": version,
                "routes": [{"rule": f"Path(`/{index}/{r}`)"} for r in range(routes)],
            }
        ).encode()
        for index, (seed, (version, _, routes)) in enumerate(zip(seeds, instances, strict=True))
    }
    health = {
        seed: 200 if healthy else 503
        for seed, (_, healthy, _) in zip(seeds, instances, strict=True)
    }
    settings = msgspec.convert(
        {"seeds": [{"url": seed} for seed in seeds]}, type=DiscoveryProvider, dec_hook=dec_hook
    )
    provider = ServiceDiscovery(settings, fetch=Instances(documents, health))
    snapshot = await provider.poll()

    healthy = [index for index, (_, ok, _) in enumerate(instances) if ok]
    pool = healthy or list(range(len(instances)))
    chosen = pool[newest_by_reference([instances[index][0] for index in pool])]
    count = instances[chosen][2]
    expected = {router_name("api", r, count): f"Path(`/{chosen}/{r}`)" for r in range(count)}
    assert {name: router.rule for name, router in snapshot.routers.items()} == expected
    balancer = snapshot.services["api"].load_balancer
    assert balancer is not None
    assert [server.url.text for server in balancer.servers] == [seeds[i] for i in healthy]


def newest_by_reference(values: list[str]) -> int:
    best = 0
    for index, value in enumerate(values):
        if reference_compare(value, values[best]) > 0:
            best = index
    return best
