"""The SNI → certificate choice is a pure function of the name set (routing/sni.py, SPEC §5.9).

Generated certificate lists (each a set of exact and one-label wildcard names over a small
alphabet, so that names collide often) and server names checked against a reference written
from the rule's words: exact beats wildcard beats default; among certificates, the first
listing a name wins; ``sni_strict`` turns the default into "none"; and the answer depends only
on the names (not on case, a trailing dot, or how often it is asked).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from a3s_gateway.routing.sni import SniMap

LABELS = st.sampled_from(["a", "b", "api", "www", "x1"])
DOMAINS = st.lists(LABELS, min_size=1, max_size=3).map(".".join)
CERT_NAMES = st.one_of(DOMAINS, DOMAINS.map(lambda d: "*." + d))
CERTIFICATES = st.lists(st.lists(CERT_NAMES, max_size=4), min_size=1, max_size=5)
SERVER_NAMES = st.one_of(st.none(), DOMAINS, DOMAINS.map(str.upper), DOMAINS.map(lambda d: d + "."))


def reference(names: list[list[str]], server_name: str | None, strict: bool) -> int | None:
    if not server_name:
        return 0
    name = server_name.lower().removesuffix(".")
    for index, listed in enumerate(names):
        if name in (n.lower() for n in listed):
            return index
    labels = name.split(".")
    if len(labels) > 1:
        wildcard = "*." + ".".join(labels[1:])
        for index, listed in enumerate(names):
            if wildcard in (n.lower() for n in listed):
                return index
    return None if strict else 0


@given(CERTIFICATES, SERVER_NAMES, st.booleans())
def test_choice_follows_the_rule(
    names: list[list[str]], server_name: str | None, strict: bool
) -> None:
    chosen = SniMap.build(names, strict=strict).choose(server_name)
    assert chosen == reference(names, server_name, strict)


@given(CERTIFICATES, SERVER_NAMES, st.booleans())
def test_choice_is_a_pure_function_of_the_names(
    names: list[list[str]], server_name: str | None, strict: bool
) -> None:
    sni = SniMap.build(names, strict=strict)
    first = sni.choose(server_name)
    assert sni.choose(server_name) == first  # asking again changes nothing
    # The same names, rebuilt (and written in another case), choose the same certificate.
    shouted = SniMap.build([[n.upper() for n in listed] for listed in names], strict=strict)
    assert shouted.choose(server_name) == first
    if server_name:
        assert sni.choose(server_name.upper().removesuffix(".") + ".") == first


@given(CERTIFICATES, DOMAINS)
def test_exact_beats_wildcard_beats_default(names: list[list[str]], domain: str) -> None:
    server_name = "host." + domain
    with_wildcard = [*names, ["*." + domain]]
    with_both = [*with_wildcard, [server_name]]
    wildcard_index = SniMap.build(with_wildcard).choose(server_name)
    exact_index = SniMap.build(with_both).choose(server_name)
    # Whatever else is listed: an exact name always wins over the wildcard ...
    assert exact_index is not None
    assert server_name in [n.lower() for n in with_both[exact_index]]
    # ... and a wildcard over the default.
    assert wildcard_index is not None
    listed = [n.lower() for n in with_wildcard[wildcard_index]]
    assert server_name in listed or "*." + domain in listed
