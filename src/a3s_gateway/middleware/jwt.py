"""The ``jwt`` middleware (SPEC §8.4): bearer tokens in JWS compact form, checked locally.

Ring 0 on the request path: pure; no trio, sockets, TLS, logging, and no clock of its own. The
wall-clock time that ``exp`` and ``nbf`` are compared with comes from the ``clock`` callable
the caller passes (``RequestState.now`` is trio's monotonic clock, not Unix time; it is only
used to pace JWKS refreshes). IO: ``from_config`` reads ``public_key_file`` once, so a missing or
unparseable key refuses the config with ``StartError`` instead of failing every request; with
``jwks_url`` the keys come from a JWK Set (``middleware/jwks.py``) that a Ring 1 task fetches at
start and every 10 minutes through the ``background()`` hook, never on the request path.

A request passes when its ``header`` carries exactly one token that
* is three base64url segments (RFC 4648 §5, no padding, canonical) whose first two decode to
  UTF-8 JSON objects without duplicate member names or non-finite numbers;
* names in ``alg`` one of the configured ``algorithms`` (``none`` is never one) and has no
  ``crit`` member (no extension is understood);
* verifies with the key of its algorithm's family only: HS* with the UTF-8 bytes of ``value``,
  RS*/ES* with the public key of ``public_key_file`` or the JWKS key chosen by the header's
  ``kid`` (RSA for RS*, the curve of the algorithm for ES*; a JWK's ``alg``, if present, must
  equal the token's; a token without ``kid`` uses the set's only fitting key, if it has exactly
  one), so an RS/ES token is never checked against the secret nor the other way round, and a
  JWKS never supplies an HMAC key;
* has claims that pass ``require_exp``, ``exp``/``nbf`` with ``leeway``, ``issuer`` and
  ``audience``.

On success, every client-sent line of ``subject_header`` and of each ``claims_headers`` target
is dropped and those fields are set from the verified claims. Failures answer 401 with a
``Bearer`` challenge (RFC 6750 §3). A token whose JWKS key is not in the set (unknown ``kid``,
or no set fetched yet) is answered ``unknown key`` at once and asks for an early refresh, at
most one per minute (``JwksKeys.demand``; the module docstring of ``jwks.py`` says why the
request does not wait for it).

Must not: fetch the JWKS on the request path (a request only asks for a refresh),
trust any header or claim before the signature has been verified, log or echo a token or the
secret, keep per-request state on the instance (one instance serves every router that lists the
definition, SPEC §8.1), or reuse a response object (later response sides change its header list
in place).
"""

from __future__ import annotations

import base64
import hmac
import json
import math
import re
from typing import TYPE_CHECKING, Final, Self

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from a3s_gateway.errors import StartError
from a3s_gateway.middleware.base import Middleware
from a3s_gateway.middleware.jwks import JwksKeys, PublicKey, key_fits
from a3s_gateway.protocols.events import ResponseHead
from a3s_gateway.protocols.responses import GeneratedResponse, error_response

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from a3s_gateway.config.schema_middlewares import Jwt
    from a3s_gateway.middleware.base import Background, RequestState
    from a3s_gateway.middleware.outbound import HttpCaller

__all__ = [
    "ALGORITHM_NOT_ALLOWED",
    "AUDIENCE_MISMATCH",
    "BAD_SIGNATURE",
    "EXPIRED",
    "INVALID_TOKEN",
    "ISSUER_MISMATCH",
    "MALFORMED",
    "MAX_KEY_FILE_BYTES",
    "MISSING_EXP",
    "MISSING_TOKEN",
    "NOT_YET_VALID",
    "UNKNOWN_KEY",
    "JwtMiddleware",
    "PublicKey",
    "TokenError",
    "bearer_token",
    "invalid_token_response",
    "load_public_key",
]

#: The 401 ``error`` text when the request carries no bearer token (SPEC §8.4).
MISSING_TOKEN: Final = "missing token"
#: The 401 ``error`` text when a token was sent but is not accepted; ``detail`` says why.
INVALID_TOKEN: Final = "invalid token"

# The ``detail`` reasons of SPEC §8.4, the only texts a rejected token is described with.
MALFORMED: Final = "malformed"
ALGORITHM_NOT_ALLOWED: Final = "algorithm not allowed"
BAD_SIGNATURE: Final = "bad signature"
EXPIRED: Final = "expired"
NOT_YET_VALID: Final = "not yet valid"
MISSING_EXP: Final = "missing exp"
ISSUER_MISMATCH: Final = "issuer mismatch"
AUDIENCE_MISMATCH: Final = "audience mismatch"
UNKNOWN_KEY: Final = "unknown key"

