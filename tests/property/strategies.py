"""The only home of Hypothesis strategies for the property suite (DESIGN.md §3.7).

Sections are grouped by subject; each strategy says what it generates.
"""

from __future__ import annotations

import ipaddress
import string
import types
from typing import Annotated, Final, Literal, TypeAlias, Union, cast, get_args, get_origin

import msgspec
from hypothesis import strategies as st

from a3s_gateway.config.schema import Config
from a3s_gateway.protocols.headers import ForwardingContext
from a3s_gateway.routing.request import HttpRequestInfo
from a3s_gateway.routing.rules import And, Call, Node, Not, Or

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


# --- request views ---
#
# Inputs of ``routing/request.py`` and ``routing/paths.py`` (SPEC §4.3–4.5): raw paths dense in
# slashes, dot segments and escapes; realistic ``Host`` values; query strings dense in the
# characters Go's ``url.ParseQuery`` splits on; peer addresses.

#: Pieces raw paths are made of: separators, dot segments in every spelling, plain text ...
PATH_SEGMENTS: Final = ("/", "//", ".", "..", "%2e", "%2E", "a", "B", "é")
#: ... and escapes, good and bad.
PATH_ESCAPES: Final = ("%2f", "%2F", "%20", "%25", "%", "%4", "%G1")
#: The IP address types a peer parses to.
PeerIp = ipaddress.IPv4Address | ipaddress.IPv6Address


def raw_path_texts() -> st.SearchStrategy[str]:
    """Request-target paths as text: mostly made of the pieces above, sometimes arbitrary."""
    piece = st.sampled_from(PATH_SEGMENTS) | st.sampled_from(PATH_ESCAPES)
    pieces = st.lists(piece, max_size=12).map("".join)
    return st.one_of(pieces, pieces.map(lambda path: "/" + path), st.text(max_size=30))


def raw_paths() -> st.SearchStrategy[bytes]:
    """Request-target paths as bytes: ``raw_path_texts`` encoded, or arbitrary bytes."""
    return st.one_of(raw_path_texts().map(str.encode), st.binary(max_size=30))


@st.composite
def percent_encoded_paths(draw: st.DrawFn) -> tuple[bytes, str]:
    """(UTF-8 bytes of text without ``%``, the same percent-encoded as ASCII text).

    Every non-ASCII byte and a random share of the other bytes are escaped, in random hex case;
    bytes whose escapes the routing path keeps (``/``, ``?``, …) are always left literal.
    """
    from a3s_gateway.routing.paths import ROUTING_KEPT_BYTES

    # codec="utf-8": characters() alone also draws lone surrogates, which have no UTF-8 form.
    text = draw(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="%"), max_size=20))
    data = text.encode()
    out: list[str] = []
    for byte in data:
        if byte in ROUTING_KEPT_BYTES or (byte < 0x80 and not draw(st.booleans())):
            out.append(chr(byte))
        else:
            escape = f"%{byte:02X}"
            out.append(escape if draw(st.booleans()) else escape.lower())
    return data, "".join(out)


def host_header_values() -> st.SearchStrategy[str]:
    """Realistic ``Host`` values: names in mixed case with at most one trailing dot, IPv4,
    ``[v6]`` and bare IPv6 literals, optional ``:port``, optional surrounding spaces or tabs."""
    name = st.tuples(dns_names(), st.sampled_from(["", "."]), st.booleans()).map(
        lambda drawn: (drawn[0].upper() if drawn[2] else drawn[0]) + drawn[1]
    )
    port = st.sampled_from(["", ":80", ":8443", ":0"])
    with_port = st.one_of(
        name, ipv4_texts(), st.ip_addresses(v=6).map(lambda ip: f"[{ip}]")
    ).flatmap(lambda host: port.map(lambda suffix: host + suffix))
    bare_v6 = st.ip_addresses(v=6).map(lambda ip: str(ip).upper())
    space = st.sampled_from(["", " ", "\t", "  "])
    return st.tuples(space, st.one_of(with_port, bare_v6), space).map("".join)


def raw_query_strings() -> st.SearchStrategy[str]:
    """Raw query strings dense in ``& = ; + %`` and hex digits, or arbitrary text."""
    dense = st.text(alphabet="&=;+%0123456789aAfFgz é", max_size=40)
    return st.one_of(dense, st.text(max_size=40))


