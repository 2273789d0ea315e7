"""The in-process ``rate-limit`` middleware (SPEC §8.6): token buckets per request key.

Ring 0: pure; no trio, sockets, TLS, clocks or logging. Time is ``RequestState.now``.

Three parts:

* ``TokenBucket`` and ``BucketTable``: the arithmetic. A bucket holds up to ``burst`` tokens and
  refills continuously at ``rate`` tokens per second; a new bucket starts full; a request costs
  one token and is allowed when at least one is left. The table keeps at most ``max_keys``
  buckets in an ``OrderedDict`` in least-recently-used order, so a request is O(1) and an
  evicted key simply starts full again. A ``now`` earlier than a bucket's last update (requests
  reach this middleware slightly out of start order when an earlier middleware awaits) refills
  nothing and does not move the bucket's clock back, so time never runs twice.
* ``key_function``: the ``rate_limit_key`` expressions of SPEC §3.3 (``client-ip``, ``global``,
  ``host``, ``path``, ``header:<Name>``, ``cookie:<name>``, ``query:<name>``) as functions of the
  request; a missing value is the key ``b""``.
* ``RateLimitMiddleware``: 429 ``rate limit exceeded`` with ``Retry-After`` when the bucket is
  empty, and the ``RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` fields when
  ``rate_limit_headers`` is on: on its own 429 directly (a short-circuit does not pass through
  its own response side, SPEC §8.1), on every other response from the response side.

The response side has no per-request storage (``RequestState`` has slots and none for this, and
per-request state must not live on the instance), so it derives the key again from the request
and reads that bucket without consuming or creating anything. Consequences, accepted:
``Remaining`` and ``Reset`` describe the bucket when the response head passes (other requests of
the same key may have taken tokens since), and a key read from something a later middleware
changes (``path`` after ``strip-prefix``, a header set or removed by ``headers``) may name
another bucket; a key without a bucket reports a full one, which is what a request with that key
would find. ``client-ip``, ``global`` and ``host`` cannot change on the way.

Must not: read a clock, keep per-request state on the instance, create or consume tokens on the
response side, grow past ``max_keys`` buckets, or raise on any request value.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Self

from a3s_gateway.config.values import KEY_EXPRESSION_PATTERN
from a3s_gateway.middleware.contract import Middleware
from a3s_gateway.protocols.responses import error_response
from a3s_gateway.routing.request import canonical_host, parse_query

if TYPE_CHECKING:
    from collections.abc import Callable

    from a3s_gateway.config.schema_middlewares import RateLimit
    from a3s_gateway.middleware.contract import RequestState
    from a3s_gateway.protocols.headers import HeaderLine, Headers
    from a3s_gateway.protocols.responses import GeneratedResponse

__all__ = [
    "RATE_LIMITED",
    "BucketTable",
    "Decision",
    "RateLimitMiddleware",
    "TokenBucket",
    "default_burst",
    "key_function",
    "set_fields",
    "too_many",
]

#: The 429 ``error`` text (SPEC §8.6).
RATE_LIMITED: Final = "rate limit exceeded"
#: The largest number of seconds written into ``Retry-After`` or ``RateLimit-Reset`` (a tiny
#: ``rate`` would otherwise give an infinite or absurd wait); about 31 years.
MAX_SECONDS: Final = 1_000_000_000
#: The largest default ``burst`` (``⌈rate⌉`` of an enormous or infinite ``rate``): 2**53, the
#: largest integer every float below it represents exactly.
MAX_DEFAULT_BURST: Final = 2**53

_LIMIT: Final = b"ratelimit-limit"
_REMAINING: Final = b"ratelimit-remaining"
_RESET: Final = b"ratelimit-reset"
_FIELDS: Final = frozenset({_LIMIT, _REMAINING, _RESET})
_RETRY_AFTER: Final = b"retry-after"
_COOKIE: Final = b"cookie"
_OWS: Final = b" \t"
_NO_KEY: Final = b""
_EXPRESSION: Final = re.compile(KEY_EXPRESSION_PATTERN)
#: Longer ``RateLimit-Remaining`` values are ignored (``int`` refuses very long digit runs).
_MAX_DIGITS: Final = 18


def default_burst(rate: float) -> int:
    """``burst`` when unset: ``⌈rate⌉`` (SPEC §3.11), at least 1, at most ``MAX_DEFAULT_BURST``."""
    return max(1, math.ceil(min(rate, MAX_DEFAULT_BURST)))


def _seconds(value: float) -> int:
    """``⌈value⌉`` as whole seconds, capped at ``MAX_SECONDS`` (``value`` may be infinite)."""
    return math.ceil(min(value, MAX_SECONDS))


# --------------------------------------------------------------------------- buckets


class TokenBucket:
    """One key's bucket: ``tokens`` left at ``stamp`` (the latest ``now`` it has seen)."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp

    def refill(self, now: float, rate: float, burst: float) -> None:
        """Add ``rate`` tokens per second since ``stamp``, up to ``burst``.

        A ``now`` at or before ``stamp`` adds nothing and leaves ``stamp`` where it is.
        """
        if now > self.stamp:
            self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
            self.stamp = now

    def __repr__(self) -> str:
        return f"TokenBucket(tokens={self.tokens!r}, stamp={self.stamp!r})"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one request against its bucket, with the values of the SPEC §8.6 fields.

    ``tokens`` is what is left after this request (after refill; minus the one token it took
    when ``allowed``). ``remaining`` = ⌊tokens⌋, ``reset`` = ⌈seconds until full⌉ and
    ``retry_after`` = ⌈(1 − tokens) ÷ rate⌉, at least 1 (0 when ``allowed``).
    """

    allowed: bool
    tokens: float
    limit: int
    remaining: int
    reset: int
    retry_after: int


class BucketTable:
    """The buckets of one middleware definition, at most ``max_keys``, least recently used out.

    Raises ``ValueError`` for a ``rate`` that is not > 0 (NaN included), a ``burst`` or
    ``max_keys`` below 1.
    """

    __slots__ = ("_buckets", "_burst", "_limit", "_max_keys", "_rate")

    def __init__(self, *, rate: float, burst: int, max_keys: int) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, not {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, not {burst!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, not {max_keys!r}")
        self._rate = rate
        self._limit = burst
        self._burst = float(burst)
        self._max_keys = max_keys
        self._buckets: OrderedDict[bytes, TokenBucket] = OrderedDict()

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self._rate

    @property
    def burst(self) -> int:
        """The capacity of every bucket."""
        return self._limit

    @property
    def max_keys(self) -> int:
        """The most buckets kept at once."""
        return self._max_keys

    def __len__(self) -> int:
        """How many keys have a bucket (the ``a3s_rate_limit_keys`` gauge)."""
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def tokens(self, key: bytes) -> float | None:
        """The tokens of ``key``'s bucket as last updated (no refill), None without a bucket."""
        bucket = self._buckets.get(key)
        return None if bucket is None else bucket.tokens

    def take(self, key: bytes, now: float) -> Decision:
        """Charge one request of ``key`` at ``now``: refill, then take a token if one is left.

        A key without a bucket gets a full one, evicting the least recently used bucket when the
        table is at ``max_keys``; ``key`` becomes the most recently used either way.
        """
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self._max_keys:
                buckets.popitem(last=False)
            bucket = buckets[key] = TokenBucket(self._burst, now)
        else:
            buckets.move_to_end(key)
            bucket.refill(now, self._rate, self._burst)
        allowed = bucket.tokens >= 1.0
        if allowed:
            bucket.tokens -= 1.0
        return self._decision(bucket.tokens, allowed=allowed)

    def peek(self, key: bytes, now: float) -> Decision:
        """The fields for ``key`` at ``now`` without charging, creating or reordering anything.

        The refill up to ``now`` is computed, not stored. A key without a bucket reads as full.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            tokens = self._burst
        elif now > bucket.stamp:
            tokens = min(self._burst, bucket.tokens + (now - bucket.stamp) * self._rate)
        else:
            tokens = bucket.tokens
        return self._decision(tokens, allowed=tokens >= 1.0)

    def _decision(self, tokens: float, *, allowed: bool) -> Decision:
        rate = self._rate
        return Decision(
            allowed=allowed,
            tokens=tokens,
            limit=self._limit,
            remaining=math.floor(tokens),
            reset=_seconds((self._burst - tokens) / rate),
            retry_after=0 if allowed else max(1, _seconds((1.0 - tokens) / rate)),
        )


# --------------------------------------------------------------------------- keys


def key_function(expression: str) -> Callable[[RequestState], bytes]:
    """The request → key function of a ``rate_limit_key`` expression (SPEC §3.3, §8.6).

    * ``client-ip``: ``RequestState.client_ip`` (SPEC §5.4, already resolved);
    * ``global``: ``b""`` for every request (one bucket);
    * ``host``: the canonical host of the authority (SPEC §4.4);
    * ``path``: the raw path as this middleware sees it (sanitised by the entrypoint when
      ``sanitize_path`` is on; escapes as received; no query);
    * ``header:<Name>``: the values of every line of that field (name case-insensitive) joined
      with ``", "`` (RFC 9110 §5.3);
    * ``cookie:<name>``: the value of the first cookie with exactly that name across all
      ``Cookie`` lines, trimmed of spaces and tabs;
    * ``query:<name>``: the first value of that (decoded) parameter, parsed like the ``Query``
      matcher (``parse_query``).

    A missing header, cookie, parameter or host is ``b""``. Raises ``ValueError`` for any other
    expression: the check is the config's own ``KEY_EXPRESSION_PATTERN``, so both accept the same.
    """
    if _EXPRESSION.match(expression) is None:
        raise ValueError(f"not a rate_limit_key expression: {expression!r}")
    if expression == "client-ip":
        return _client_ip_key
    if expression == "global":
        return _global_key
    if expression == "host":
        return _host_key
    if expression == "path":
        return _path_key
    source, _, name = expression.partition(":")
    if source == "header":
        return _header_key(name.lower().encode("ascii"))
    if source == "cookie":
        return _cookie_key(name.encode("ascii"))
    return _query_key(name)


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def _bytes(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def _client_ip_key(state: RequestState) -> bytes:
    return _bytes(state.client_ip)


def _global_key(state: RequestState) -> bytes:
    del state
    return _NO_KEY


def _host_key(state: RequestState) -> bytes:
    return _bytes(canonical_host(_text(state.authority)))


def _path_key(state: RequestState) -> bytes:
    return state.path


def _header_key(name: bytes) -> Callable[[RequestState], bytes]:
    def key(state: RequestState) -> bytes:
        return b", ".join([value for field, value in state.headers if field == name])

    return key


def _cookie_key(name: bytes) -> Callable[[RequestState], bytes]:
    def key(state: RequestState) -> bytes:
        for field, line in state.headers:
            if field != _COOKIE or name not in line:
                continue
            for pair in line.split(b";"):
                cookie, equals, value = pair.partition(b"=")
                if equals and cookie.strip(_OWS) == name:
                    return value.strip(_OWS)
        return _NO_KEY

    return key


def _query_key(name: str) -> Callable[[RequestState], bytes]:
    def key(state: RequestState) -> bytes:
        if not state.query:
            return _NO_KEY
        values = parse_query(_text(state.query)).get(name)
        return _bytes(values[0]) if values else _NO_KEY

    return key


# --------------------------------------------------------------------------- middleware


class RateLimitMiddleware(Middleware):
    """``rate-limit``: one ``BucketTable`` per definition, shared by every router using it.

    ``burst`` defaults to ``default_burst(rate)``. Raises ``ValueError`` for a bad ``key`` or
    limits (see ``BucketTable``).
    """

    __slots__ = ("_headers", "_key", "_table")

    def __init__(
        self,
        name: str,
        *,
        rate: float,
        burst: int | None = None,
        key: str = "client-ip",
        headers: bool = True,
        max_keys: int = 100000,
    ) -> None:
        super().__init__(name)
        self._key = key_function(key)
        self._table = BucketTable(
            rate=rate, burst=default_burst(rate) if burst is None else burst, max_keys=max_keys
        )
        self._headers = headers

    @classmethod
    def from_config(cls, name: str, block: RateLimit) -> Self:
        """The middleware of the validated ``rate-limit`` definition ``name``."""
        return cls(
            name,
            rate=block.rate,
            burst=block.burst,
            key=block.rate_limit_key,
            headers=block.rate_limit_headers,
            max_keys=block.max_keys,
        )

    @property
    def table(self) -> BucketTable:
        """The buckets (``len(table)`` is the ``a3s_rate_limit_keys`` gauge)."""
        return self._table

    @property
    def key_count(self) -> int:
        """How many keys have a bucket now."""
        return len(self._table)

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        """Charge the request's key; answer 429 when its bucket has no whole token."""
        decision = self._table.take(self._key(state), state.now)
        if decision.allowed:
            return None
        return too_many(decision, fields=self._headers)

    def response(self, state: RequestState, status: int, headers: Headers) -> None:
        """Add the RateLimit fields (when configured) of the request's bucket.

        A response that already carries a ``RateLimit-Remaining`` lower than this bucket's (an
        inner rate limit's 429, or an upstream nearer its own limit) keeps its fields: the limit
        closest to exhaustion is the one the client needs. Otherwise any existing RateLimit
        fields are replaced, so each is sent once.
        """
        del status
        if not self._headers:
            return
        set_fields(headers, self._table.peek(self._key(state), state.now))


