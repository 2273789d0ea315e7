"""Trace context and request ids: extract, continue and propagate (SPEC §9.4 without export, §9.5).

Ring 0: pure functions over header lists (``protocols/headers.py``'s representation: lower-case
name bytes, values as received). No clock, no sockets, and no entropy of its own: randomness
comes from a ``random.Random`` the Ring 1 caller seeds from ``secrets`` once per worker process
(``Random(secrets.randbits(128))``, made where the worker's ``ServerContext`` is built, never
before a fork) and passes in (SPEC §9.4 "Randomness from ``random.Random`` seeded via
``secrets``"). The trio event loop is single-threaded, so one generator serves every request.

Per request the data plane calls, with tracing enabled (SPEC §5.14 step 5, §5.4 step 8):

1. ``extract(headers)`` on the headers as received → ``Incoming`` or ``None`` (no valid context:
   a new root);
2. ``start_span(incoming, rng, sample_rate)`` → the gateway's ``Span`` (kept for the exchange:
   its ids go to the access log, ``span.trace_id.decode()``);
3. ``inject(upstream_headers, span, forms)`` on every upstream request it sends (the primary
   attempts, mirror copies, forward-auth calls, WebSocket upgrades), with ``forms`` computed once
   per config generation by ``propagation_forms(observability.tracing_propagation)``.

and, with ``request_id_header`` set, ``request_id(headers, name, trusted=…, rng=…)`` once and
``set_request_id`` on the upstream headers and the response headers.

Ids are kept as lower-case hex **bytes** (32 characters for a trace id, 16 for a span id): that
is their wire form in every propagation format, so nothing is converted on the way through.

Cost: the common request carries no trace header, and for it ``extract`` is one pass of set
lookups over the header names that allocates nothing; ``inject`` is one filtering copy plus the
new lines. Nothing here raises on any header bytes: a value that does not match its grammar
exactly is ignored (SPEC §9.4 "Invalid = absent"; §14.3).

Must not: decide whether tracing is on (callers skip every call with ``tracing_enabled =
false``, SPEC §9.4), export spans, log, or read entropy or the clock itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, NamedTuple, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Iterable
    from random import Random

    from a3s_gateway.protocols.headers import HeaderLine, Headers

__all__ = [
    "ALL_FORMS",
    "B3",
    "B3_MULTI",
    "TRACE_HEADER_NAMES",
    "W3C",
    "Forms",
    "Incoming",
    "Span",
    "extract",
    "inject",
    "new_request_id",
    "propagation_forms",
    "request_id",
    "set_request_id",
    "start_span",
    "valid_request_id",
]

#: A set of propagation formats as bit flags (``W3C | B3``); plain ints because an ``IntFlag``
#: operation costs about a microsecond and this runs per request.
Forms: TypeAlias = int
W3C: Final[Forms] = 1
B3: Final[Forms] = 2
B3_MULTI: Final[Forms] = 4
ALL_FORMS: Final[Forms] = W3C | B3 | B3_MULTI
#: ``tracing_propagation`` words (SPEC §3.14) → forms.
_FORM_WORDS: Final[dict[str, Forms]] = {"w3c": W3C, "b3": B3, "b3multi": B3_MULTI}

_TRACEPARENT: Final = b"traceparent"
_TRACESTATE: Final = b"tracestate"
_B3: Final = b"b3"
_B3_TRACE_ID: Final = b"x-b3-traceid"
_B3_SPAN_ID: Final = b"x-b3-spanid"
_B3_PARENT_ID: Final = b"x-b3-parentspanid"
_B3_SAMPLED: Final = b"x-b3-sampled"
_B3_FLAGS: Final = b"x-b3-flags"
_B3_MULTI_NAMES: Final = (_B3_TRACE_ID, _B3_SPAN_ID, _B3_PARENT_ID, _B3_SAMPLED, _B3_FLAGS)
_B3_MULTI_SET: Final = frozenset(_B3_MULTI_NAMES)
#: Every header any propagation format uses: read by ``extract``, replaced by ``inject``.
TRACE_HEADER_NAMES: Final[frozenset[bytes]] = frozenset(
    {_TRACEPARENT, _TRACESTATE, _B3, *_B3_MULTI_NAMES}
)

_HEX_DIGITS: Final = b"0123456789abcdef"
_ZERO_TRACE: Final = b"0" * 32
_ZERO_SPAN: Final = b"0" * 16
_B3_PAD: Final = b"0" * 16
_OWS: Final = b" \t"
_OWS_COMMA: Final = b" \t,"
# traceparent: "vv-" + 32 + "-" + 16 + "-" + "ff" (W3C Trace Context §3.2).
_TRACEPARENT_LENGTH: Final = 55
# The longest b3 value: trace(32) "-" span(16) "-" sampled(1) "-" parent(16).
_B3_MAX_LENGTH: Final = 68
_TRACESTATE_MAX_MEMBERS: Final = 32
_TRACESTATE_MAX_BYTES: Final = 512
# W3C trace-flags whose low bit (sampled) is set, as the second hex digit's byte value.
_ODD_HEX: Final = frozenset(b"13579bdf")
_B3_SAMPLING: Final[dict[bytes, tuple[bool, bool]]] = {  # value → (sampled, debug)
    b"1": (True, False),
    b"0": (False, False),
    b"d": (True, True),
}
_B3_MULTI_SAMPLED: Final[dict[bytes, bool]] = {
    b"1": True,
    b"true": True,
    b"0": False,
    b"false": False,
}

#: SPEC §9.5: ``^[A-Za-z0-9._:-]{1,128}$``.
_REQUEST_ID_CHARS: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
_REQUEST_ID_MAX: Final = 128


class Incoming(NamedTuple):
    """The valid trace context a request carried (what ``extract`` found).

    ``trace_id`` (32 lower-case hex bytes) and ``span_id`` (16) are both empty when the request
    carried only a B3 sampling decision (``b3: 0``/``1``/``d``, or ``X-B3-Sampled``/``-Flags``
    without ids): the gateway then starts a new trace but keeps that decision.
    """

    trace_id: bytes
    span_id: bytes
    #: The caller's sampling decision; None when it deferred (B3 without a sampling state).
    sampled: bool | None
    #: B3 debug (``d`` or ``X-B3-Flags: 1``); implies sampled.
    debug: bool
    #: The ``tracestate`` to pass on unchanged (only next to a valid ``traceparent``).
    tracestate: bytes | None
    #: Every format whose headers the request carried (valid or not), so that ``inject``
    #: answers in the same forms with consistent ids.
    forms: Forms


class Span(NamedTuple):
    """The gateway's span for one exchange: what upstream requests and the access log carry."""

    trace_id: bytes
    span_id: bytes
    #: The incoming span id (the caller's span is our parent); empty for a new root.
    parent_id: bytes
    sampled: bool
    debug: bool
    tracestate: bytes | None
    #: The formats the request used (``Incoming.forms``); ``inject`` adds the configured ones.
    forms: Forms

    def traceparent(self) -> bytes:
        """``00-<trace>-<span>-<flags>``; flags ``01`` when sampled, else ``00``."""
        return b"00-%s-%s-%s" % (self.trace_id, self.span_id, b"01" if self.sampled else b"00")

    def b3(self) -> bytes:
        """The B3 single value ``<trace>-<span>-<1|0|d>[-<parent>]``."""
        state = b"d" if self.debug else b"1" if self.sampled else b"0"
        if self.parent_id:
            return b"%s-%s-%s-%s" % (self.trace_id, self.span_id, state, self.parent_id)
        return b"%s-%s-%s" % (self.trace_id, self.span_id, state)

    def b3_multi(self) -> list[HeaderLine]:
        """The B3 multi lines; debug is sent as ``X-B3-Flags: 1`` instead of ``X-B3-Sampled``
        (B3 propagation: debug implies an accept decision)."""
        lines = [(_B3_TRACE_ID, self.trace_id), (_B3_SPAN_ID, self.span_id)]
        if self.parent_id:
            lines.append((_B3_PARENT_ID, self.parent_id))
        if self.debug:
            lines.append((_B3_FLAGS, b"1"))
        else:
            lines.append((_B3_SAMPLED, b"1" if self.sampled else b"0"))
        return lines