def query_pairs() -> st.SearchStrategy[list[tuple[str, str]]]:
    """(key, value) pairs of arbitrary text, keys repeating now and then."""
    key = st.one_of(st.sampled_from(["a", "b", "", "a b"]), st.text(max_size=6))
    return st.lists(st.tuples(key, st.text(max_size=8)), max_size=8)


def peer_addresses() -> st.SearchStrategy[tuple[str, PeerIp]]:
    """(remote address text with or without a port, the IP it names, IPv4-mapped unmapped)."""

    def render(ip: PeerIp, port: int | None) -> str:
        if port is None:
            return str(ip)
        return f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}"

    def unmapped(ip: PeerIp) -> PeerIp:
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return ip if mapped is None else mapped

    mapped_v4 = st.ip_addresses(v=4).map(lambda ip: ipaddress.IPv6Address(f"::ffff:{ip}"))
    ips = st.one_of(st.ip_addresses(), mapped_v4)
    ports = st.none() | st.integers(0, 65535)
    return st.tuples(ips, ports).map(lambda drawn: (render(*drawn), unmapped(drawn[0])))


# --- TLS ClientHello ---
#
# ``client_hellos()`` builds ClientHello handshake messages field by field (RFC 8446 §4.1.2),
# paired with the SNI and ALPN that parsing must report; ``handshake_records(message)`` carries
# one message in a random number of TLS records. Messages stay a few kilobytes at most, so that
# every-prefix properties are quick and nothing nears MAX_CLIENT_HELLO_BYTES.

_VISIBLE_ASCII: Final = "".join(chr(c) for c in range(0x21, 0x7F))


def _tls_vector(length_size: int, data: bytes) -> bytes:
    return len(data).to_bytes(length_size, "big") + data


def _tls_extension(ext_type: int, body: bytes) -> bytes:
    return ext_type.to_bytes(2, "big") + _tls_vector(2, body)


@st.composite
def sni_host_names(draw: st.DrawFn) -> tuple[bytes, str]:
    """(host name as sent, SNI as parsed): DNS names in mixed case, maybe with a trailing dot,
    IP literals, and arbitrary visible ASCII."""
    name = draw(
        dns_names()
        | ipv4_texts()
        | st.ip_addresses(v=6).map(str)
        | st.text(_VISIBLE_ASCII, min_size=1, max_size=30).filter(lambda text: text != ".")
    )
    upper = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    sent = "".join(char.upper() if up else char for char, up in zip(name, upper, strict=True))
    if draw(st.booleans()):
        sent += "."
    return sent.encode("ascii"), sent.lower().removesuffix(".")


@st.composite
def server_name_extensions(draw: st.DrawFn) -> tuple[bytes, str]:
    """(``server_name`` extension body, SNI as parsed): a host name among entries of other
    name types, sometimes followed by a second host name (which the parser ignores)."""
    other = st.tuples(st.integers(1, 255), st.binary(max_size=12))
    before, after = draw(st.lists(other, max_size=2)), draw(st.lists(other, max_size=2))
    sent, parsed = draw(sni_host_names())
    if draw(st.booleans()):
        after.append((0, draw(sni_host_names())[0]))
    entries = [*before, (0, sent), *after]
    names = b"".join(bytes([name_type]) + _tls_vector(2, name) for name_type, name in entries)
    return _tls_vector(2, names), parsed


def alpn_protocol_lists() -> st.SearchStrategy[list[bytes]]:
    """Offered ALPN protocol names: well-known ones and arbitrary non-empty bytes."""
    names = st.sampled_from([b"h2", b"http/1.1", b"acme-tls/1"]) | st.binary(
        min_size=1, max_size=255
    )
    return st.lists(names, min_size=1, max_size=5)


