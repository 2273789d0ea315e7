"""Properties of compiled rules and route tables (issue #3).

- The compiled ``RouteTable`` picks the same router as a deliberately naive reference that
  interprets the generated rule trees directly and scans every router in priority order.
- ``!``, ``&&`` and ``||`` obey boolean algebra on generated requests.
- Host matching ignores case, port and one trailing dot.
"""

from __future__ import annotations

import ipaddress
import re
from typing import cast

from hypothesis import given
from hypothesis import strategies as st

from a3s_gateway.routing import HttpRequestInfo, Route, RouteTable, compile_rule
from tests.property.strategies import RuleTree, render_tree, route_rule_trees, routed_requests


def naive_host(raw: str) -> str:
    host = raw
    if host.startswith("["):
        host = host[1 : host.index("]")]
    elif host.count(":") == 1:
        host = host.split(":")[0]
    host = host.strip().lower()
    return host.removesuffix(".")


def naive_query(raw: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for pair in raw.split("&"):
        if not pair or ";" in pair:
            continue
        key, _, value = pair.partition("=")
        found.setdefault(key, []).append(value)
    return found


def naive_peer(raw: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = raw[1 : raw.index("]")] if raw.startswith("[") else raw.rsplit(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def reference_matches(tree: RuleTree, info: HttpRequestInfo) -> bool:
    kind = tree[0]
    if kind in ("not", "and", "or"):
        parts = [reference_matches(cast("RuleTree", sub), info) for sub in tree[1:]]
        if kind == "not":
            return not parts[0]
        return all(parts) if kind == "and" else any(parts)
    name, args = tree[1], [str(arg) for arg in tree[2:]]
    host = naive_host(info.host)
    path = info.path  # the vocabulary has no escapes that decode ("%2F" stays as received)
    if name == "Host":
        if args[0].startswith("*."):
            label, _, rest = host.partition(".")
            return bool(label) and "." + rest == args[0][1:]
        return host == args[0]
    if name == "PathPrefix":
        return path.startswith(args[0])
    if name == "Path":
        return path == args[0]
    if name == "PathRegexp":
        return re.fullmatch(r"/a/[0-9]+", path) is not None
    if name == "Method":
        return info.method == args[0]
    if name == "Header":
        return any(k.lower() == "x-tag" and v == args[1] for k, v in info.headers)
    if name == "Query":
        wanted = args[1] if len(args) == 2 else ""
        return wanted in naive_query(info.query).get(args[0], [])
    if name == "ClientIP":
        peer = naive_peer(info.remote_addr)
        return peer is not None and peer in ipaddress.ip_network(args[0])
    raise AssertionError(name)


routers = st.lists(
    st.tuples(
        route_rule_trees(),
        st.sampled_from([0, 0, 0, 5, -1, 200]),
        st.sampled_from([None, frozenset({"web"}), frozenset({"admin"})]),
    ),
    max_size=8,
)


@given(routers, routed_requests(), st.sampled_from(["web", "admin", "other"]))
def test_table_agrees_with_the_naive_reference(
    specs: list[tuple[RuleTree, int, frozenset[str] | None]],
    info: HttpRequestInfo,
    entrypoint: str,
) -> None:
    routes = [
        Route(
            name=f"r{index}",
            rule=compile_rule(render_tree(tree)),
            service="s",
            entrypoints=entrypoints,
            priority=priority,
        )
        for index, (tree, priority, entrypoints) in enumerate(specs)
    ]
    trees = {f"r{index}": tree for index, (tree, _, _) in enumerate(specs)}
    ordered = sorted(routes, key=lambda r: (-(r.priority or len(r.rule.text.encode())), r.name))
    expected = next(
        (
            r.name
            for r in ordered
            if (r.entrypoints is None or entrypoint in r.entrypoints)
            and reference_matches(trees[r.name], info)
        ),
        None,
    )
    found = RouteTable(routes).select(info, entrypoint)
    assert (found.name if found is not None else None) == expected


@given(route_rule_trees(), route_rule_trees(), routed_requests())
def test_operators_obey_boolean_algebra(a: RuleTree, b: RuleTree, info: HttpRequestInfo) -> None:
    left, right = render_tree(a), render_tree(b)
    value_a = compile_rule(left).matches(info)
    value_b = compile_rule(right).matches(info)
    assert compile_rule(f"!{left}").matches(info) is (not value_a)
    assert compile_rule(f"{left} && {right}").matches(info) is (value_a and value_b)
    assert compile_rule(f"{left} || {right}").matches(info) is (value_a or value_b)
    assert compile_rule(f"!({left} && {right})").matches(info) is compile_rule(
        f"!{left} || !{right}"
    ).matches(info)


@given(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True),
    st.data(),
)
def test_host_matching_ignores_case_port_and_trailing_dot(host: str, data: st.DataObject) -> None:
    variant = "".join(c.upper() if data.draw(st.booleans()) else c for c in host)
    variant += data.draw(st.sampled_from(["", ".", ":8080", ".:443"]))
    rule = compile_rule(f"Host(`{host}`)")
    assert rule.matches(HttpRequestInfo("GET", variant, "/"))
    assert not rule.matches(HttpRequestInfo("GET", "x" + host, "/"))
