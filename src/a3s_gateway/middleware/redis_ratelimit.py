"""The distributed ``rate-limit-redis`` middleware (SPEC §8.7): token buckets kept in Redis.

Ring 0: no trio, sockets, TLS or clocks. Redis is reached through the ``RedisClient`` seam
(``middleware/outbound.py``; Ring 1 ``upstream/redis.py`` in the gateway, fakes in tests) and
time is ``RequestState.now``. The one side effect besides the client is a warning when Redis
fails, at most every ``WARN_EVERY`` seconds (SPEC §8.7), handed to the shell's sink
(``MiddlewareDeps.warn``, topic ``ratelimit``: the ``a3s_gateway.ratelimit`` logger); this
module formats it and decides when, the shell writes it.

The bucket semantics are §8.6's (``ratelimit.py``: capacity ``burst``, refill at ``rate``/s,
a new bucket starts full, a request costs one token), computed by one Lua script per request
inside Redis, with Redis' own ``TIME`` as the clock, so every worker and every gateway process
sharing the server shares one limit. The script is sent with ``EVALSHA`` and, when the server
answers ``NOSCRIPT`` (restarted, ``SCRIPT FLUSH``), once more with ``EVAL``, which caches it.
It stores the hash ``{tokens, ts}`` (``ts`` in Redis milliseconds), sets its ``PEXPIRE`` to the
time until the bucket would be full again plus 10 s (an expired bucket starts full, which is
what it would be), and returns ``{allowed, remaining milli-tokens, wait ms}``.

Redis keys are ``<redis_key_prefix><middleware name>:<key>``. A key value longer than 64 bytes,
with a byte outside printable ASCII, or that is itself 64 lowercase hex digits is replaced by
its SHA-256 hex (the last case keeps a client from choosing a value equal to another key's
hash; SPEC §8.7 names only the first two).

Headers: the 429 carries ``Retry-After`` (⌈wait⌉, at least 1 s) and, with
``rate_limit_headers``, the RateLimit fields of the script's answer, built by ``ratelimit.py``'s
helpers. The response side cannot ask Redis (it is synchronous) and there is no per-request
storage, so, like ``rate-limit``'s response side, it reads a bucket by the request's key: here a
local mirror of the last answer Redis gave this worker for that key (at most ``MIRROR_KEYS``,
least recently used out), refilled locally up to the response's ``now``. Other workers' requests
since then are not seen; a key without a mirror entry reads as a full bucket.

Failures (``OutboundTimeout``, ``OutboundFailed``, a reply that is not the script's) count in
``errors`` (``a3s_rate_limit_redis_errors_total``) and then: ``fail_open`` → the request passes;
otherwise 503 ``rate limiter unavailable`` with ``Retry-After: 1``. Every call is bounded by
``redis_timeout`` (a ``NOSCRIPT`` fallback makes it two calls, so at most twice that).

Must not: read a clock, log (the shell does), keep per-request state on the instance, warn
more than once per ``WARN_EVERY`` seconds, or raise on any request value or Redis failure.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Final, Self

from a3s_gateway.errors import StartError
from a3s_gateway.middleware.contract import Middleware
from a3s_gateway.middleware.outbound import OutboundFailed, OutboundTimeout, RedisReplyError
from a3s_gateway.middleware.ratelimit import (
    MAX_DEFAULT_BURST,
    MAX_SECONDS,
    Decision,
    TokenBucket,
    default_burst,
    key_function,
    set_fields,
    too_many,
)
from a3s_gateway.protocols.responses import error_response

if TYPE_CHECKING:
    from collections.abc import Callable

    from a3s_gateway.config.schema_middlewares import RateLimitRedis
    from a3s_gateway.middleware.contract import RequestState
    from a3s_gateway.middleware.outbound import MiddlewareDeps, RedisClient, WarningSink
    from a3s_gateway.protocols.headers import Headers
    from a3s_gateway.protocols.responses import GeneratedResponse

__all__ = [
    "MAX_KEY_BYTES",
    "MIRROR_KEYS",
    "SCRIPT",
    "SCRIPT_SHA1",
    "UNAVAILABLE",
    "WARNING_TOPIC",
    "WARN_EVERY",
    "RedisRateLimitMiddleware",
    "bucket_key",
]

#: The topic of this middleware's warnings (the shell logs them on ``a3s_gateway.ratelimit``).
WARNING_TOPIC: Final = "ratelimit"

#: The 503 ``error`` text when Redis cannot decide and ``fail_open`` is off (SPEC §8.7).
UNAVAILABLE: Final = "rate limiter unavailable"
#: Seconds between two warnings about Redis failures of one middleware.
WARN_EVERY: Final = 10.0
#: Longer key values are replaced by their SHA-256 hex.
MAX_KEY_BYTES: Final = 64
#: How many keys the response side's mirror of Redis' answers keeps.
MIRROR_KEYS: Final = 10_000
#: ``rate`` values above this are sent as this (more tokens per second than a Redis server
#: could ever be asked for); it keeps the script's arithmetic finite.
MAX_RATE: Final = 1e15

#: The bucket script. KEYS[1]: the bucket hash; ARGV[1]: rate (tokens/s); ARGV[2]: burst.
#: Returns {allowed 0/1, tokens left × 1000 (floored), ms until one token (0 when allowed)}.
#: Times are Redis milliseconds; a stored ``ts`` ahead of Redis' clock refills nothing.
SCRIPT: Final = b"""\
if redis.replicate_commands then redis.replicate_commands() end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(saved[1])
local ts = tonumber(saved[2])
if tokens == nil or ts == nil or tokens ~= tokens or ts ~= ts then
  tokens = burst
  ts = now