@st.composite
def client_hellos(draw: st.DrawFn) -> tuple[bytes, str, tuple[str, ...]]:
    """(ClientHello handshake message, SNI and ALPN the parser must report).

    Random legacy version, random, session id (0..32), cipher suites and compression methods;
    extensions of random types and bodies, maybe ``server_name``, ALPN and a padding extension,
    in random order; sometimes no extensions block at all.
    """
    ordinary = st.integers(1, 0xFFFF).filter(lambda ext_type: ext_type not in (16, 21))
    extensions = draw(st.dictionaries(ordinary, st.binary(max_size=40), max_size=5))
    sni: str = ""
    alpn: tuple[str, ...] = ()
    if draw(st.booleans()):
        extensions[0], sni = draw(server_name_extensions())
    if draw(st.booleans()):
        protocols = draw(alpn_protocol_lists())
        extensions[16] = _tls_vector(2, b"".join(_tls_vector(1, p) for p in protocols))
        alpn = tuple(p.decode("latin-1") for p in protocols)
    if draw(st.booleans()):
        extensions[21] = bytes(draw(st.integers(0, 600)))
    order = draw(st.permutations(sorted(extensions)))
    suites = draw(st.lists(st.binary(min_size=2, max_size=2), min_size=1, max_size=30))
    body = draw(st.binary(min_size=34, max_size=34))  # legacy_version + random
    body += _tls_vector(1, draw(st.binary(max_size=32))) + _tls_vector(2, b"".join(suites))
    body += _tls_vector(1, draw(st.binary(min_size=1, max_size=4)))
    with_block: bool = bool(extensions) or draw(st.booleans())
    if with_block:
        body += _tls_vector(2, b"".join(_tls_extension(t, extensions[t]) for t in order))
    return b"\x01" + _tls_vector(3, body), sni, alpn


@st.composite
def handshake_records(draw: st.DrawFn, message: bytes) -> bytes:
    """``message`` carried in handshake records split at random points (at most 16384 bytes
    each), with random legacy record versions 3.0–3.4."""
    cuts = draw(st.sets(st.integers(1, len(message) - 1), max_size=40))
    cuts |= set(range(16384, len(message), 16384))
    starts, ends = [0, *sorted(cuts)], [*sorted(cuts), len(message)]
    out = b""
    for start, end in zip(starts, ends, strict=True):
        minor = draw(st.integers(0, 4))
        out += bytes([22, 3, minor]) + _tls_vector(2, message[start:end])
    return out


