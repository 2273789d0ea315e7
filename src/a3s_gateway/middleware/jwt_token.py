"""The strict reading of a ``jwt`` token before PyJWT verifies it, and the reasons a token fails.

Ring 0: pure functions over bytes; no IO, clock or logging. PyJWT (``middleware/jwt.py``) checks
the signature, the ``alg`` against an explicit list and the ``exp`` presence, ``iss`` and ``aud``
claims; this module holds what it does not check, or checks more loosely than SPEC §8.4 asks:

* three base64url segments (RFC 4648 §5) without padding, with canonical pad bits and no byte
  outside the alphabet (PyJWT accepts ``=`` padding);
* a header and a payload that are UTF-8 JSON objects without duplicate member names (RFC 7515
  §4, RFC 7519 §4: names are unique; PyJWT keeps the last one) and without ``NaN``,
  ``Infinity`` or numbers out of range (PyJWT's ``json.loads`` accepts them);
* an ``alg`` string (the allow-list check itself is the caller's), a ``kid`` that is a string
  when present, and no ``crit`` header: no extension is understood (PyJWT understands ``b64``);
* ``exp`` and ``nbf``, when present, JSON numbers, ``true``/``false`` excluded (PyJWT's own
  check, off here, reads them with ``int()``, which takes a bool, a numeric string, and cuts
  fractions); they are compared with the caller's clock.

``reason_for`` maps PyJWT's exceptions, which are not one-to-one with SPEC §8.4's reasons, to
those reasons. Every failure is a ``TokenError`` carrying one of the reason texts below.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from typing import Final

from jwt import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWTError,
)

__all__ = [
    "ALGORITHM_NOT_ALLOWED",
    "AUDIENCE_MISMATCH",
    "BAD_SIGNATURE",
    "EXPIRED",
    "ISSUER_MISMATCH",
    "MALFORMED",
    "MISSING_EXP",
    "NOT_YET_VALID",
    "REASONS",
    "UNKNOWN_KEY",
    "Claims",
    "Compact",
    "TokenError",
    "read_claims",
    "read_token",
    "reason_for",
]

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
REASONS: Final = (
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

_SEGMENT: Final = re.compile(rb"[A-Za-z0-9_-]*")
#: The reason of a claim PyJWT finds missing (``require``, ``issuer``, ``audience``).
_MISSING_CLAIMS: Final = {"exp": MISSING_EXP, "iss": ISSUER_MISMATCH, "aud": AUDIENCE_MISMATCH}
#: PyJWT's exception classes, most specific first (``InvalidSignatureError`` is a
#: ``DecodeError``); anything else PyJWT raises about a token is ``malformed``.
_REASONS: Final[tuple[tuple[type[PyJWTError], str], ...]] = (
    (InvalidSignatureError, BAD_SIGNATURE),
    (InvalidAlgorithmError, ALGORITHM_NOT_ALLOWED),
    (InvalidKeyError, UNKNOWN_KEY),
    (ExpiredSignatureError, EXPIRED),
    (ImmatureSignatureError, NOT_YET_VALID),
    (InvalidIssuerError, ISSUER_MISMATCH),
    (InvalidAudienceError, AUDIENCE_MISMATCH),
    (DecodeError, MALFORMED),
)


class TokenError(ValueError):
    """A token was rejected; ``reason`` is one of the SPEC §8.4 ``detail`` texts."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Compact:
    """A token whose form and header passed: the ``alg`` and ``kid`` (None: absent) it names
    and its payload's bytes, not parsed yet."""

    algorithm: str
    kid: str | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class Claims:
    """A payload's members, with ``exp`` and ``nbf`` as numbers (None when absent)."""

    members: dict[str, object]
    expires: float | None
    not_before: float | None


def read_token(token: bytes) -> Compact:
    """The header of ``token`` read strictly (see the module docstring), else ``malformed``."""
    parts = token.split(b".")
    if len(parts) != 3:
        raise TokenError(MALFORMED)
    header_part, payload_part, signature_part = parts
    header = _json_object(_b64url(header_part))
    payload = _b64url(payload_part)
    _b64url(signature_part)
    algorithm = header.get("alg")
    kid = header.get("kid")
    if not isinstance(algorithm, str) or "crit" in header:
        raise TokenError(MALFORMED)
    if kid is not None and not isinstance(kid, str):
        raise TokenError(MALFORMED)
    return Compact(algorithm, kid, payload)


def read_claims(payload: bytes) -> Claims:
    """The claims of a payload read strictly (a JSON object; ``exp``, ``nbf`` numbers)."""
    members = _json_object(payload)
    return Claims(members, _numeric_date(members, "exp"), _numeric_date(members, "nbf"))


def reason_for(error: PyJWTError) -> str:
    """The SPEC §8.4 reason for an exception of PyJWT's ``decode``."""
    if isinstance(error, MissingRequiredClaimError):
        return _MISSING_CLAIMS.get(error.claim, MALFORMED)
    for kind, reason in _REASONS:
        if isinstance(error, kind):
            return reason
    return MALFORMED  # InvalidTokenError itself (a kid or crit PyJWT refuses), and the rest


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