elseif now > ts then
  tokens = tokens + (now - ts) * rate / 1000
  ts = now
end
if tokens > burst then tokens = burst elseif tokens < 0 then tokens = 0 end
local allowed = 0
local wait = 0
if tokens >= 1 then
  allowed = 1
  tokens = tokens - 1
else
  wait = math.min(math.ceil((1 - tokens) * 1000 / rate), 1e12)
end
local ttl = math.min(math.ceil((burst - tokens) * 1000 / rate), 1e12) + 10000
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'ts', string.format('%.17g', ts))
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
return {allowed, math.floor(tokens * 1000), wait}
"""
SCRIPT_SHA1: Final = hashlib.sha1(SCRIPT).hexdigest()

_RETRY_AFTER: Final = b"retry-after"
_PRINTABLE: Final = re.compile(rb"[\x20-\x7e]*")
_HEX_DIGEST: Final = re.compile(rb"[0-9a-f]{64}")


def bucket_key(prefix: bytes, key: bytes) -> bytes:
    """The Redis key of request key ``key`` under ``prefix`` (``<redis_key_prefix><name>:``):
    ``key`` itself, or its SHA-256 hex when it is over ``MAX_KEY_BYTES``, not printable ASCII,
    or already looks like such a hex digest."""
    if (
        len(key) > MAX_KEY_BYTES
        or _PRINTABLE.fullmatch(key) is None
        or _HEX_DIGEST.fullmatch(key) is not None
    ):
        key = hashlib.sha256(key).hexdigest().encode("ascii")
    return prefix + key


class _Unexpected(OutboundFailed):
    """Redis answered the script with something else than its three integers."""


def _script_reply(reply: object) -> tuple[bool, int, int]:
    """(allowed, milli-tokens left, wait ms) from the script's reply."""
    if isinstance(reply, list) and len(reply) == 3:
        allowed, milli, wait = reply
        if (
            type(allowed) is int
            and type(milli) is int
            and type(wait) is int
            and milli >= 0
            and wait >= 0
        ):
            return allowed == 1, milli, wait
    raise _Unexpected(f"unexpected reply to the rate-limit script: {reply!r:.100}")