def tls_like_bytes() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes behind the first two bytes of a TLS handshake record."""
    return st.binary(max_size=300).map(lambda tail: b"\x16\x03" + tail)


@st.composite
def mutated_hellos(draw: st.DrawFn) -> bytes:
    """Well-formed hello records with one to four bytes overwritten, inserted or deleted.

    The first two bytes stay (other strategies cover *not TLS*), and positions are counted from
    either end, so that Hypothesis' lean towards small numbers hits the extensions at the end as
    often as the headers at the start.
    """
    message, _, _ = draw(client_hellos())
    data = bytearray(draw(handshake_records(message)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(2, len(data) - 1))
        if draw(st.booleans()):
            pos = len(data) + 1 - pos
        match draw(st.sampled_from(["set", "insert", "delete"])):
            case "set":
                data[pos] = draw(st.integers(0, 255))
            case "insert":
                data.insert(pos, draw(st.integers(0, 255)))
            case _:
                del data[pos]
    return bytes(data)


# --- routing rules ---
#
# Inputs of ``routing/rules.py`` (SPEC §4.1): trees of calls, ``!``, ``&&`` and ``||`` whose
# names fit NAME and whose arguments are dense in what quoting must handle (backticks, quotes,
# backslashes, controls, CR, NUL, BOM, non-ASCII); and rule-like text, from the language's own
# tokens, near misses and junk, for the "only RuleSyntaxError escapes" property.

# Imported here, not at the top, because sections of this shared file are append-only.

#: Matcher names: declared-looking, other spellings, and minimal NAMEs.
RULE_NAMES: Final = ("Host", "HOST", "pathprefix", "Header", "ALPN", "a", "_", "_x1", "Q9")
#: Argument characters that exercise both string forms and every escape the renderer writes.
RULE_ARG_ALPHABET: Final = "ab /.*`\"'\\\n\r\t\x00\x07\x7f\x85\ufeff\u2028é€\U0001f600"
#: Token-ish pieces for rule-like text: valid tokens, whitespace, near misses and bad escapes.
RULE_PIECES: Final = (
    "Host", "a", "(", ")", ",", "&&", "||", "!", "`x`", "``", '"y"', '"\\x41"', '"\\u00e9"',
    " ", "\t", "\n", "\r", "&", "|", "'", "=", ".", "1", "`", '"', "\\", '"\\xff"', '"\\q"',
    "\ufeff", "\x00", "é",
)  # fmt: skip


def rule_names() -> st.SearchStrategy[str]:
    """NAME tokens: the sample above or any ``[A-Za-z_][A-Za-z0-9_]*`` up to 12 characters."""
    generated = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,11}", fullmatch=True)
    return st.sampled_from(RULE_NAMES) | generated


def rule_args() -> st.SearchStrategy[str]:
    """Argument values (empty included; no lone surrogates, which no rule string can hold)."""
    return st.text(RULE_ARG_ALPHABET, max_size=8) | st.text(max_size=8)


def rule_calls() -> st.SearchStrategy[Call]:
    """Calls with zeroed columns and 0–3 arguments."""
    return st.builds(
        lambda name, args: Call(name, tuple(args), 0, (0,) * len(args)),
        rule_names(),
        st.lists(rule_args(), max_size=3),
    )


def rule_trees() -> st.SearchStrategy[Node]:
    """Rule trees with zeroed columns, any shape (right-nested chains included)."""

    def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        return st.one_of(
            children.map(lambda operand: Not(operand, 0)),
            st.builds(And, children, children),
            st.builds(Or, children, children),
        )

    return st.recursive(rule_calls(), extend, max_leaves=10)


def rule_like_text() -> st.SearchStrategy[str]:
    """Text that is often nearly a rule: token pieces joined, or arbitrary text."""
    pieces = st.lists(st.sampled_from(RULE_PIECES), max_size=20).map("".join)
    return st.one_of(pieces, st.text(max_size=40), st.text(alphabet='()`"\\ &|!,\nax', max_size=30))


def rule_spacing() -> st.SearchStrategy[str]:
    """Runs of spaces and tabs (never a newline) to put between tokens."""
    return st.text(alphabet=" \t", max_size=3)


# --- RE2 regexes ---
#
# ``re2_trees()`` draws a syntax tree in a safe RE2 subset: literals in every RE2 spelling
# (plain, ``\xHH``, ``\x{H}``, octal, ``\Q…\E``, braces that are no repetition), ``.``,
# anchors, classes (ranges, a leading ``]``, POSIX and Perl items, negation), Perl classes,
# groups of every kind, flags set mid-group, alternation and quantifiers. ``render_re2`` spells a
# tree as RE2 text; the regex property renders the same tree as a naive Python reference.

#: Subject (and literal) characters: ASCII letters whose case matters, digits, white space
#: (with \v and \f, which RE2's \s leaves out), metacharacters, and three caseless non-ASCII
#: characters that Unicode \d, \s and \w accept but RE2's ASCII classes do not.
RE2_ALPHABET: Final = "aAbBkKsSxXzZ0139_ ,-.\n\t\v\f{}[]^$\\\u0663\xa0\u2192"
RE2_POSIX_NAMES: Final = (
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph",
    "lower", "print", "punct", "space", "upper", "word", "xdigit",
)  # fmt: skip
RE2_QUANTIFIERS: Final = (
    "", "", "*", "+", "?", "{2}", "{1,}", "{0,2}", "{0}", "*?", "+?", "??", "{1,2}?",
)  # fmt: skip
#: Flag specs for ``(?spec)`` and ``(?spec:…)``.
RE2_FLAG_SPECS: Final = ("i", "m", "s", "-i", "-m", "-s", "im", "i-s", "s-m", "ims")
#: Literal text with braces that can never start a repetition, whatever follows it.
RE2_BRACE_TEXTS: Final = ("}", "{,3}", "{x}", "{01}", "{1,x}", "{ 1}", "{,}")
#: Pieces of RE2 syntax, valid and not, for text that exercises every scanner branch.
RE2_TOKENS: Final = (
    "a", "B", "k", "0", "_", " ", "-", ".", "^", "$", "|", "(", ")", "(?:", "(?i)", "(?m)",
    "(?s)", "(?i:", "(?-i)", "(?U)", "(?P<n>", "(?<m>", "(?P<1>", "(?=", "(?!", "(?<=", "(?>",
    "(?(", "(?P=n)", "(?#", "(?)", "(?i-)", "*", "+", "?", "*?", "++", "*+", "{", "}", "{2}",
    "{1,2}", "{0}", "{,2}", "{2,}", "{01}", "{1001}", "{500}", "[", "]", "[^", "[:alpha:]",
    "[:^digit:]", "[:foo:]", ":]", "\\d", "\\D", "\\w", "\\W", "\\s", "\\S", "\\b", "\\B",
    "\\A", "\\z", "\\Z", "\\Q", "\\E", "\\.", "\\\\", "\\n", "\\x41", "\\x{62}", "\\x{110000}",
    "\\x4", "\\101", "\\0", "\\1", "\\12", "\\8", "\\k<n>", "\\pL", "\\p{Greek}", "\\C", "\\q",
    "\\_", "\\\u00e9", "\\u0041", "\\", "\u00e9", "\n",
)  # fmt: skip


class ReAtom(msgspec.Struct, frozen=True):
    """A leaf. ``kind``: ``lit`` (``text`` is one character, ``spelling`` how RE2 writes it:
    plain, hex, hexbrace, octal), ``dot``, ``anchor`` (``text``: ^ $ \\A \\z \\b \\B), ``perl``
    (``text``: one of dDsSwW), ``braces`` (literal text from RE2_BRACE_TEXTS), ``quote``
    (``text`` inside \\Q…\\E)."""

    kind: str
    text: str = ""
    spelling: str = "plain"


class ReClassItem(msgspec.Struct, frozen=True):
    """``range`` (``low``-``high``), ``posix`` (``low`` is the name) or ``perl`` (``low`` is
    the letter)."""

    kind: str
    low: str
    high: str = ""
    negated: bool = False


class ReClass(msgspec.Struct, frozen=True):
    negated: bool
    items: tuple[ReClassItem, ...]


class ReGroup(msgspec.Struct, frozen=True):
    """``kind``: capture, noncapture, named_p ``(?P<name>``, named_angle ``(?<name>`` or flags
    ``(?flags:``."""

    kind: str
    body: ReAlternation
    name: str = "n"
    flags: str = "i"


class ReSetFlags(msgspec.Struct, frozen=True):
    """``(?flags)``: changes the flags until the enclosing group ends."""

    flags: str


class RePiece(msgspec.Struct, frozen=True):
    atom: ReAtom | ReClass | ReGroup
    quantifier: str = ""


class ReAlternation(msgspec.Struct, frozen=True):
    branches: tuple[tuple[RePiece | ReSetFlags, ...], ...]


def _re2_leaves() -> st.SearchStrategy[ReAtom | ReClass | ReGroup]:
    chars = st.sampled_from(RE2_ALPHABET)
    spellings = st.sampled_from(["plain", "plain", "hex", "hexbrace", "octal"])
    quote_text = st.text(RE2_ALPHABET.replace("\\", ""), max_size=3)
    literals = st.builds(ReAtom, st.just("lit"), chars, spellings)
    anchors = st.sampled_from(["^", "$", "\\A", "\\z", "\\b", "\\B"])
    perl = st.builds(ReAtom, st.just("perl"), st.sampled_from("dDsSwW"))
    atoms = st.one_of(
        literals,
        literals,
        st.just(ReAtom("dot")),
        st.builds(ReAtom, st.just("anchor"), anchors),
        st.builds(ReAtom, st.just("anchor"), anchors),
        perl,
        perl,
        st.builds(ReAtom, st.just("braces"), st.sampled_from(RE2_BRACE_TEXTS)),
        st.builds(ReAtom, st.just("quote"), quote_text),
    )
    ranges = st.tuples(chars, chars).map(
        lambda pair: ReClassItem("range", min(pair, key=ord), max(pair, key=ord))
    )
    items = st.one_of(
        ranges,
        st.builds(
            ReClassItem,
            st.just("posix"),
            st.sampled_from(RE2_POSIX_NAMES),
            st.just(""),
            st.booleans(),
        ),
        st.builds(ReClassItem, st.just("perl"), st.sampled_from("dDsSwW")),
    )
    classes = st.builds(ReClass, st.booleans(), st.lists(items, min_size=1, max_size=3).map(tuple))
    return st.one_of(atoms, classes)


def _re2_alternations(
    atoms: st.SearchStrategy[ReAtom | ReClass | ReGroup],
) -> st.SearchStrategy[ReAlternation]:
    pieces = st.builds(_re2_piece, atoms, st.sampled_from(RE2_QUANTIFIERS))
    set_flags = st.builds(ReSetFlags, st.sampled_from(RE2_FLAG_SPECS))
    elements = st.one_of(*[pieces] * 7, set_flags)  # a piece seven times in eight
    sequences = st.lists(elements, min_size=1, max_size=3)
    return st.lists(sequences.map(tuple), min_size=1, max_size=2).map(
        lambda branches: ReAlternation(tuple(branches))
    )


#: Unbounded repeats of groups (and of empty-width assertions) nest into exponential backtracking
#: in Python's engine (RE2's is linear), so those take a bounded form instead.
_RE2_BOUNDED: Final = {"*": "{0,2}", "+": "{1,2}", "{1,}": "{1,2}", "*?": "{0,2}?", "+?": "{1,2}?"}


def _re2_piece(atom: ReAtom | ReClass | ReGroup, quantifier: str) -> RePiece:
    if isinstance(atom, ReGroup) or (isinstance(atom, ReAtom) and atom.kind == "anchor"):
        quantifier = _RE2_BOUNDED.get(quantifier, quantifier)
    return RePiece(atom, quantifier)


def _re2_groups(
    atoms: st.SearchStrategy[ReAtom | ReClass | ReGroup],
) -> st.SearchStrategy[ReAtom | ReClass | ReGroup]:
    return st.builds(
        ReGroup,
        st.sampled_from(["capture", "noncapture", "named_p", "named_angle", "flags"]),
        _re2_alternations(atoms),
        # Go accepts names Python does not (a leading digit, a name used twice).
        st.sampled_from(["n", "n", "_x1", "1x"]),
        st.sampled_from(RE2_FLAG_SPECS),
    )


def re2_trees() -> st.SearchStrategy[ReAlternation]:
    """Syntax trees of RE2 regexes in the safe subset (see the section comment)."""
    return _re2_alternations(st.recursive(_re2_leaves(), _re2_groups, max_leaves=4))


def re2_subjects(tree: ReAlternation) -> st.SearchStrategy[str]:
    """Short texts over RE2_ALPHABET, rich in the characters ``tree`` spells out (either case),
    some ending in a newline, some empty."""
    spelled = {c for text in _re2_texts(tree) for c in text + text.swapcase()}
    own = sorted(spelled & set(RE2_ALPHABET))
    # Characters where Python's defaults and RE2 part: white space \s leaves out, a non-ASCII
    # digit and space, letters with non-ASCII case partners.
    chars = st.sampled_from(RE2_ALPHABET) | st.sampled_from("\n\v\u0663\xa0kKsS")
    text = st.text(st.one_of(st.sampled_from(own), chars) if own else chars, max_size=8)
    # A final newline tells $ from \z; the empty text tells RE2's \B from Python's.
    return st.one_of(text, text.map(lambda t: t + "\n"), st.just(""))


def _re2_texts(node: ReAlternation | ReAtom | ReClass | ReGroup) -> list[str]:
    """The literal text a tree spells out: literals, quoted text, class range ends."""
    match node:
        case ReAlternation():
            pieces = [e.atom for branch in node.branches for e in branch if isinstance(e, RePiece)]
            return [text for atom in pieces for text in _re2_texts(atom)]
        case ReGroup():
            return _re2_texts(node.body)
        case ReClass():
            return [item.low + item.high for item in node.items if item.kind == "range"]
        case ReAtom(kind="lit" | "quote" | "braces"):
            return [node.text]
    return []


def re2_pattern_text() -> st.SearchStrategy[str]:
    """Text for the regex scanner: runs of RE2 tokens, regex-dense characters, anything."""
    return st.one_of(
        st.lists(st.sampled_from(RE2_TOKENS), max_size=10).map("".join),
        st.text("[]^-\\:adkswDWSpPQEx{},019()?*+|.$<>=!ibmzAB_\u00e9\n", max_size=12),
        st.text(max_size=20),
    )


def render_re2(tree: ReAlternation) -> str:
    """A tree as RE2 text."""
    return "|".join("".join(map(_re2_element, branch)) for branch in tree.branches)


def _re2_element(element: RePiece | ReSetFlags) -> str:
    if isinstance(element, ReSetFlags):
        return f"(?{element.flags})"
    text = _re2_atom(element.atom)
    multi = isinstance(element.atom, ReAtom) and element.atom.kind in ("braces", "quote")
    if element.quantifier and multi:
        text = f"(?:{text})"
    return text + element.quantifier


def _re2_atom(atom: ReAtom | ReClass | ReGroup) -> str:
    if isinstance(atom, ReGroup):
        opener = {
            "capture": "(",
            "noncapture": "(?:",
            "named_p": f"(?P<{atom.name}>",
            "named_angle": f"(?<{atom.name}>",
            "flags": f"(?{atom.flags}:",
        }[atom.kind]
        return opener + render_re2(atom.body) + ")"
    if isinstance(atom, ReClass):
        return _re2_class(atom)
    match atom.kind:
        case "lit":
            return _re2_char(atom.text, atom.spelling)
        case "dot":
            return "."
        case "perl":
            return "\\" + atom.text
        case "quote":
            return f"\\Q{atom.text}\\E"
        case _:  # anchor, braces
            return atom.text


def _re2_char(char: str, spelling: str = "plain") -> str:
    code = ord(char)
    if spelling == "hex" and code < 0x100:
        return f"\\x{code:02x}"
    if spelling == "hexbrace":
        return f"\\x{{{code:X}}}"
    if spelling == "octal" and code < 0o1000:
        return f"\\{code:03o}"
    named = {"\n": "\\n", "\t": "\\t", "\v": "\\v", "\f": "\\f"}
    if char in named:
        return named[char]
    return "\\" + char if char in string.punctuation or char == " " else char


def _re2_class(node: ReClass) -> str:
    parts: list[str] = []
    for index, item in enumerate(node.items):
        if item.kind == "posix":
            parts.append(f"[:{'^' if item.negated else ''}{item.low}:]")
        elif item.kind == "perl":
            parts.append("\\" + item.low)
        elif index == 0 and item.low == item.high == "]":
            parts.append("]")  # a "]" first in a class is literal
        elif item.low == item.high:
            parts.append(_re2_char(item.low))
        else:
            parts.append(f"{_re2_char(item.low)}-{_re2_char(item.high)}")
    return "[" + ("^" if node.negated else "") + "".join(parts) + "]"


# --- route tables (naive reference) ---
#
# Rules are generated as small trees over a fixed vocabulary so that generated requests hit
# them often; ``render_tree`` writes the v3 text and ``reference_matches`` (in the test module)
# interprets the same tree the obvious way.

RuleTree: TypeAlias = tuple[object, ...]
_TREE_LEAVES: Final = (
    ("Host", "a.test"),
    ("Host", "b.test"),
    ("Host", "*.w.test"),
    ("PathPrefix", "/a"),
    ("PathPrefix", "/"),
    ("Path", "/a/b"),
    ("Method", "GET"),
    ("Method", "POST"),
    ("Header", "X-Tag", "on"),
    ("Query", "debug"),
    ("Query", "v", "2"),
    ("ClientIP", "10.0.0.0/8"),
    ("PathRegexp", "^/a/[0-9]+$"),
)


def route_rule_trees() -> st.SearchStrategy[RuleTree]:
    """Trees of ("leaf", name, *args) / ("not", t) / ("and", a, b) / ("or", a, b)."""
    leaf = st.sampled_from(_TREE_LEAVES).map(lambda call: ("leaf", *call))
    return st.recursive(
        leaf,
        lambda children: st.one_of(
            children.map(lambda t: ("not", t)),
            st.tuples(st.just("and"), children, children),
            st.tuples(st.just("or"), children, children),
        ),
        max_leaves=6,
    )


def render_tree(tree: RuleTree) -> str:
    """v3 rule text for a generated tree (fully parenthesised)."""
    kind = tree[0]
    if kind == "leaf":
        args = ", ".join(f"`{arg}`" for arg in tree[2:])
        return f"{tree[1]}({args})"
    if kind == "not":
        return f"!({render_tree(cast('RuleTree', tree[1]))})"
    left, right = cast("RuleTree", tree[1]), cast("RuleTree", tree[2])
    operator = " && " if kind == "and" else " || "
    return f"({render_tree(left)}{operator}{render_tree(right)})"


def routed_requests() -> st.SearchStrategy[HttpRequestInfo]:
    """Requests over the same vocabulary as ``route_rule_trees``."""
    return st.builds(
        HttpRequestInfo,
        method=st.sampled_from(["GET", "POST", "get", "PUT"]),
        host=st.sampled_from(
            ["a.test", "A.TEST.", "b.test:8080", "x.w.test", "w.test", "", "[::1]:80"]
        ),
        path=st.sampled_from(["/", "/a", "/a/b", "/a/12", "/apiary", "/b", "/a%2Fb"]),
        headers=st.lists(
            st.tuples(st.sampled_from(["X-Tag", "x-tag", "Other"]), st.sampled_from(["on", "off"])),
            max_size=2,
        ),
        query=st.sampled_from(["", "debug", "debug=1", "v=2", "v=1&v=2", "v=2;x"]),
        remote_addr=st.sampled_from(["10.1.2.3:5000", "192.0.2.1:1", "[::ffff:10.0.0.9]:2", ""]),
    )


# --- header lists ---
#
# Inputs of ``protocols/headers.py`` (SPEC §5.4): h11-style header lists with lower-case names,
# dense in hop-by-hop and forwarding fields, ``Connection`` lines that name other lines in mixed
# case with optional whitespace, and ``X-Forwarded-For`` chains of addresses and junk.

#: Names the header rules treat specially, plus a few ordinary ones that recur.
SPECIAL_HEADER_NAMES: Final = (
    "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade",
    "trailer", "proxy-authorization", "proxy-authenticate", "http2-settings", "expect", "via",
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip",
    "forwarded", "x-forwarded-prefix", "host", "content-length", "cookie", "accept", "x-a", "x-b",
)  # fmt: skip
#: RFC 9110 §5.6.2 tchar, lower case (names arrive lower-cased).
TCHARS_LOWER: Final = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_lowercase


def header_names() -> st.SearchStrategy[bytes]:
    """Lower-case field names: mostly the special ones, sometimes arbitrary tokens."""
    arbitrary = st.text(alphabet=TCHARS_LOWER, min_size=1, max_size=8)
    return st.one_of(st.sampled_from(SPECIAL_HEADER_NAMES), arbitrary).map(str.encode)


def header_values() -> st.SearchStrategy[bytes]:
    """Field values as received: visible ASCII, SP, HTAB and obs-text, commas frequent."""
    octets = st.one_of(
        st.integers(0x21, 0x7E), st.sampled_from([0x20, 0x09, 0x2C]), st.integers(0x80, 0xFF)
    )
    return st.lists(octets, max_size=20).map(bytes)


def connection_values() -> st.SearchStrategy[bytes]:
    """``Connection`` values: comma lists of names in random case, OWS and empty elements."""
    option = st.tuples(header_names(), st.booleans(), st.sampled_from([b"", b" ", b"\t", b"  "]))
    rendered = option.map(lambda drawn: drawn[2] + (drawn[0].upper() if drawn[1] else drawn[0]))
    return st.lists(rendered | st.just(b""), max_size=5).map(b",".join)


def xff_values() -> st.SearchStrategy[bytes]:
    """``X-Forwarded-For`` values: comma lists of IPv4/IPv6 addresses, sometimes junk entries."""
    entry = st.one_of(
        st.ip_addresses().map(lambda ip: str(ip).encode()),
        st.sampled_from([b"unknown", b"[2001:db8::1]:80", b"192.0.2.1:8080", b"", b" "]),
    )
    return st.lists(entry, max_size=5).map(b", ".join)


def header_lines() -> st.SearchStrategy[tuple[bytes, bytes]]:
    """One field line; ``Connection`` and ``X-Forwarded-For`` get values of their own shape."""

    def value_for(name: bytes) -> st.SearchStrategy[bytes]:
        if name == b"connection":
            return connection_values()
        if name == b"x-forwarded-for":
            return xff_values()
        return header_values()

    return header_names().flatmap(lambda name: value_for(name).map(lambda value: (name, value)))


def header_lists() -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    """Header lists as h11 hands them over: lower-case names, wire order, repeats allowed."""
    return st.lists(header_lines(), max_size=14)


def forwarding_contexts(
    trusted: st.SearchStrategy[bool] | None = None,
) -> st.SearchStrategy[ForwardingContext]:
    """Per-request forwarding inputs; ``trusted`` fixes the peer's trust when given."""
    return st.builds(
        ForwardingContext,
        peer_ip=st.ip_addresses().map(str),
        peer_trusted=st.booleans() if trusted is None else trusted,
        client_ip=st.ip_addresses().map(str),
        tls=st.booleans(),
        authority=header_values(),
        via_protocol=st.sampled_from([b"1.0", b"1.1", b"2"]),
        add_via=st.booleans(),
    )