def too_many(decision: Decision, *, fields: bool) -> GeneratedResponse:
    """The 429 of a rejected ``decision``: ``Retry-After``, and the RateLimit fields when
    ``fields`` (SPEC §8.6; shared with ``rate-limit-redis``)."""
    extra: Headers = [(_RETRY_AFTER, str(decision.retry_after).encode())]
    if fields:
        extra.extend(_field_lines(decision))
    return error_response(429, RATE_LIMITED, extra=extra)


def set_fields(headers: Headers, decision: Decision) -> None:
    """Put ``decision``'s RateLimit fields on a response's ``headers`` (in place), unless it
    already carries a lower ``RateLimit-Remaining`` (see ``RateLimitMiddleware.response``)."""
    existing = _existing_remaining(headers)
    if existing is not None and existing < decision.remaining:
        return
    if existing is not None or any(field in _FIELDS for field, _ in headers):
        headers[:] = [line for line in headers if line[0] not in _FIELDS]
    headers.extend(_field_lines(decision))


def _field_lines(decision: Decision) -> list[HeaderLine]:
    return [
        (_LIMIT, str(decision.limit).encode()),
        (_REMAINING, str(decision.remaining).encode()),
        (_RESET, str(decision.reset).encode()),
    ]


def _existing_remaining(headers: Headers) -> int | None:
    """The lowest ``RateLimit-Remaining`` already on the response, None if none parses."""
    lowest: int | None = None
    for field, value in headers:
        if field == _REMAINING:
            text = value.strip(_OWS)
            if text.isdigit() and len(text) <= _MAX_DIGITS:
                number = int(text)
                lowest = number if lowest is None else min(lowest, number)
    return lowest