# --------------------------------------------------------------------------- configuration


def propagation_forms(words: Iterable[str]) -> Forms:
    """``tracing_propagation`` (``w3c``, ``b3``, ``b3multi``) as ``Forms``; unknown words (the
    schema rejects them) are ignored. Compute once per config generation."""
    forms = 0
    for word in words:
        forms |= _FORM_WORDS.get(word, 0)
    return forms


# --------------------------------------------------------------------------- extract


def extract(headers: Iterable[HeaderLine]) -> Incoming | None:
    """SPEC §9.4 "Extract": the first valid of ``traceparent``, ``b3``, B3 multi; None if none.

    A format whose header appears on more than one line is invalid (the value is ambiguous),
    except ``tracestate``, whose lines are joined with ``,`` as W3C Trace Context §3.3.1 allows.
    Never raises.
    """
    found: dict[bytes, bytes] | None = None
    for name, value in headers:
        if name in TRACE_HEADER_NAMES:
            if found is None:
                found = {}
            previous = found.get(name)
            if previous is None:
                found[name] = value
            elif name == _TRACESTATE:
                found[name] = previous + b"," + value
            else:
                # A repeated single-valued header: b"" fails every grammar below.
                found[name] = b""
    if found is None:
        return None
    return _from_found(found)


def _from_found(found: dict[bytes, bytes]) -> Incoming | None:
    forms = 0
    if _TRACEPARENT in found:
        forms |= W3C
    if _B3 in found:
        forms |= B3
    if not _B3_MULTI_SET.isdisjoint(found):
        forms |= B3_MULTI

    value = found.get(_TRACEPARENT)
    if value is not None:
        parsed = _parse_traceparent(value)
        if parsed is not None:
            trace_id, span_id, sampled = parsed
            state = found.get(_TRACESTATE)
            tracestate = None if state is None else _bounded_tracestate(state)
            return Incoming(trace_id, span_id, sampled, False, tracestate, forms)
    value = found.get(_B3)
    if value is not None:
        incoming = _parse_b3_single(value, forms)
        if incoming is not None:
            return incoming
    if forms & B3_MULTI:
        return _parse_b3_multi(found, forms)
    return None


