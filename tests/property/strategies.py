"""The only home of Hypothesis strategies for the property suite (DESIGN.md §3.7).

Sections are grouped by subject; each strategy says what it generates.
"""

from __future__ import annotations

import ipaddress
import string
import types
from typing import Annotated, Final, Literal, Union, cast, get_args, get_origin

import msgspec
from hypothesis import strategies as st

from a3s_gateway.config.schema import Config

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


# --- whole configs, derived from the schema ---
#
# ``struct_values(T)`` walks a Struct's annotations and builds instances field by field:
# constrained ints and floats within their ``Meta`` bounds, ``Literal`` choices, strings matching
# their pattern, value types (durations, addresses, URLs, networks) from small grammars, short
# tuples and label maps, optional fields sometimes left at their default. Values are valid for
# the *schema*; references between blocks are random, so semantic checks see plenty to report.


def _value_type_strategies() -> dict[type, st.SearchStrategy[object]]:
    from a3s_gateway.config import values as v

    ports = st.integers(1, 65535)
    durations = st.builds(
        lambda n, unit: f"{n}{unit}", st.integers(1, 500), st.sampled_from(["ms", "s", "m", "h"])
    )
    hosts = st.sampled_from(["127.0.0.1", "10.1.2.3", "[::1]", "backend.internal"])
    schemes = st.sampled_from(["http", "https", "h2c", "ws", "wss", "tcp", "tls", "udp"])
    return {
        v.Duration: durations.map(v.Duration),
        v.DurationOrZero: (durations | st.just("0s")).map(v.DurationOrZero),
        v.Address: st.builds(
            lambda host, port: f"{host}:{port}",
            st.sampled_from(["127.0.0.1", "0.0.0.0", "[::1]", ""]),
            st.integers(0, 65535),
        ).map(v.Address),
        v.IpNetwork: st.sampled_from(
            ["10.0.0.0/8", "127.0.0.1", "::1", "2001:db8::/32", "192.168.1.7/24"]
        ).map(v.IpNetwork),
        v.ServerUrl: st.builds(
            lambda scheme, host, port: f"{scheme}://{host}:{port}", schemes, hosts, ports
        ).map(v.ServerUrl),
        v.HttpUrl: st.builds(lambda host, port: f"http://{host}:{port}/check", hosts, ports).map(
            v.HttpUrl
        ),
        v.RedisUrl: st.sampled_from(
            ["redis://127.0.0.1:6379/0", "rediss://user:pw@cache.internal:6380/2"]
        ).map(v.RedisUrl),
    }


def _strip_annotated(tp: object) -> tuple[object, list[object]]:
    metas: list[object] = []
    while get_origin(tp) is Annotated:
        args = get_args(tp)
        tp, metas = args[0], [*metas, *args[1:]]
    return tp, metas


def _bounded_number(tp: type, metas: list[object]) -> st.SearchStrategy[object]:
    """Numbers within the ``Meta`` bounds (``gt``/``lt`` exclusive, ``ge``/``le`` inclusive)."""
    low = high = None
    exclude_low = exclude_high = False
    for meta in metas:
        if isinstance(meta, msgspec.Meta):
            if meta.ge is not None or meta.gt is not None:
                low, exclude_low = (meta.ge, False) if meta.ge is not None else (meta.gt, True)
            if meta.le is not None or meta.lt is not None:
                high, exclude_high = (meta.le, False) if meta.le is not None else (meta.lt, True)
    if tp is int:
        low_int = -1000 if low is None else int(low) + exclude_low
        high_int = low_int + 100_000 if high is None else int(high) - exclude_high
        return st.integers(low_int, min(high_int, low_int + 100_000))
    low_f = -1000.0 if low is None else float(low)
    high_f = low_f + 1000.0 if high is None else float(high)
    return st.floats(
        low_f, high_f, exclude_min=exclude_low, exclude_max=exclude_high, allow_nan=False
    )


def _string(metas: list[object]) -> st.SearchStrategy[object]:
    minimum = 1 if any(isinstance(m, msgspec.Meta) and m.min_length for m in metas) else 0
    for meta in metas:
        if isinstance(meta, msgspec.Meta) and meta.pattern is not None:
            return st.from_regex(meta.pattern, fullmatch=True).filter(
                lambda s: minimum <= len(s) <= 40
            )
    return st.text(string.ascii_letters + string.digits + "-_./ ", min_size=minimum, max_size=12)


def _labels() -> st.SearchStrategy[str]:
    return st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True)


def annotation_values(tp: object) -> st.SearchStrategy[object]:
    """Values valid for the annotation ``tp`` of a config field."""
    base, metas = _strip_annotated(tp)
    origin = get_origin(base)
    if origin in (Union, types.UnionType):
        return st.one_of([annotation_values(arg) for arg in get_args(base)])
    if origin is Literal:
        return st.sampled_from(get_args(base))
    if origin is tuple:
        item = get_args(base)[0]
        min_size = 1 if any(isinstance(m, msgspec.Meta) and m.min_length for m in metas) else 0
        return st.lists(annotation_values(item), min_size=min_size, max_size=2).map(tuple)
    if origin is dict:
        key, value = get_args(base)
        keys = _labels() if key is str else annotation_values(key)
        return st.dictionaries(keys, annotation_values(value), max_size=2)
    if base is type(None):
        return st.none()
    if base is bool:
        return st.booleans()
    if base in (int, float):
        assert isinstance(base, type)
        return _bounded_number(base, metas)
    if base is str:
        return _string(metas)
    value_types = _value_type_strategies()
    if base in value_types:
        assert isinstance(base, type)
        return value_types[base]
    if isinstance(base, type) and issubclass(base, msgspec.Struct):
        return struct_values(base)
    raise NotImplementedError(f"no strategy for {tp!r}")


def struct_values(struct: type[msgspec.Struct]) -> st.SearchStrategy[object]:
    """Instances of a config Struct (optional fields drawn or left at their default)."""
    fields: dict[str, st.SearchStrategy[object]] = {}
    for info in msgspec.structs.fields(struct):
        strategy = st.deferred(lambda info=info: annotation_values(info.type))  # type: ignore[misc]  # default binds the loop value
        required = info.required
        fields[info.name] = strategy if required else st.one_of(st.just(_DEFAULT), strategy)
    return st.fixed_dictionaries(fields).map(
        lambda drawn: struct(**{k: val for k, val in drawn.items() if val is not _DEFAULT})
    )


_DEFAULT: Final = object()


def configs() -> st.SearchStrategy[Config]:
    """Whole configs that satisfy the schema (semantics are random)."""
    return struct_values(Config).map(lambda config: cast("Config", config))
