"""Properties of ACME domain derivation (SPEC §12.1; ``acme/order_plan.py``).

Rules are generated as text together with the answer: ``Host``, ``Path``, ``HostRegexp`` and
``Header`` leaves combined with ``&&``, ``||``, ``!`` and parentheses (redundant ones too),
where a ``Host`` literal counts exactly when it is an issuable name and no ``!`` is above it.
The expected set is built while generating, not by walking the parsed tree, so the property
checks the implementation's walk against an independent account of the same rule.

The strategies are local: they describe only this subject (a rule paired with its answer).
"""

from __future__ import annotations

import ipaddress
import string
from typing import Final, Literal, TypeAlias

import msgspec
from hypothesis import example, given, settings
from hypothesis import strategies as st

from a3s_gateway.acme.order_plan import derive_domains, rule_host_names
from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.schema_routers import Router
from a3s_gateway.routing.compiler import compile_rule

#: A generated rule: its text, the hosts it must yield, and whether the text is an atom
#: (a call, a negation or a parenthesised group) that needs no parentheses as an operand.
Piece: TypeAlias = tuple[str, frozenset[str], bool]
Syntax: TypeAlias = Literal["v3", "v2"]

BASE: Final = load_config_text(
    """
entrypoints "web" {
  address = "127.0.0.1:8080"
  redirect_to = "websecure"
}
entrypoints "websecure" {
  address = "127.0.0.1:8443"
  tls {
    acme = true
    acme_email = "ops@example.com"
  }
}
services "app" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:9000" }]
  }
}
routers "app" {
  rule = "Path(`/`)"
  service = "app"
}
""",
    filename="gateway.hcl",
)

