"""JWK Sets for the ``jwt`` middleware (SPEC §8.4 "JWKS"): parsing, key choice, refresh schedule.

Ring 0: no trio, sockets, TLS, clock or logging. The one piece of IO, the ``GET`` of the set, goes
through the ``HttpCaller`` seam (``middleware/outbound.py``) in ``JwksKeys.run``; the task that
decides *when* to call it, sleeps in between and logs the warnings ``run`` returns is Ring 1
(``server/generation.py``, through the ``Background`` hook of ``middleware/contract.py``). Times are
trio's clock (``RequestState.now`` and the runner's ``now``), never the wall clock.

Parsing (RFC 7517, RFC 7518 §6): the document must be a UTF-8 JSON object with a ``keys`` array
(no duplicate member names, finite numbers); otherwise it is invalid and the previous set is
kept. Each member of ``keys`` is judged on its own, so one bad key never poisons the set (as
PyJWT's ``PyJWKSet`` skips a key it cannot use; the loop is ours because it also says why, and
an empty or all-foreign set is a valid answer here, where ``PyJWKSet`` raises). The checks of
the member come first; PyJWT's ``PyJWK`` then builds the key from the public members:

* ``kty`` ``RSA`` (``n``, ``e``; a modulus of 2048 to 16384 bits, RFC 7518 §3.3) and ``EC``
  (``crv`` P-256/P-384/P-521, ``x`` and ``y`` of the curve's full coordinate size and on the
  curve) are kept, their base64url members strictly in the alphabet (padding tolerated);
* other key types are ignored, ``oct`` included: a shared secret never comes from a JWKS, so an
  HS token cannot be verified with a published key (no algorithm confusion);
* a ``use`` other than ``sig``, or a ``key_ops`` without ``verify``, is ignored (an encryption
  key);
* an RSA or EC key with a missing or invalid member (or a ``kid``, ``alg``, ``use`` that is not
  a string) is skipped and reported.

Choice (``JwksKeys.select``): the key must *fit* the token's ``alg`` (RS* an RSA key, ES* the
EC key of the algorithm's curve) and its ``alg``, when present, must equal the token's. A token
with a ``kid`` uses the first fitting key with that ``kid``. A token without ``kid`` uses the one
fitting key when there is exactly one: issuers with a single key often leave ``kid`` out, and
with one candidate there is nothing to confuse; with several the token is refused rather than
tried against each key (ambiguous, and a cost an attacker could multiply).

Refresh (``JwksKeys`` is the ``Background`` of its middleware): the first fetch is due at once,
then one every ``REFRESH_INTERVAL`` from the start of the previous one, successful or not. A
token whose key is not found calls ``demand(now)``, which brings the next fetch forward at most
once per ``DEMAND_INTERVAL`` (counted between demands that did so; a demand while a fetch is in
progress is already being answered and costs nothing). The request itself is answered ``unknown
key`` at once instead of waiting for that fetch: a Ring 0 middleware has no way to wait for
another task, the answer's latency stays independent of the key server, and the client's retry
after the refresh succeeds. Each fetch is bounded by ``FETCH_TIMEOUT`` and ``MAX_JWKS_BYTES``
and redirects are not followed (the caller never does). A failed fetch (timeout, refused, a
status other than 200, an invalid document) keeps the previous set and counts in ``errors``
(``a3s_jwks_errors_total``); until one fetch has succeeded the set is empty, so every token that
needs it is refused as ``unknown key``.

Must not: accept an ``oct`` (or any non-RSA/EC) key, keep per-request state, or raise from
``run`` for anything the key server does.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK, PyJWTError

from a3s_gateway.middleware.outbound import OutboundFailed, OutboundTimeout, ReplyTooLarge

if TYPE_CHECKING:
    from collections.abc import Callable

    from a3s_gateway.config.urls import HttpUrl
    from a3s_gateway.middleware.outbound import HttpCaller
    from a3s_gateway.protocols.headers import Headers

__all__ = [
    "DEMAND_INTERVAL",
    "FETCH_TIMEOUT",
    "MAX_JWKS_BYTES",
    "REFRESH_INTERVAL",
    "Jwk",
    "JwkSet",
    "JwksKeys",
    "PublicKey",
    "key_fits",
    "parse_jwk_set",
]

#: Seconds between two scheduled fetches (SPEC §8.4: every 10 min).
REFRESH_INTERVAL: Final = 600.0
#: Seconds between two fetches brought forward by unknown keys (SPEC §8.4: one per minute).
DEMAND_INTERVAL: Final = 60.0
#: The bound of one fetch, connect to last body byte (SPEC §8.4: 5 s).
FETCH_TIMEOUT: Final = 5.0
#: The largest JWKS body read (SPEC §14.1: 1 MiB).
MAX_JWKS_BYTES: Final = 1024 * 1024

#: The public-key types a token can be verified with.
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# RFC 7518 §3.3: RSA keys of at least 2048 bits; the upper bound keeps one verification cheap.
_RSA_MIN_BITS: Final = 2048
_RSA_MAX_BITS: Final = 16384
# RFC 7518 §6.2.1.1 curve names; the ES algorithm of each curve (RFC 7518 §3.4).
_CURVE_ALGORITHMS: Final = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_ALGORITHM_CURVES: Final = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
# How many skipped keys one warning describes.
_SHOWN_SKIPPED: Final = 3
_ACCEPT: Final[Headers] = [(b"accept", b"application/jwk-set+json, application/json")]
# base64url (RFC 4648 §5); padding is tolerated in keys (it changes nothing that is signed).
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def key_fits(key: PublicKey, algorithm: str) -> bool:
    """Whether ``key`` can verify ``algorithm``: RS* an RSA key, ES* the EC key of its curve."""
    if algorithm.startswith("RS"):
        return isinstance(key, rsa.RSAPublicKey)
    curve = _ALGORITHM_CURVES.get(algorithm)
    return (
        curve is not None and isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == curve
    )


@dataclass(frozen=True, slots=True)
class Jwk:
    """One usable key of a set: its ``kid`` and ``alg`` (None when absent) and the key."""

    kid: str | None
    alg: str | None
    key: PublicKey

    def suits(self, algorithm: str) -> bool:
        """Whether this key may verify a token of ``algorithm`` (type, curve and ``alg``)."""
        return (self.alg is None or self.alg == algorithm) and key_fits(self.key, algorithm)


@dataclass(frozen=True, slots=True)
class JwkSet:
    """A parsed JWK Set: the usable keys, and why each skipped (invalid) key was skipped."""

    keys: tuple[Jwk, ...]
    skipped: tuple[str, ...] = ()


class _Duplicate:
    """What a JSON object with a repeated member name parses to (RFC 7517 §4, §5: names are
    unique): an invalid key, or an invalid document at the top."""


def parse_jwk_set(data: bytes) -> JwkSet:
    """The keys of the JWK Set ``data``; ``ValueError`` says why it is not a JWK Set."""
    try:
        document: object = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_object,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as error:
        raise ValueError(f"not JSON ({error})") from None
    if isinstance(document, _Duplicate):
        raise ValueError("duplicate member names")
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    members = document.get("keys")
    if not isinstance(members, list):
        raise ValueError('no "keys" array')
    keys: list[Jwk] = []
    skipped: list[str] = []
    for index, member in enumerate(members):
        try:
            jwk = _jwk(member)
        except ValueError as error:
            skipped.append(f"keys[{index}]: {error}")
            continue
        if jwk is not None:
            keys.append(jwk)
    return JwkSet(tuple(keys), tuple(skipped))


def _jwk(member: object) -> Jwk | None:
    """The usable key of one ``keys`` member; None for a key that is not for us (another type,
    another use); ``ValueError`` for an RSA or EC key that is invalid."""
    if isinstance(member, _Duplicate):
        raise ValueError("duplicate member names")
    if not isinstance(member, dict):
        raise ValueError("not a JSON object")
    kty = member.get("kty")
    if not isinstance(kty, str):
        raise ValueError('no "kty" string')
    if kty not in ("RSA", "EC"):
        return None  # oct, OKP, ...: never a key for this middleware
    kid = _optional_string(member, "kid")
    alg = _optional_string(member, "alg")
    use = _optional_string(member, "use")
    if use is not None and use != "sig":
        return None
    if "key_ops" in member:
        operations = member["key_ops"]
        if not isinstance(operations, list):
            raise ValueError('"key_ops" is not an array')
        if "verify" not in operations:
            return None
    return Jwk(kid, alg, _public_key(member, kty))


def _public_key(member: dict[str, object], kty: str) -> PublicKey:
    """The public key of an RSA or EC member, built by PyJWT's ``PyJWK`` from the public
    members only (a private ``d`` in a published set is never loaded)."""
    names = ("n", "e") if kty == "RSA" else ("x", "y")
    for name in names:
        value = member.get(name)
        # PyJWT's base64url decoding drops bytes outside the alphabet; ours does not.
        if not isinstance(value, str) or not value or _BASE64URL.fullmatch(value) is None:
            raise ValueError(f'"{name}" is not a base64url string')
    public: dict[str, object] = {"kty": kty}
    public.update((name, str(member[name]).rstrip("=")) for name in names)
    # The algorithm only picks PyJWT's parser; the tokens a key may verify are ``Jwk.suits``'s.
    algorithm: str | None = "RS256"
    if kty == "EC":
        crv = member.get("crv")
        algorithm = _CURVE_ALGORITHMS.get(crv) if isinstance(crv, str) else None
        if algorithm is None:
            raise ValueError('"crv" is not one of P-256, P-384, P-521')
        public["crv"] = crv
    try:
        key: object = PyJWK(public, algorithm).key
    except (PyJWTError, ValueError) as error:  # ValueError: cryptography refused the numbers
        raise ValueError(f"not a valid {kty} public key: {error}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if not _RSA_MIN_BITS <= key.key_size <= _RSA_MAX_BITS:
            raise ValueError(
                f"an RSA modulus of {key.key_size} bits (allowed: {_RSA_MIN_BITS} to "
                f"{_RSA_MAX_BITS})"
            )
        return key
    assert isinstance(key, ec.EllipticCurvePublicKey)  # PyJWK's EC parser, given "crv"
    return key


def _optional_string(member: dict[str, object], name: str) -> str | None:
    """``member[name]``, None when absent; present, it must be a string (``null`` is not)."""
    if name not in member:
        return None
    value = member[name]
    if not isinstance(value, str):
        raise ValueError(f'"{name}" is not a string')
    return value


def _object(pairs: list[tuple[str, object]]) -> dict[str, object] | _Duplicate:
    members = dict(pairs)
    return _Duplicate() if len(members) != len(pairs) else members


def _reject_constant(constant: str) -> float:
    raise ValueError(f"{constant} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("number out of range")
    return number


class JwksKeys:
    """The key set of one ``jwt`` definition, fetched from ``url``; see the module docstring.

    Implements ``middleware.base.Background``: ``next_run`` (trio's clock), ``run(now)`` (one
    fetch; returns a warning for the log or None) and ``watch`` (the runner's wake-up, called
    when a demand brings the next fetch forward). ``errors`` counts failed fetches.
    """

    __slots__ = (
        "_caller",
        "_demanded_at",
        "_due",
        "_fetching",
        "_keys",
        "_wakers",
        "errors",
        "loaded",
        "url",
    )

    def __init__(self, url: HttpUrl, caller: HttpCaller) -> None:
        self.url = url
        self._caller = caller
        self._keys: tuple[Jwk, ...] = ()
        self._due = -math.inf  # the first fetch is due at once
        self._demanded_at = -math.inf
        self._fetching = 0
        self._wakers: list[Callable[[], None]] = []
        #: Failed fetches (``a3s_jwks_errors_total``).
        self.errors = 0
        #: Whether a fetch has succeeded (the set may still be empty if the document was).
        self.loaded = False

    @property
    def keys(self) -> tuple[Jwk, ...]:
        """The usable keys of the last good document (empty before the first)."""
        return self._keys

    def select(self, kid: str | None, algorithm: str) -> PublicKey | None:
        """The key for a token with ``kid`` (None: absent) and ``algorithm``, or None."""
        if kid is None:
            suitable = [jwk for jwk in self._keys if jwk.suits(algorithm)]
            return suitable[0].key if len(suitable) == 1 else None
        for jwk in self._keys:
            if jwk.kid == kid and jwk.suits(algorithm):
                return jwk.key
        return None

    def demand(self, now: float) -> None:
        """A token's key was not found at ``now``: fetch soon, at most once per minute."""
        if self._fetching or now - self._demanded_at < DEMAND_INTERVAL:
            return
        self._demanded_at = now
        if now < self._due:
            self._due = now
            for wake in tuple(self._wakers):
                wake()

    def adopt(self, previous: JwksKeys) -> None:
        """Start with ``previous``'s keys (a reload that rebuilt the definition with the same
        URL): no window of ``unknown key`` while the new instance's first fetch runs."""
        if previous.url == self.url and not self.loaded and previous.loaded:
            self._keys = previous._keys
            self.loaded = True

    # -- Background ---------------------------------------------------------------------------

    def next_run(self) -> float:
        """When the next fetch is due on trio's clock (-inf: at once)."""
        return self._due

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` whenever ``next_run`` moves earlier; returns the undo."""
        self._wakers.append(wake)

        def unwatch() -> None:
            if wake in self._wakers:
                self._wakers.remove(wake)

        return unwatch

    async def run(self, now: float) -> str | None:
        """Fetch the set once (started at ``now``); the next fetch is due ``REFRESH_INTERVAL``
        later. Returns a warning for the log, or None when all went well."""
        self._fetching += 1
        try:
            problem = await self._fetch()
        finally:
            self._fetching -= 1
        self._due = now + REFRESH_INTERVAL
        return problem

    async def _fetch(self) -> str | None:
        try:
            reply = await self._caller.get(
                self.url, list(_ACCEPT), within=FETCH_TIMEOUT, max_body=MAX_JWKS_BYTES
            )
        except OutboundTimeout:
            return self._failed(f"no complete reply within {FETCH_TIMEOUT:g} s")
        except ReplyTooLarge:
            return self._failed(f"the reply is larger than {MAX_JWKS_BYTES} bytes")
        except OutboundFailed as error:
            return self._failed(str(error) or type(error).__name__)
        if reply.status != 200:
            note = " (redirects are not followed)" if 300 <= reply.status < 400 else ""
            return self._failed(f"status {reply.status}{note}")
        try:
            parsed = parse_jwk_set(reply.body)
        except ValueError as error:
            return self._failed(f"not a JWK Set: {error}")
        self._keys = parsed.keys
        self.loaded = True
        problems: list[str] = []
        if parsed.skipped:
            shown = "; ".join(parsed.skipped[:_SHOWN_SKIPPED])
            more = len(parsed.skipped) - _SHOWN_SKIPPED
            problems.append(
                f"skipped {len(parsed.skipped)} invalid key(s): {shown}"
                + (f" (and {more} more)" if more > 0 else "")
            )
        if not parsed.keys:
            problems.append("the set has no RSA or EC signature key")
        if not problems:
            return None
        return f"JWKS {self.url.text}: " + "; ".join(problems)

    def _failed(self, reason: str) -> str:
        self.errors += 1
        count = len(self._keys)
        if self.loaded:
            kept = f"keeping the {count} key{'s' if count != 1 else ''} fetched before"
        else:
            kept = 'no keys yet: tokens that need one are refused as "unknown key"'
        return f"JWKS {self.url.text}: fetch failed: {reason}; {kept}"
