"""The keys a ``jwt`` definition verifies with, and the PyJWT ``decode`` call that uses them.

Ring 0: ``load_public_key`` has the ``public_key_file`` read once, when the definition is built
(``JwtMiddleware.from_config``), by the reader the shell hands in (``MiddlewareDeps.read_file``);
nothing here opens a file, reads the clock or logs. Each key is handed to PyJWT with an explicit
algorithm list made from the configuration and the key's type, never from the token (RFC 8725
§2.1): the secret serves the configured HS* algorithms, an RSA key the configured RS*, an EC key
the configured ES* of its curve. So an HS token is never checked with a public key, nor an RS/ES
token with the secret.

PyJWT checks the signature and, through ``Decoder``'s options, the presence of ``exp`` and the
``iss`` and ``aud`` claims. It does not check ``exp``, ``nbf`` or ``iat`` (its own clock is not
the injected one), ``sub`` or ``jti`` (any JSON value may be forwarded, SPEC §8.4).

Must not: give PyJWT a key for an algorithm it does not serve, or let PyJWT's per-decode
warning about a short key reach the log from the request path (``validate`` warns about a short
secret once; PyJWT would warn on every token verified with it).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import InsecureKeyLengthWarning, PyJWT, PyJWTError, get_algorithm_by_name

from a3s_gateway.middleware.jwks import PublicKey, key_fits

if TYPE_CHECKING:
    from jwt.types import Options

    from a3s_gateway.middleware.outbound import FileReader

__all__ = [
    "MAX_KEY_FILE_BYTES",
    "SUPPORTED_ALGORITHMS",
    "Decoder",
    "Key",
    "jwks_key",
    "load_public_key",
    "static_keys",
]

#: The largest ``public_key_file`` read (as ``preflight``: a PEM public key is a few KiB).
MAX_KEY_FILE_BYTES: Final = 1024 * 1024
#: The algorithms a definition may allow (SPEC §8.4); ``none``, PS* and EdDSA are not among them.
SUPPORTED_ALGORITHMS: Final = frozenset(
    f"{family}{bits}" for family in ("HS", "RS", "ES") for bits in ("256", "384", "512")
)


@dataclass(frozen=True, slots=True)
class Key:
    """A verification key and the configured algorithms it serves (PyJWT's explicit list).
    ``short``: PyJWT finds it below the recommended size and would warn on every use."""

    key: PublicKey | bytes
    algorithms: tuple[str, ...]
    short: bool = False


def load_public_key(file: str, read: FileReader) -> PublicKey:
    """The RSA or EC public key in the PEM file ``file``, read with ``read``; ``ValueError``
    says what is wrong."""
    try:
        data = read(file, MAX_KEY_FILE_BYTES + 1)
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


def static_keys(
    algorithms: tuple[str, ...],
    secret: str | None,
    public_key: PublicKey | None,
    *,
    jwks: bool,
) -> dict[str, Key | None]:
    """The key of each allowed algorithm known now; None where the configured key does not
    fit it. RS/ES algorithms are left out when their keys come from a JWKS (``jwks``).
    ``ValueError`` when a key is missing, fits no allowed algorithm or PyJWT refuses it."""
    if not algorithms:
        raise ValueError("at least one algorithm must be allowed")
    if jwks and public_key is not None:
        raise ValueError("set only one of a public key and a JWKS")
    for algorithm in algorithms:
        if algorithm not in SUPPORTED_ALGORITHMS:
            raise ValueError(f"unsupported algorithm {algorithm!r}")
    hs = tuple(algorithm for algorithm in algorithms if algorithm.startswith("HS"))
    asymmetric = tuple(algorithm for algorithm in algorithms if algorithm not in hs)
    keys: dict[str, Key | None] = {}
    if hs:
        if not secret:
            raise ValueError(f'"value" is required when {hs[0]} is allowed')
        keys.update(dict.fromkeys(hs, _prepared(secret.encode(), hs)))
    if not asymmetric or jwks:
        return keys
    if public_key is None:
        raise ValueError(f"a public key is required when {asymmetric[0]} is allowed")
    fitting = tuple(algorithm for algorithm in asymmetric if key_fits(public_key, algorithm))
    if not fitting:
        kind = "RSA" if isinstance(public_key, rsa.RSAPublicKey) else "EC"
        raise ValueError(f"the {kind} public key fits none of {', '.join(asymmetric)}")
    shared = _prepared(public_key, fitting)
    keys.update({algorithm: shared if algorithm in fitting else None for algorithm in asymmetric})
    return keys


def jwks_key(key: PublicKey, algorithms: tuple[str, ...]) -> Key:
    """A key of the JWK Set with the allowed ``algorithms`` its type and curve serve (a JWKS
    RSA key has at least 2048 bits, so PyJWT never finds it short)."""
    return Key(key, tuple(algorithm for algorithm in algorithms if key_fits(key, algorithm)))


def _prepared(key: PublicKey | bytes, algorithms: tuple[str, ...]) -> Key:
    """``key`` for ``algorithms`` once PyJWT accepts it for each: ``ValueError`` if it does not
    (a secret that is a PEM or SSH key, PyJWT's own guard against algorithm confusion)."""
    short = False
    for algorithm in algorithms:
        handler = get_algorithm_by_name(algorithm)
        try:
            prepared = handler.prepare_key(key)
        except PyJWTError as error:
            what = '"value"' if isinstance(key, bytes) else "the public key"
            raise ValueError(f"{what} cannot be used for {algorithm}: {error}") from None
        short = short or handler.check_key_length(prepared) is not None
    return Key(key, algorithms, short)


class Decoder:
    """PyJWT's ``decode`` with this definition's claim checks: ``exp`` required when
    ``require_exp``, ``iss`` equal to ``issuer`` and ``aud`` naming one of ``audience`` when
    they are set; time claims are the caller's (see the module docstring)."""

    __slots__ = ("_audience", "_issuer", "_jwt")

    def __init__(
        self, *, issuer: str | None, audience: frozenset[str] | None, require_exp: bool
    ) -> None:
        options: Options = {
            "verify_signature": True,
            "require": ["exp"] if require_exp else [],
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_iss": issuer is not None,
            "verify_aud": audience is not None,
            "verify_sub": False,
            "verify_jti": False,
            "strict_aud": False,
        }
        self._jwt = PyJWT(options)
        self._issuer = issuer
        self._audience = audience

    def decode(self, token: bytes, key: Key) -> None:
        """Verify ``token`` with ``key``; PyJWT's exception (a ``PyJWTError``) if it fails."""
        if not key.short:
            self._decode(token, key)
            return
        with warnings.catch_warnings(action="ignore", category=InsecureKeyLengthWarning):
            self._decode(token, key)

    def _decode(self, token: bytes, key: Key) -> None:
        self._jwt.decode_complete(
            token, key.key, key.algorithms, issuer=self._issuer, audience=self._audience
        )