def _is_hex(value: bytes) -> bool:
    """All lower-case hex digits (true for b""; callers check the length)."""
    return not value.translate(None, _HEX_DIGITS)


def _parse_traceparent(value: bytes) -> tuple[bytes, bytes, bool] | None:
    """W3C ``traceparent`` → (trace id, parent id, sampled), or None when invalid."""
    value = value.strip(_OWS)
    size = len(value)
    if size < _TRACEPARENT_LENGTH:
        return None
    if value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    version = value[:2]
    if version == b"ff":
        return None
    # Version 00 has exactly four fields; a later version may append "-" and more (ignored).
    if size > _TRACEPARENT_LENGTH and (version == b"00" or value[55:56] != b"-"):
        return None
    trace_id = value[3:35]
    span_id = value[36:52]
    flags = value[53:55]
    if not _is_hex(version + trace_id + span_id + flags):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, flags[1] in _ODD_HEX


def _bounded_tracestate(value: bytes) -> bytes | None:
    """The ``tracestate`` unchanged when it has 1–32 members and at most 512 bytes, else None."""
    if len(value) > _TRACESTATE_MAX_BYTES or not value.strip(_OWS_COMMA):
        return None
    # Commas bound the member count; only a long list needs its empty members discounted.
    if value.count(b",") >= _TRACESTATE_MAX_MEMBERS:
        members = sum(1 for member in value.split(b",") if member.strip(_OWS))
        if members > _TRACESTATE_MAX_MEMBERS:
            return None
    return value


