"""Properties of the Kubernetes translation (SPEC §10.6; providers/kube_ingress.py).

Ingress paths: the rule ``ingress_rule`` writes, compiled by the gateway's own rule compiler,
matches a request exactly when Kubernetes' semantics say the Ingress path does: ``Exact`` is
equality, ``Prefix`` matches whole path elements (``/foo`` matches ``/foo`` and ``/foo/x``,
never ``/foobar``; a trailing ``/`` in the Ingress path changes nothing), ``*.suffix`` hosts
match exactly one more label, host names case-insensitively. The reference below is written
from the Kubernetes documentation, not from the code under test.

Weights: ``traffic_percents`` always sums to exactly 100, gives each entry its exact share
rounded down or up (never further), keeps the weights' order, gives a zero weight nothing
(unless every weight is zero, then the split is equal within one point), and is deterministic.

(The strategies are local: they serve this file only.)
"""

from __future__ import annotations

from fractions import Fraction

from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.providers.kube_ingress import ingress_rule, traffic_percents
from a3s_gateway.routing import HttpRequestInfo, compile_rule

# Few, overlapping pieces, so generated requests often sit right at a prefix's edge.
SEGMENTS = st.sampled_from(["a", "b", "ab", "foo", "foobar"])
LABELS = st.sampled_from(["a", "b", "x", "example", "com"])
PATH_TYPES = st.sampled_from(["Exact", "Prefix", "ImplementationSpecific"])


@st.composite
def paths(draw: st.DrawFn) -> str:
    """``/``-separated segments, maybe with a trailing ``/``."""
    segments = draw(st.lists(SEGMENTS, max_size=4))
    text = "/" + "/".join(segments)
    trailing = draw(st.booleans())
    if segments and trailing:
        text += "/"
    return text


@st.composite
def ingress_hosts(draw: st.DrawFn) -> str | None:
    """No host, an exact host or a one-label wildcard, in mixed case."""
    kind = draw(st.sampled_from(["none", "exact", "wildcard"]))
    if kind == "none":
        return None
    labels = draw(st.lists(LABELS, min_size=1, max_size=3))
    host = ".".join(labels)
    if draw(st.booleans()):
        host = host.upper()
    return f"*.{host}" if kind == "wildcard" else host


@st.composite
def request_hosts(draw: st.DrawFn) -> str:
    labels = draw(st.lists(LABELS, min_size=1, max_size=4))
    host = ".".join(labels)
    return host.upper() if draw(st.booleans()) else host


def host_matches(wanted: str | None, host: str) -> bool:
    if wanted is None:
        return True
    wanted, host = wanted.lower(), host.lower()
    if wanted.startswith("*."):
        suffix = wanted[1:]
        label = host[: -len(suffix)] if host.endswith(suffix) else ""
        return label != "" and "." not in label
    return host == wanted


def path_matches(path_type: str, wanted: str, path: str) -> bool:
    if path_type == "Exact":
        return path == wanted
    if path_type == "Prefix":
        elements = [part for part in wanted.split("/") if part]
        return path.split("/")[1 : 1 + len(elements)] == elements
    return path.startswith(wanted)  # ImplementationSpecific: a plain prefix here


@given(
    host=ingress_hosts(),
    path_type=PATH_TYPES,
    wanted=paths(),
    requests=st.lists(st.tuples(request_hosts(), paths()), min_size=1, max_size=8),
)
@example(host=None, path_type="Prefix", wanted="/foo", requests=[("a", "/foobar")])
@example(host=None, path_type="Prefix", wanted="/foo/", requests=[("a", "/foo")])
@example(host="*.example.com", path_type="Exact", wanted="/", requests=[("example.com", "/")])
@example(host="*.b.com", path_type="Exact", wanted="/", requests=[("a.a.b.com", "/")])
def test_ingress_rules_match_like_kubernetes(
    host: str | None, path_type: str, wanted: str, requests: list[tuple[str, str]]
) -> None:
    compiled = compile_rule(ingress_rule(host, wanted, path_type))
    for request_host, request_path in requests:
        info = HttpRequestInfo(method="GET", host=request_host, path=request_path)
        expected = host_matches(host, request_host) and path_matches(
            path_type, wanted, request_path
        )
        assert compiled.matches(info) == expected, (request_host, request_path)


@given(
    path_type=PATH_TYPES,
    wanted=paths(),
    extra=st.lists(SEGMENTS, max_size=3),
)
def test_a_path_always_matches_itself_and_prefixes_their_children(
    path_type: str, wanted: str, extra: list[str]
) -> None:
    compiled = compile_rule(ingress_rule("host.example", wanted, path_type))
    assert compiled.matches(HttpRequestInfo(method="GET", host="host.example", path=wanted))
    if path_type != "Exact":
        child = wanted.rstrip("/") + "/" + "/".join(extra)
        assert compiled.matches(HttpRequestInfo(method="GET", host="HOST.example", path=child))


WEIGHTS = st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=12)


@given(WEIGHTS)
@example([0])
@example([0, 0, 0])
@example([1, 1, 1])
@example([1000, 1, 1])
def test_percents_sum_to_100_and_stay_within_one_point_of_the_share(weights: list[int]) -> None:
    percents = traffic_percents(weights)
    assert sum(percents) == 100
    assert len(percents) == len(weights)
    assert percents == traffic_percents(list(weights))
    total = sum(weights)
    shares = [Fraction(100 * w, total) for w in weights] if total else None
    for index, percent in enumerate(percents):
        if shares is None:
            assert max(percents) - min(percents) <= 1
            continue
        assert shares[index] - 1 < percent < shares[index] + 1
        if weights[index] == 0:
            assert percent == 0


@given(WEIGHTS)
def test_a_heavier_weight_never_gets_fewer_points(weights: list[int]) -> None:
    percents = traffic_percents(weights)
    for i, weight in enumerate(weights):
        for j, other in enumerate(weights):
            if weight > other:
                assert percents[i] >= percents[j]
            if weight == other and i < j:
                # (ties: the earlier entry gets a left-over point first)
                assert percents[i] in (percents[j], percents[j] + 1)
