"""The ``jwt`` middleware (SPEC §8.4): bearer tokens in JWS compact form, checked with PyJWT.

Ring 0 on the request path: pure; no trio, sockets, TLS, logging, and no clock of its own. The
wall-clock time that ``exp`` and ``nbf`` are compared with comes from the ``clock`` callable
the caller passes (``RequestState.now`` is trio's monotonic clock, not Unix time; it is only
used to pace JWKS refreshes), so PyJWT's own time checks are off. IO: ``from_config`` has
``public_key_file`` read once, by the reader the caller passes (the shell's, through
``MiddlewareDeps.read_file``), so a missing or unparseable key refuses the config with
``StartError`` instead of failing every request; with ``jwks_url`` the keys come from a JWK Set
(``middleware/jwks.py``) that a Ring 1 task fetches at start and every 10 minutes through the
``background()`` hook, never on the request path.

A request passes when its ``header`` carries exactly one token that
* passes the strict reading of ``middleware/jwt_token.py`` (form, base64url, JSON, ``alg``,
  ``kid``, no ``crit``, numeric ``exp``/``nbf``): what PyJWT does not check or checks loosely;
* names in ``alg`` one of the configured ``algorithms`` (``none`` is never one);
* verifies, in PyJWT's ``decode``, with the key of its algorithm's family only, PyJWT being
  given the configured algorithms that key serves as its explicit list: HS* with the UTF-8
  bytes of ``value``, RS*/ES* with the public key of ``public_key_file`` or the JWKS key chosen
  by the header's ``kid`` (``JwksKeys.select``), so an RS/ES token is never checked against the
  secret nor the other way round, and a JWKS never supplies an HMAC key;
* has claims that pass ``require_exp``, ``issuer`` and ``audience`` (PyJWT, ``jwt_keys.py``),
  and ``exp``/``nbf`` with ``leeway`` against ``clock`` (here); a token that fails ``issuer`` or
  ``audience`` and is also expired or not yet valid is refused for its time.

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

import json
import math
import re
from typing import TYPE_CHECKING, Final, Self

from jwt import PyJWTError

from a3s_gateway.errors import StartError
from a3s_gateway.middleware.contract import Middleware
from a3s_gateway.middleware.jwks import JwksKeys, PublicKey
from a3s_gateway.middleware.jwt_keys import (
    MAX_KEY_FILE_BYTES,
    Decoder,
    Key,
    jwks_key,
    load_public_key,
    static_keys,
)
from a3s_gateway.middleware.jwt_token import (
    ALGORITHM_NOT_ALLOWED,
    AUDIENCE_MISMATCH,
    BAD_SIGNATURE,
    EXPIRED,
    ISSUER_MISMATCH,
    MALFORMED,
    MISSING_EXP,
    NOT_YET_VALID,
    REASONS,
    UNKNOWN_KEY,
    Claims,
    Compact,
    TokenError,
    read_claims,
    read_token,
    reason_for,
)
from a3s_gateway.protocols.events import ResponseHead
from a3s_gateway.protocols.responses import GeneratedResponse, error_response

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from a3s_gateway.config.schema_middlewares import Jwt
    from a3s_gateway.middleware.contract import Background, RequestState
    from a3s_gateway.middleware.outbound import FileReader, HttpCaller

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

_WWW_AUTHENTICATE: Final = b"www-authenticate"
_CONTENT_LENGTH: Final = b"content-length"
_BEARER: Final = b"bearer"
_MISSING_CHALLENGE: Final = b'Bearer realm="a3s-gateway"'
# Bytes a forwarded field value cannot hold (RFC 9110 §5.5: CTLs other than HTAB, and DEL).
_FIELD_CTL: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: The verified-token cache: at most this many tokens, each at most this long (≤ 2 MiB).
_CACHED_TOKENS: Final = 512
_CACHED_TOKEN_BYTES: Final = 4096


def _invalid_body(reason: str) -> bytes:
    # Encoded by the JSON encoder (never formatting); "status" as in every other error body.
    text = json.dumps(
        {"error": INVALID_TOKEN, "detail": reason, "status": 401}, separators=(",", ":")
    )
    return text.encode()


_INVALID_BODIES: Final = {reason: _invalid_body(reason) for reason in REASONS}


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
        "_claims",
        "_clock",
        "_decoder",
        "_field",
        "_jwks",
        "_keys",
        "_leeway",
        "_subject",
        "_targets",
        "_verified",
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
        self._leeway = float(leeway)
        self._subject = subject_header.lower().encode("ascii")
        self._claims = tuple(
            (claim, target.lower().encode("ascii"))
            for claim, target in (claims_headers or {}).items()
        )
        self._targets = frozenset({self._subject, *(target for _, target in self._claims)})
        self._algorithms = tuple(dict.fromkeys(algorithms))
        self._jwks = jwks
        self._keys = static_keys(self._algorithms, secret, public_key, jwks=jwks is not None)
        self._decoder = Decoder(
            issuer=issuer,
            audience=None if audience is None else frozenset(audience),
            require_exp=require_exp,
        )
        #: Tokens whose signature a configured key (``secret``, ``public_key``) verified, with
        #: their claims: a repeated token skips the decoding and the signature check, never
        #: the claims check against the clock (Envoy's ``jwt_cache_config``). JWKS keys
        #: rotate, so tokens they verified are not kept.
        self._verified: dict[bytes, Claims] = {}

    @classmethod
    def from_config(
        cls,
        name: str,
        block: Jwt,
        *,
        clock: Callable[[], float],
        http: HttpCaller | None = None,
        read_file: FileReader | None = None,
    ) -> Self:
        """The middleware of the validated ``jwt`` definition ``name``.

        Has ``public_key_file`` read now, with ``read_file``; a ``jwks_url`` gets an empty key
        set that ``http`` fills once ``background()`` runs. Raises ``StartError`` when the key
        file cannot be read, holds no usable key or fits none of the allowed algorithms, when
        ``value`` is a PEM or SSH key (PyJWT refuses one as an HMAC secret), and when
        ``jwks_url`` (``public_key_file``) is set but no ``http`` caller (``read_file``) was
        given.
        """
        jwks = None
        if block.jwks_url is not None:
            if http is None:
                raise StartError(
                    f'jwt "{name}": jwks_url needs an outbound HTTP client, and none was given'
                )
            jwks = JwksKeys(block.jwks_url, http)
        key_file = block.public_key_file
        if key_file is not None and read_file is None:
            raise StartError(
                f'jwt "{name}": public_key_file needs a file reader, and none was given'
            )
        audience = (block.audience,) if isinstance(block.audience, str) else block.audience
        try:
            public_key = (
                None
                if key_file is None or read_file is None
                else load_public_key(key_file, read_file)
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

        The clock is read only for a token whose signature is valid.
        """
        cached = self._verified.get(token)
        if cached is not None:
            try:
                self._check_times(cached, self._clock())
            except TokenError:
                del self._verified[token]
                raise
            return cached.members
        compact = read_token(token)
        if compact.algorithm not in self._algorithms:
            raise TokenError(ALGORITHM_NOT_ALLOWED)
        static = compact.algorithm in self._keys
        key = self._keys[compact.algorithm] if static else self._jwks_key(compact)
        if key is None:
            raise TokenError(UNKNOWN_KEY)
        claims = read_claims(compact.payload)
        try:
            self._decoder.decode(token, key)
        except PyJWTError as error:
            reason = reason_for(error)
            if reason in (ISSUER_MISMATCH, AUDIENCE_MISMATCH):
                # PyJWT checks iss and aud after the signature; exp and nbf still come first.
                self._check_times(claims, self._clock())
            raise TokenError(reason) from None
        self._check_times(claims, self._clock())
        if static and len(token) <= _CACHED_TOKEN_BYTES:
            verified = self._verified
            if len(verified) >= _CACHED_TOKENS:
                del verified[next(iter(verified))]  # the oldest
            verified[token] = claims
        return claims.members

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

    def _jwks_key(self, compact: Compact) -> Key | None:
        """The JWKS key of an RS/ES token (``_keys`` covers every algorithm otherwise)."""
        assert self._jwks is not None
        key = self._jwks.select(compact.kid, compact.algorithm)
        return None if key is None else jwks_key(key, self._algorithms)

    def _check_times(self, claims: Claims, now: float) -> None:
        # RFC 7519 §4.1.4/§4.1.5: valid while now < exp and from nbf on, widened by leeway.
        if claims.expires is not None and now >= claims.expires + self._leeway:
            raise TokenError(EXPIRED)
        if claims.not_before is not None and now < claims.not_before - self._leeway:
            raise TokenError(NOT_YET_VALID)


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