def _b3_trace_id(value: bytes) -> bytes | None:
    """A B3 trace id (16 or 32 lower hex, not all zero) as 32 hex; 64-bit ids left-padded."""
    if len(value) == 16:
        value = _B3_PAD + value
    elif len(value) != 32:
        return None
    if not _is_hex(value) or value == _ZERO_TRACE:
        return None
    return value


def _b3_span_id(value: bytes) -> bool:
    """A B3 span (or parent span) id: 16 lower hex, not all zero."""
    return len(value) == 16 and _is_hex(value) and value != _ZERO_SPAN


def _parse_b3_single(value: bytes, forms: Forms) -> Incoming | None:
    """``b3: <trace>-<span>[-<sampled>[-<parent>]]`` or a lone ``0``/``1``/``d``."""
    value = value.strip(_OWS)
    if len(value) > _B3_MAX_LENGTH:
        return None
    lone = _B3_SAMPLING.get(value)
    if lone is not None:
        return Incoming(b"", b"", lone[0], lone[1], None, forms)
    fields = value.split(b"-")
    if not 2 <= len(fields) <= 4:
        return None
    trace_id = _b3_trace_id(fields[0])
    span_id = fields[1]
    if trace_id is None or not _b3_span_id(span_id):
        return None
    sampled: bool | None = None
    debug = False
    if len(fields) >= 3:
        state = _B3_SAMPLING.get(fields[2])
        if state is None:
            return None
        sampled, debug = state
    if len(fields) == 4 and not _b3_span_id(fields[3]):
        return None
    return Incoming(trace_id, span_id, sampled, debug, None, forms)


def _parse_b3_multi(found: dict[bytes, bytes], forms: Forms) -> Incoming | None:
    """``X-B3-TraceId``/``-SpanId`` (both or neither), ``-ParentSpanId``, ``-Sampled``
    (``1``/``0``/``true``/``false``), ``-Flags`` (``1`` debug, ``0`` none)."""
    sampled: bool | None = None
    debug = False
    value = found.get(_B3_SAMPLED)
    if value is not None:
        sampled = _B3_MULTI_SAMPLED.get(value.strip(_OWS))
        if sampled is None:
            return None
    value = found.get(_B3_FLAGS)
    if value is not None:
        value = value.strip(_OWS)
        if value == b"1":
            debug = sampled = True
        elif value != b"0":
            return None
    value = found.get(_B3_PARENT_ID)
    if value is not None and not _b3_span_id(value.strip(_OWS)):
        return None
    raw_trace = found.get(_B3_TRACE_ID)
    raw_span = found.get(_B3_SPAN_ID)
    if raw_trace is None and raw_span is None:
        # A sampling decision without ids (B3: "X-B3-Sampled: 0" alone means deny).
        if sampled is None:
            return None
        return Incoming(b"", b"", sampled, debug, None, forms)
    if raw_trace is None or raw_span is None:
        return None
    trace_id = _b3_trace_id(raw_trace.strip(_OWS))
    span_id = raw_span.strip(_OWS)
    if trace_id is None or not _b3_span_id(span_id):
        return None
    return Incoming(trace_id, span_id, sampled, debug, None, forms)


# --------------------------------------------------------------------------- span


def _random_hex(rng: Random, bits: int, template: bytes) -> bytes:
    """``bits`` random bits, never all zero, as fixed-width lower-case hex."""
    number = rng.getrandbits(bits)
    while not number:
        number = rng.getrandbits(bits)
    return template % number


