"""The only home of Hypothesis strategies for the property suite (DESIGN.md §3.7).

Sections are grouped by subject; each strategy says what it generates.
"""

from __future__ import annotations

import ipaddress
import string
from typing import Final

from hypothesis import strategies as st

# --- config values and interpolation ---

#: Characters that make interpolation interesting: escapes, braces, defaults, directives.
TEMPLATE_ALPHABET: Final = "$%{}:-AB_x1 "
#: Variable names the template strategies use (so that generated text hits set and unset ones).
ENV_NAMES: Final = ("A", "B", "_x", "x1")
DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: The largest whole count of each unit that is still <= 8760h.
DURATION_MAX_COUNT: Final = {"ms": 31_536_000_000, "s": 31_536_000, "m": 525_600, "h": 8760}


def template_text() -> st.SearchStrategy[str]:
    """Config strings dense in ``$``, ``%``, ``{``, ``}`` and ``:-``, sometimes arbitrary text."""
    dense = st.text(alphabet=TEMPLATE_ALPHABET, max_size=40)
    pieces = st.lists(
        st.sampled_from(["${A}", "${B:-d}", "$${", "%%{", "${x1:-}", "$", "}", "{", "%"])
        | st.text(alphabet="ab$%{} ", max_size=4),
        max_size=8,
    ).map("".join)
    return st.one_of(dense, pieces, st.text(max_size=40))


def literal_text() -> st.SearchStrategy[str]:
    """Text without ``$`` or ``%``: interpolation must leave it unchanged."""
    return st.text(max_size=60).filter(lambda text: "$" not in text and "%" not in text)


def environments(
    *, values: st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[dict[str, str]]:
    """Environments over ``ENV_NAMES`` (some unset, some empty) with the given value strategy."""
    return st.dictionaries(
        st.sampled_from(ENV_NAMES), values if values is not None else st.text(max_size=12)
    )


def dollar_free_text() -> st.SearchStrategy[str]:
    """Text without ``$`` (environment values that cannot form ``${`` on their own)."""
    return st.text(alphabet=st.characters(exclude_characters="$"), max_size=12)


def config_trees() -> st.SearchStrategy[object]:
    """Nested dicts and lists of template strings and other scalars, keys included."""
    scalars = st.one_of(template_text(), st.integers(), st.floats(), st.booleans(), st.none())
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(template_text(), children, max_size=4)
        ),
        max_leaves=20,
    )


def duration_counts() -> st.SearchStrategy[tuple[int, str]]:
    """A whole count and unit that make a valid, non-zero duration."""
    return st.sampled_from(sorted(DURATION_UNITS)).flatmap(
        lambda unit: st.tuples(st.integers(1, DURATION_MAX_COUNT[unit]), st.just(unit))
    )


def ipv4_texts() -> st.SearchStrategy[str]:
    """IPv4 addresses in dotted-quad form."""
    return st.ip_addresses(v=4).map(str)


def dns_names() -> st.SearchStrategy[str]:
    """Lower-case DNS names of one to three labels (not all-numeric)."""
    label = st.from_regex(r"[a-z](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
    return st.lists(label, min_size=1, max_size=3).map(".".join)


def url_hosts() -> st.SearchStrategy[tuple[str, str]]:
    """(host as written in a URL, host as normalised): IPv4, bracketed IPv6 or a DNS name."""
    ipv6 = st.ip_addresses(v=6).map(lambda ip: (f"[{ip.exploded}]", str(ip)))
    upper = dns_names().map(lambda name: (name.upper(), name))
    return st.one_of(
        ipv4_texts().map(lambda ip: (ip, ip)), ipv6, dns_names().map(lambda n: (n, n)), upper
    )


def value_junk() -> st.SearchStrategy[str]:
    """Arbitrary text and text made of the characters URL, address and CIDR parsers split on."""
    return st.one_of(
        st.text(max_size=40),
        st.text(alphabet=string.ascii_letters[:6] + string.digits + ":/[]@%.?#-_ ", max_size=40),
        st.sampled_from(["http://", "tcp://", "redis://", "[", "::ffff:", "1.2.3.4"]).flatmap(
            lambda head: st.text(alphabet="0123456789abf:./[]@%?#", max_size=20).map(
                lambda tail: head + tail
            )
        ),
    )


def ipv4_networks() -> st.SearchStrategy[ipaddress.IPv4Network]:
    """IPv4 networks of any prefix length."""
    return st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(
        lambda pair: ipaddress.IPv4Network((pair[0], pair[1]), strict=False)
    )