class RedisRateLimitMiddleware(Middleware):
    """``rate-limit-redis``: a token bucket per key in Redis, shared by every gateway using it.

    ``burst`` defaults to ``default_burst(rate)``. Raises ``ValueError`` for a bad ``key``, a
    ``rate`` that is not > 0 or a ``burst`` below 1.
    """

    __slots__ = (
        "_burst",
        "_client",
        "_fail_open",
        "_headers",
        "_key",
        "_mirror",
        "_prefix",
        "_rate",
        "_script_args",
        "_timeout",
        "_warn",
        "_warned_at",
        "errors",
    )

    def __init__(
        self,
        name: str,
        *,
        client: RedisClient,
        rate: float,
        burst: int | None = None,
        key: str = "client-ip",
        headers: bool = True,
        timeout: float = 0.1,
        prefix: str = "a3s:ratelimit:",
        fail_open: bool = True,
        warn: WarningSink | None = None,
    ) -> None:
        super().__init__(name)
        if not rate > 0:
            raise ValueError(f"rate must be > 0, not {rate!r}")
        burst = default_burst(rate) if burst is None else burst
        if burst < 1:
            raise ValueError(f"burst must be >= 1, not {burst!r}")
        self._key: Callable[[RequestState], bytes] = key_function(key)
        self._client = client
        self._rate = rate
        self._burst = burst
        self._headers = headers
        self._timeout = timeout
        self._prefix = f"{prefix}{name}:".encode()
        self._fail_open = fail_open
        self._script_args = (repr(min(rate, MAX_RATE)), min(burst, MAX_DEFAULT_BURST))
        self._mirror: OrderedDict[bytes, TokenBucket] = OrderedDict()
        self._warn = _drop if warn is None else warn
        self._warned_at: float | None = None
        #: Requests Redis could not decide (``a3s_rate_limit_redis_errors_total``).
        self.errors = 0

    @classmethod
    def from_config(cls, name: str, block: RateLimitRedis, deps: MiddlewareDeps) -> Self:
        """The middleware of the validated ``rate-limit-redis`` definition ``name``; its client
        comes from ``deps.redis`` (``StartError`` without one)."""
        if deps.redis is None:
            raise StartError(f'rate-limit-redis "{name}": no Redis client in this process')
        return cls(
            name,
            client=deps.redis.client(block.redis_url),
            rate=block.rate,
            burst=block.burst,
            key=block.rate_limit_key,
            headers=block.rate_limit_headers,
            timeout=block.redis_timeout.seconds,
            prefix=block.redis_key_prefix,
            fail_open=block.fail_open,
            warn=deps.warn,
        )

    @property
    def burst(self) -> int:
        """The capacity of every bucket (``RateLimit-Limit``)."""
        return self._burst

    def redis_key(self, state: RequestState) -> bytes:
        """The Redis key of the request's bucket."""
        return bucket_key(self._prefix, self._key(state))

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        """Charge the request's bucket in Redis: 429 when it is empty; on a Redis failure pass
        (``fail_open``) or 503."""
        key = self.redis_key(state)
        try:
            allowed, milli, wait = _script_reply(await self._run_script(key))
        except (OutboundTimeout, OutboundFailed) as error:
            return self._failed(state, error)
        tokens = milli / 1000
        self._remember(key, tokens, state.now)
        if allowed:
            return None
        decision = self._decision(tokens, allowed=False, wait=wait / 1000)
        return too_many(decision, fields=self._headers)

    def response(self, state: RequestState, status: int, headers: Headers) -> None:
        """Add the RateLimit fields (when configured) as this worker last saw the bucket (see
        the module doc and ``ratelimit.set_fields``)."""
        del status
        if not self._headers:
            return
        key = self.redis_key(state)
        bucket = self._mirror.get(key)
        if bucket is None:
            tokens = float(self._burst)
        else:
            elapsed = max(0.0, state.now - bucket.stamp)
            tokens = min(float(self._burst), bucket.tokens + elapsed * self._rate)
        set_fields(headers, self._decision(tokens, allowed=tokens >= 1.0))

    async def _run_script(self, key: bytes) -> object:
        rate, burst = self._script_args
        client, within = self._client, self._timeout
        try:
            return await client.execute(b"EVALSHA", SCRIPT_SHA1, 1, key, rate, burst, within=within)
        except RedisReplyError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
        return await client.execute(b"EVAL", SCRIPT, 1, key, rate, burst, within=within)

    def _failed(self, state: RequestState, error: Exception) -> GeneratedResponse | None:
        self.errors += 1
        if self._warned_at is None or state.now - self._warned_at >= WARN_EVERY:
            self._warned_at = state.now
            outcome = "letting requests through" if self._fail_open else "answering 503"
            self._warn(
                WARNING_TOPIC,
                f'rate-limit-redis "{self.name}": Redis failed ({type(error).__name__}: '
                f"{error}); {outcome} ({self.errors} failures so far)",
            )
        if self._fail_open:
            return None
        return error_response(503, UNAVAILABLE, extra=[(_RETRY_AFTER, b"1")])

    def _remember(self, key: bytes, tokens: float, now: float) -> None:
        """Keep Redis' answer for the response side; an answer older than the one kept (a
        request that started earlier but was answered later) is dropped."""
        mirror = self._mirror
        bucket = mirror.get(key)
        if bucket is not None:
            mirror.move_to_end(key)
            if now >= bucket.stamp:
                bucket.tokens, bucket.stamp = tokens, now
            return
        if len(mirror) >= MIRROR_KEYS:
            mirror.popitem(last=False)
        mirror[key] = TokenBucket(tokens, now)

    def _decision(self, tokens: float, *, allowed: bool, wait: float = 0.0) -> Decision:
        return Decision(
            allowed=allowed,
            tokens=tokens,
            limit=self._burst,
            remaining=math.floor(tokens),
            reset=_seconds((self._burst - tokens) / self._rate),
            retry_after=0 if allowed else max(1, _seconds(wait)),
        )


def _drop(topic: str, message: str) -> None:
    """The warning sink of a middleware built without one (a test's): nobody is told."""
    del topic, message


def _seconds(value: float) -> int:
    """``⌈value⌉`` whole seconds, capped at ``MAX_SECONDS``."""
    return math.ceil(min(value, MAX_SECONDS))