def start_span(incoming: Incoming | None, rng: Random, sample_rate: float) -> Span:
    """SPEC §9.4 "Gateway span": continue ``incoming`` or start a new root.

    Trace id from the request, else 16 random bytes; span id 8 random bytes; neither is ever all
    zero. The parent is the incoming span id (no phantom hop). Sampled is the caller's decision,
    else ``rng.random() < sample_rate`` (1.0 always, 0.0 never, without drawing). Never raises.
    """
    if incoming is None:
        return Span(
            _random_hex(rng, 128, b"%032x"),
            _random_hex(rng, 64, b"%016x"),
            b"",
            _sample(rng, sample_rate),
            False,
            None,
            0,
        )
    trace_id = incoming.trace_id or _random_hex(rng, 128, b"%032x")
    sampled = incoming.sampled
    if sampled is None:
        sampled = _sample(rng, sample_rate)
    return Span(
        trace_id,
        _random_hex(rng, 64, b"%016x"),
        incoming.span_id,
        sampled,
        incoming.debug,
        incoming.tracestate,
        incoming.forms,
    )


def _sample(rng: Random, sample_rate: float) -> bool:
    if sample_rate >= 1.0:
        return True
    if sample_rate > 0.0:
        return rng.random() < sample_rate
    return False


# --------------------------------------------------------------------------- inject


def inject(headers: Iterable[HeaderLine], span: Span, forms: Forms) -> Headers:
    """SPEC §9.4 "Inject": a copy of ``headers`` carrying ``span`` upstream.

    Every trace header of any format is removed (``TRACE_HEADER_NAMES``), then ``traceparent``
    (always), ``tracestate`` (when kept), and B3 in the forms the request used plus ``forms``
    (``propagation_forms`` of the config) are appended, all with the same ids. Other lines keep
    their order. Never mutates ``headers``.
    """
    out = [line for line in headers if line[0] not in TRACE_HEADER_NAMES]
    out.append((_TRACEPARENT, span.traceparent()))
    if span.tracestate is not None:
        out.append((_TRACESTATE, span.tracestate))
    wanted = forms | span.forms
    if wanted & B3:
        out.append((_B3, span.b3()))
    if wanted & B3_MULTI:
        out.extend(span.b3_multi())
    return out


# --------------------------------------------------------------------------- request id


def valid_request_id(value: bytes) -> bool:
    """Whether ``value`` matches ``^[A-Za-z0-9._:-]{1,128}$`` (SPEC §9.5)."""
    return 0 < len(value) <= _REQUEST_ID_MAX and not value.translate(None, _REQUEST_ID_CHARS)


def new_request_id(rng: Random) -> bytes:
    """32 random lower-case hex characters."""
    return b"%032x" % rng.getrandbits(128)


def request_id(headers: Iterable[HeaderLine], name: bytes, *, trusted: bool, rng: Random) -> bytes:
    """SPEC §9.5: the request's id. ``name`` is the lower-cased ``request_id_header``.

    The value from a trusted peer (``forwarded_headers``, SPEC §3.7) is kept when it is on one
    line and valid (``valid_request_id``); otherwise, or from an untrusted peer (whose headers
    are not even read), a new one. Never raises.
    """
    if trusted:
        kept: bytes | None = None
        for line_name, value in headers:
            if line_name == name:
                if kept is not None:  # repeated: ambiguous, replace it
                    kept = None
                    break
                kept = value
        if kept is not None and valid_request_id(kept):
            return kept
    return new_request_id(rng)


def set_request_id(headers: Iterable[HeaderLine], name: bytes, value: bytes) -> Headers:
    """A copy of ``headers`` with every ``name`` line replaced by one ``name: value`` at the end
    (the upstream request, so the client's copies never pass; or the response). ``name`` is
    lower-case."""
    out = [line for line in headers if line[0] != name]
    out.append((name, value))
    return out