#: Host literals that are never derived: ``*``, wildcards, IP literals, a port, a stray ``*``.
#: Half the profile's examples: each one compiles a few rules twice, so the ``ci`` profile's 200
#: would take seconds per property under coverage; ``nightly`` still runs thousands.
EXAMPLES: Final = settings(max_examples=max(settings().max_examples // 2, 10))

NOT_DERIVED: Final = (
    "*",
    "*.example.com",
    "*.EXAMPLE.org.",
    "10.0.0.1",
    "192.0.2.7.",
    "[2001:db8::1]",
    "::1",
    "www.example.com:8443",
    "localhost",
    "intranet",
    "api.localhost",
    "a*b.example.com",
    "-lead.example.com",
)


def _label() -> st.SearchStrategy[str]:
    """An LDH label of 1 to 8 characters (mixed case)."""
    alnum = string.ascii_letters + string.digits
    return st.builds(
        lambda first, middle, last: first + (middle + last if last else ""),
        st.sampled_from(alnum),
        st.text(alnum + "-", max_size=6),
        st.sampled_from(["", *alnum]),
    )


@st.composite
def issuable_hosts(draw: st.DrawFn) -> tuple[str, str]:
    """``(as written, as derived)``: mixed case, sometimes a trailing dot."""
    labels = draw(st.lists(_label(), min_size=1, max_size=3))
    labels.append(draw(st.sampled_from(["com", "ORG", "example", "Test"])))
    written = ".".join(labels) + draw(st.sampled_from(["", "."]))
    return written, written.lower().removesuffix(".")


NOTHING: Final[frozenset[str]] = frozenset()


def host_leaves() -> st.SearchStrategy[Piece]:
    def named(pair: tuple[str, str]) -> Piece:
        return f"Host(`{pair[0]}`)", frozenset({pair[1]}), True

    def unnamed(host: str) -> Piece:
        return f"Host(`{host}`)", NOTHING, True

    return issuable_hosts().map(named) | st.sampled_from(NOT_DERIVED).map(unnamed)


def other_leaves(header: str) -> st.SearchStrategy[Piece]:
    """Leaves that never yield a name, whatever host-like text they hold. ``HostRegexp``'s
    argument reads as a regex in v3 and as a literal template in v2: valid in both."""
    texts = st.sampled_from(["/", "/www.example.com", "/a/b"]).map(lambda path: f"Path(`{path}`)")
    regexps = issuable_hosts().map(lambda pair: f"HostRegexp(`{pair[0]}`)")
    headers = issuable_hosts().map(lambda pair: f"{header}(`Host`, `{pair[0]}`)")

    def leaf(text: str) -> Piece:
        return text, NOTHING, True

    return st.one_of(texts, regexps, headers).map(leaf)


def operand(piece: Piece, extra_parentheses: bool) -> str:
    """``piece`` as an operand: parenthesised unless an atom, and sometimes needlessly."""
    text, _, atom = piece
    return f"({text})" if extra_parentheses or not atom else text


def negation(child: Piece, extra: bool) -> Piece:
    return "!" + operand(child, extra), NOTHING, True


def binary(left: Piece, right: Piece, operator: str, extra: bool) -> Piece:
    return f"{operand(left, extra)} {operator} {operand(right, False)}", left[1] | right[1], False


def group(child: Piece) -> Piece:
    return f"({child[0]})", child[1], True


def extend(children: st.SearchStrategy[Piece]) -> st.SearchStrategy[Piece]:
    return st.one_of(
        st.builds(negation, children, st.booleans()),
        st.builds(binary, children, children, st.sampled_from(["&&", "||"]), st.booleans()),
        children.map(group),
    )


def rules(header: str) -> st.SearchStrategy[Piece]:
    """Rules with up to 12 leaves; ``header`` is ``Header`` (v3) or ``Headers`` (both)."""
    return st.recursive(host_leaves() | other_leaves(header), extend, max_leaves=12)


def derived(rules_and_syntax: list[tuple[str, Syntax]]) -> tuple[str, ...]:
    routers = {
        f"r{index}": Router(rule=rule, service="app", rule_syntax=syntax)
        for index, (rule, syntax) in enumerate(rules_and_syntax)
    }
    return derive_domains(msgspec.structs.replace(BASE, routers=routers), "websecure")


def assert_well_formed(domains: tuple[str, ...]) -> None:
    assert list(domains) == sorted(set(domains))
    for domain in domains:
        assert domain == domain.lower()
        assert "*" not in domain
        assert not domain.endswith(".")
        assert ":" not in domain
        try:
            ipaddress.ip_address(domain)
        except ValueError:
            pass
        else:
            raise AssertionError(f"IP literal {domain!r} derived")


@EXAMPLES
@given(st.lists(rules("Header"), min_size=1, max_size=3))
@example(
    [("!!Host(`a.example.com`) || (Host(`b.example.com`))", frozenset({"b.example.com"}), False)]
)
def test_derivation_is_the_literal_hosts_outside_negations(pieces: list[Piece]) -> None:
    for text, _, _ in pieces:
        compile_rule(text)  # every generated rule is valid: the property is not vacuous
    domains = derived([(text, "v3") for text, _, _ in pieces])
    expected = frozenset().union(*(names for _, names, _ in pieces))
    assert domains == tuple(sorted(expected))
    assert_well_formed(domains)


@EXAMPLES
@given(rules("Headers"))
def test_v2_reads_the_same_rule_the_same_way(piece: Piece) -> None:
    text, expected, _ = piece
    compile_rule(text, syntax="v2")
    assert rule_host_names(text, "v2") == rule_host_names(text, "v3") == expected
    assert derived([(text, "v2")]) == tuple(sorted(expected))


@EXAMPLES
@given(
    st.lists(
        issuable_hosts() | st.sampled_from(NOT_DERIVED).map(lambda h: (h, "")),
        min_size=1,
        max_size=5,
    )
)
def test_v2_several_arguments_are_or_ed(hosts: list[tuple[str, str]]) -> None:
    arguments = ", ".join(f"`{written}`" for written, _ in hosts)
    text = f"Host({arguments}) && Method(`GET`)"
    compile_rule(text, syntax="v2")
    expected = sorted({name for _, name in hosts if name})
    assert derived([(text, "v2")]) == tuple(expected)
    assert derived([(f"!Host({arguments})", "v2")]) == ()