#: The largest ``public_key_file`` read (as ``preflight``: a PEM public key is a few KiB).
MAX_KEY_FILE_BYTES: Final = 1024 * 1024

_WWW_AUTHENTICATE: Final = b"www-authenticate"
_CONTENT_LENGTH: Final = b"content-length"
_BEARER: Final = b"bearer"
_MISSING_CHALLENGE: Final = b'Bearer realm="a3s-gateway"'
_SEGMENT: Final = re.compile(rb"[A-Za-z0-9_-]*")
# Bytes a forwarded field value cannot hold (RFC 9110 §5.5: CTLs other than HTAB, and DEL).
_FIELD_CTL: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HMAC_DIGESTS: Final = {"256": "sha256", "384": "sha384", "512": "sha512"}
#: The verified-token cache: at most this many tokens, each at most this long (≤ 2 MiB).
_CACHED_TOKENS: Final = 512
_CACHED_TOKEN_BYTES: Final = 4096
_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}


class TokenError(ValueError):
    """A token was rejected; ``reason`` is one of the SPEC §8.4 ``detail`` texts."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _invalid_body(reason: str) -> bytes:
    # Encoded by the JSON encoder (never formatting); "status" as in every other error body.
    text = json.dumps(
        {"error": INVALID_TOKEN, "detail": reason, "status": 401}, separators=(",", ":")
    )
    return text.encode()


_INVALID_BODIES: Final = {
    reason: _invalid_body(reason)
    for reason in (
        MALFORMED,
        ALGORITHM_NOT_ALLOWED,
        BAD_SIGNATURE,
        EXPIRED,
        NOT_YET_VALID,
        MISSING_EXP,
        ISSUER_MISMATCH,
        AUDIENCE_MISMATCH,
        UNKNOWN_KEY,
    )
}


def invalid_token_response(reason: str) -> GeneratedResponse:
    """401 ``{"error":"invalid token","detail":reason,"status":401}`` with its challenge.

    Built on ``error_response`` (which has no extra body members) so the common error headers
    stay in one place; only the body and its ``Content-Length`` are replaced.
    """
    body = _INVALID_BODIES[reason]
    challenge = (
        b'Bearer realm="a3s-gateway", error="invalid_token", error_description="'
        + reason.encode()
        + b'"'
    )
    base = error_response(401, INVALID_TOKEN, extra=[(_WWW_AUTHENTICATE, challenge)])
    length = str(len(body)).encode()
    headers = [
        (field, length) if field == _CONTENT_LENGTH else (field, value)
        for field, value in base.head.headers
    ]
    return GeneratedResponse(ResponseHead(status=401, headers=headers), body, base.close)


def load_public_key(file: str) -> PublicKey:
    """The RSA or EC public key in the PEM file ``file``; ``ValueError`` says what is wrong."""
    try:
        with open(file, "rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise ValueError(
            f'cannot read public key file "{file}": {error.strerror or type(error).__name__}'
        ) from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ValueError(f'public key file "{file}" is larger than {MAX_KEY_FILE_BYTES} bytes')
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f'public key file "{file}" is not a PEM public key') from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError(
            f'public key file "{file}" holds a {type(key).__name__}; only RSA and EC keys '
            "are supported"
        )
    return key


class JwtMiddleware(Middleware):
    """``jwt``: one verified bearer token per request; its claims become request fields.

    ``clock`` returns the wall-clock time in Unix seconds; it is read once per request whose
    token has a valid signature. ``secret`` is required iff an HS algorithm is allowed and
    one of ``public_key`` and ``jwks`` iff an RS or ES one is; a ``public_key`` must fit at
    least one allowed algorithm (an RSA key RS*, an EC key the ES* of its curve). Tokens of an
    allowed algorithm that no key fits are rejected as ``unknown key``.
    """

    __slots__ = (
        "_algorithms",
        "_audience",
        "_claims",
        "_clock",
        "_field",
        "_issuer",
        "_jwks",
        "_leeway",
        "_require_exp",
        "_subject",
        "_targets",
        "_verified",
        "_verifiers",
    )

    def __init__(
        self,
        name: str,
        *,
        clock: Callable[[], float],
        algorithms: Iterable[str] = ("HS256",),
        secret: str | None = None,
        public_key: PublicKey | None = None,
        jwks: JwksKeys | None = None,
        header: str = "Authorization",
        issuer: str | None = None,
        audience: Iterable[str] | None = None,
        leeway: float = 60.0,
        require_exp: bool = True,
        subject_header: str = "X-JWT-Subject",
        claims_headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name)
        if leeway < 0 or not math.isfinite(leeway):
            raise ValueError(f"leeway must be a finite number >= 0, not {leeway!r}")
        self._clock = clock
        self._field = header.lower().encode("ascii")
        self._issuer = issuer
        self._audience = None if audience is None else frozenset(audience)
        self._leeway = float(leeway)
        self._require_exp = require_exp
        self._subject = subject_header.lower().encode("ascii")
        self._claims = tuple(
            (claim, target.lower().encode("ascii"))
            for claim, target in (claims_headers or {}).items()
        )
        self._targets = frozenset({self._subject, *(target for _, target in self._claims)})
        self._algorithms = frozenset(algorithms)
        self._jwks = jwks
        self._verifiers = _verifiers(tuple(algorithms), secret, public_key, jwks)
        #: Tokens whose signature a configured key (``secret``, ``public_key``) verified, with
        #: their claims: a repeated token skips the decoding and the signature check, never
        #: the claims check against the clock (Envoy's ``jwt_cache_config``). JWKS keys
        #: rotate, so tokens they verified are not kept.
        self._verified: dict[bytes, dict[str, object]] = {}

    @classmethod
    def from_config(
        cls,
        name: str,
        block: Jwt,
        *,
        clock: Callable[[], float],
        http: HttpCaller | None = None,
    ) -> Self:
        """The middleware of the validated ``jwt`` definition ``name``.

        Reads ``public_key_file`` now; a ``jwks_url`` gets an empty key set that ``http``
        fills once ``background()`` runs. Raises ``StartError`` when the key file cannot be
        read, holds no usable key or fits none of the allowed algorithms, and when
        ``jwks_url`` is set but no ``http`` caller was given.
        """
        jwks = None
        if block.jwks_url is not None:
            if http is None:
                raise StartError(
                    f'jwt "{name}": jwks_url needs an outbound HTTP client, and none was given'
                )
            jwks = JwksKeys(block.jwks_url, http)
        audience = (block.audience,) if isinstance(block.audience, str) else block.audience
        try:
            public_key = (
                None if block.public_key_file is None else load_public_key(block.public_key_file)
            )
            return cls(
                name,
                clock=clock,
                algorithms=block.algorithms,
                secret=block.value,
                public_key=public_key,
                jwks=jwks,
                header=block.header,
                issuer=block.issuer,
                audience=audience,
                leeway=block.leeway.seconds,
                require_exp=block.require_exp,
                subject_header=block.subject_header,
                claims_headers=block.claims_headers,
            )
        except ValueError as error:
            raise StartError(f'jwt "{name}": {error}') from None

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        """Pass a request with one valid token, setting the claim fields; otherwise 401."""
        values = state.values(self._field)
        if not values:
            return _missing_token()
        if len(values) > 1:
            return invalid_token_response(MALFORMED)
        token = bearer_token(values[0])
        if token is None:
            return _missing_token()
        try:
            claims = self.verify(token)
        except TokenError as error:
            if error.reason == UNKNOWN_KEY and self._jwks is not None:
                self._jwks.demand(state.now)
            return invalid_token_response(error.reason)
        headers = [line for line in state.headers if line[0] not in self._targets]
        subject = claims.get("sub")
        if isinstance(subject, str):
            _append(headers, self._subject, subject)
        for claim, target in self._claims:
            if claim in claims:
                _append(headers, target, claims[claim])
        state.headers = headers
        return None

    def verify(self, token: bytes) -> dict[str, object]:
        """The claims of ``token`` if it is accepted; otherwise ``TokenError`` with the reason.

        The signature is checked before the payload is parsed, and the clock is read only for
        a token whose signature is valid.
        """
        cached = self._verified.get(token)
        if cached is not None:
            try:
                self._check_claims(cached, self._clock())
            except TokenError:
                del self._verified[token]
                raise
            return cached
        parts = token.split(b".")
        if len(parts) != 3:
            raise TokenError(MALFORMED)
        header_part, payload_part, signature_part = parts
        header = _json_object(_b64url(header_part))
        payload = _b64url(payload_part)
        signature = _b64url(signature_part)
        algorithm = header.get("alg")
        kid = header.get("kid")
        if not isinstance(algorithm, str) or "crit" in header:
            raise TokenError(MALFORMED)
        if kid is not None and not isinstance(kid, str):
            raise TokenError(MALFORMED)
        if algorithm not in self._algorithms:
            raise TokenError(ALGORITHM_NOT_ALLOWED)
        static = algorithm in self._verifiers
        if static:
            verifier = self._verifiers[algorithm]
        else:  # RS/ES with a JWKS: the key the header names
            assert self._jwks is not None  # _verifiers covers every algorithm otherwise
            key = self._jwks.select(kid, algorithm)
            verifier = None if key is None else _asymmetric_verifier(key, algorithm)
        if verifier is None:
            raise TokenError(UNKNOWN_KEY)
        if not verifier(header_part + b"." + payload_part, signature):
            raise TokenError(BAD_SIGNATURE)
        claims = _json_object(payload)
        self._check_claims(claims, self._clock())
        if static and len(token) <= _CACHED_TOKEN_BYTES:
            verified = self._verified
            if len(verified) >= _CACHED_TOKENS:
                del verified[next(iter(verified))]  # the oldest
            verified[token] = claims
        return claims

    def background(self) -> tuple[Background, ...]:
        """The JWKS refresh, when keys come from ``jwks_url``."""
        return () if self._jwks is None else (self._jwks,)

    @property
    def jwks(self) -> JwksKeys | None:
        """The key set fetched from ``jwks_url`` (None without one)."""
        return self._jwks

    @property
    def jwks_errors(self) -> int:
        """Failed JWKS fetches so far (``a3s_jwks_errors_total``); 0 without a JWKS."""
        return 0 if self._jwks is None else self._jwks.errors

    def _check_claims(self, claims: dict[str, object], now: float) -> None:
        expires = _numeric_date(claims, "exp")
        not_before = _numeric_date(claims, "nbf")
        if expires is None and self._require_exp:
            raise TokenError(MISSING_EXP)
        # RFC 7519 §4.1.4/§4.1.5: valid while now < exp and from nbf on, widened by leeway.
        if expires is not None and now >= expires + self._leeway:
            raise TokenError(EXPIRED)
        if not_before is not None and now < not_before - self._leeway:
            raise TokenError(NOT_YET_VALID)
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise TokenError(ISSUER_MISMATCH)
        if self._audience is not None:
            audience = claims.get("aud")
            if isinstance(audience, str):
                audience = [audience]
            if not isinstance(audience, list) or not all(
                isinstance(item, str) for item in audience
            ):
                raise TokenError(AUDIENCE_MISMATCH)
            if self._audience.isdisjoint(audience):
                raise TokenError(AUDIENCE_MISMATCH)


def bearer_token(value: bytes) -> bytes | None:
    """The token of one header value, or None when it carries another scheme (or nothing).

    ``Bearer <token>`` with the scheme in any case and one or more spaces; a value without a
    space is the raw token (A3S compatibility).
    """
    if not value:
        return None
    scheme, space, rest = value.partition(b" ")
    if not space:
        return value
    if scheme.lower() != _BEARER:
        return None
    return rest.lstrip(b" ")


def _missing_token() -> GeneratedResponse:
    return error_response(401, MISSING_TOKEN, extra=[(_WWW_AUTHENTICATE, _MISSING_CHALLENGE)])


def _verifiers(
    algorithms: tuple[str, ...],
    secret: str | None,
    public_key: PublicKey | None,
    jwks: JwksKeys | None,
) -> dict[str, Callable[[bytes, bytes], bool] | None]:
    """A verifier per allowed algorithm whose key is known now; None where the configured key
    does not fit it. RS/ES algorithms are left out when their keys come from ``jwks``."""
    if not algorithms:
        raise ValueError("at least one algorithm must be allowed")
    if jwks is not None and public_key is not None:
        raise ValueError("set only one of a public key and a JWKS")
    verifiers: dict[str, Callable[[bytes, bytes], bool] | None] = {}
    asymmetric: list[str] = []
    for algorithm in algorithms:
        family, bits = algorithm[:2], algorithm[2:]
        if family not in ("HS", "RS", "ES") or bits not in _HASHES:
            raise ValueError(f"unsupported algorithm {algorithm!r}")
        if family == "HS":
            if not secret:
                raise ValueError(f'"value" is required when {algorithm} is allowed')
            verifiers[algorithm] = _hmac_verifier(secret.encode(), bits)
            continue
        if jwks is not None:
            continue
        asymmetric.append(algorithm)
        if public_key is None:
            raise ValueError(f"a public key is required when {algorithm} is allowed")
        verifiers[algorithm] = _asymmetric_verifier(public_key, algorithm)
    if asymmetric and all(verifiers[algorithm] is None for algorithm in asymmetric):
        kind = "RSA" if isinstance(public_key, rsa.RSAPublicKey) else "EC"
        raise ValueError(f"the {kind} public key fits none of {', '.join(asymmetric)}")
    return verifiers


def _asymmetric_verifier(key: PublicKey, algorithm: str) -> Callable[[bytes, bytes], bool] | None:
    """The verifier of an RS or ES ``algorithm`` with ``key``; None if the key does not fit."""
    if not key_fits(key, algorithm):
        return None
    bits = algorithm[2:]
    if isinstance(key, rsa.RSAPublicKey):
        return _rsa_verifier(key, bits)
    return _ec_verifier(key, bits)


def _hmac_verifier(secret: bytes, bits: str) -> Callable[[bytes, bytes], bool]:
    digest = _HMAC_DIGESTS[bits]

    def verify(message: bytes, signature: bytes) -> bool:
        expected = hmac.digest(secret, message, digest)
        return hmac.compare_digest(expected, signature)

    return verify


def _rsa_verifier(key: rsa.RSAPublicKey, bits: str) -> Callable[[bytes, bytes], bool]:
    algorithm = _HASHES[bits]()

    def verify(message: bytes, signature: bytes) -> bool:
        try:
            key.verify(signature, message, padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            return False
        return True

    return verify


def _ec_verifier(key: ec.EllipticCurvePublicKey, bits: str) -> Callable[[bytes, bytes], bool]:
    algorithm = ec.ECDSA(_HASHES[bits]())
    size = (key.curve.key_size + 7) // 8

    def verify(message: bytes, signature: bytes) -> bool:
        # RFC 7518 §3.4: R and S as fixed-width big-endian integers, concatenated.
        if len(signature) != 2 * size:
            return False
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        try:
            key.verify(encode_dss_signature(r, s), message, algorithm)
        except InvalidSignature:
            return False
        return True

    return verify


def _b64url(segment: bytes) -> bytes:
    """Strict base64url without padding (RFC 7515 §2): alphabet only, canonical pad bits."""
    if len(segment) % 4 == 1 or _SEGMENT.fullmatch(segment) is None:
        raise TokenError(MALFORMED)
    decoded = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != segment:
        raise TokenError(MALFORMED)
    return decoded


def _json_object(data: bytes) -> dict[str, object]:
    """A UTF-8 JSON object with unique member names and finite numbers, else ``malformed``."""
    try:
        parsed: object = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_unique_members,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except (ValueError, RecursionError):
        raise TokenError(MALFORMED) from None
    if not isinstance(parsed, dict):
        raise TokenError(MALFORMED)
    return {str(key): value for key, value in parsed.items()}


def _unique_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise ValueError("duplicate member name")
    return members


def _reject_constant(constant: str) -> float:
    raise ValueError(f"{constant} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("number out of range")
    return number


def _numeric_date(claims: dict[str, object], name: str) -> float | None:
    """``claims[name]`` as a NumericDate (a JSON number), None if absent; else ``malformed``."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(MALFORMED)
    try:
        return float(value)
    except OverflowError:
        raise TokenError(MALFORMED) from None


def _append(headers: list[tuple[bytes, bytes]], field: bytes, claim: object) -> None:
    """Add ``field: claim``: a string as it is, anything else as compact, ASCII-escaped JSON.

    A value that is not a valid field value (control characters, surrounding whitespace, lone
    surrogates) is left out rather than forwarded or allowed to fail the request.
    """
    text = claim if isinstance(claim, str) else json.dumps(claim, separators=(",", ":"))
    try:
        value = text.encode("utf-8")
    except UnicodeEncodeError:
        return
    if _FIELD_CTL.search(value) is not None or value != value.strip(b" \t"):
        return
    headers.append((field, value))
