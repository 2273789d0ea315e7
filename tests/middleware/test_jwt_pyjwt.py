"""``jwt`` on PyJWT: each PyJWT exception's SPEC §8.4 reason, and PyJWT's known pitfalls.

Mapping: every exception ``reason_for`` knows, then, token by token, that PyJWT (``Decoder``)
really raises that exception and that the middleware answers its reason. Pitfalls: algorithm
confusion (a public key PEM as the HMAC secret, in a token or in the configuration), ``alg:
none`` in any spelling with or without a signature, ES signatures in DER instead of raw R||S,
JWK Sets mixing unsupported keys (OKP, unknown ``kty``, ``use: enc``, another curve) with good
ones, PyJWT's short-key warning (pytest turns warnings into errors), and the order of reasons
when PyJWT and the clock both refuse a token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from a3s_gateway.config.values import DurationOrZero
from a3s_gateway.errors import StartError
from a3s_gateway.middleware.jwt import JwtMiddleware
from a3s_gateway.middleware.jwt_keys import Decoder, Key
from a3s_gateway.middleware.jwt_token import (
    ALGORITHM_NOT_ALLOWED,
    AUDIENCE_MISMATCH,
    BAD_SIGNATURE,
    EXPIRED,
    ISSUER_MISMATCH,
    MALFORMED,
    MISSING_EXP,
    NOT_YET_VALID,
    UNKNOWN_KEY,
    reason_for,
)
from tests.middleware.test_jwks import b64 as b64_text
from tests.middleware.test_jwks import ec_jwk, rsa_jwk
from tests.middleware.test_jwt import (
    NOW,
    SECRET,
    asymmetric_token,
    b64,
    claims,
    hs_token,
    jwks_middleware,
    jwks_reply,
    middleware,
    passes,
    refresh,
    rejects,
    segment,
    sign_es,
    sign_hs,
    signed,
    write_public,
)

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


# --------------------------------------------------------------------------- the mapping


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        pytest.param(jwt.InvalidSignatureError("x"), BAD_SIGNATURE, id="signature"),
        pytest.param(jwt.DecodeError("x"), MALFORMED, id="decode"),
        pytest.param(jwt.InvalidAlgorithmError("x"), ALGORITHM_NOT_ALLOWED, id="algorithm"),
        pytest.param(jwt.InvalidKeyError("x"), UNKNOWN_KEY, id="key"),
        pytest.param(jwt.ExpiredSignatureError("x"), EXPIRED, id="expired"),
        pytest.param(jwt.ImmatureSignatureError("x"), NOT_YET_VALID, id="immature"),
        pytest.param(jwt.InvalidIssuerError("x"), ISSUER_MISMATCH, id="issuer"),
        pytest.param(jwt.InvalidAudienceError("x"), AUDIENCE_MISMATCH, id="audience"),
        pytest.param(jwt.MissingRequiredClaimError("exp"), MISSING_EXP, id="missing-exp"),
        pytest.param(jwt.MissingRequiredClaimError("iss"), ISSUER_MISMATCH, id="missing-iss"),
        pytest.param(jwt.MissingRequiredClaimError("aud"), AUDIENCE_MISMATCH, id="missing-aud"),
        pytest.param(jwt.MissingRequiredClaimError("sub"), MALFORMED, id="missing-other"),
        pytest.param(jwt.InvalidIssuedAtError("x"), MALFORMED, id="iat"),
        pytest.param(jwt.InvalidTokenError("x"), MALFORMED, id="token"),
        pytest.param(jwt.PyJWKError("x"), MALFORMED, id="jwk"),
    ],
)
def test_each_pyjwt_exception_has_a_reason(error: jwt.PyJWTError, reason: str) -> None:
    assert reason_for(error) == reason


def secret_key(*algorithms: str) -> Key:
    return Key(SECRET.encode(), algorithms or ("HS256",))


def decoder(issuer: str | None = None, audience: str | None = None) -> Decoder:
    return Decoder(
        issuer=issuer,
        audience=None if audience is None else frozenset({audience}),
        require_exp=True,
    )


@pytest.mark.parametrize(
    ("token", "fields", "raised", "reason"),
    [
        pytest.param(
            hs_token(claims(), secret="t" * 64),
            {},
            jwt.InvalidSignatureError,
            BAD_SIGNATURE,
            id="wrong-secret",
        ),
        pytest.param(
            hs_token({"sub": "alice"}), {}, jwt.MissingRequiredClaimError, MISSING_EXP, id="no-exp"
        ),
        pytest.param(
            hs_token(claims(iss="https://evil.example")),
            {"issuer": "https://issuer.example"},
            jwt.InvalidIssuerError,
            ISSUER_MISMATCH,
            id="other-iss",
        ),
        pytest.param(
            hs_token(claims(iss=["https://issuer.example"])),
            {"issuer": "https://issuer.example"},
            jwt.InvalidIssuerError,
            ISSUER_MISMATCH,
            id="iss-list",
        ),
        pytest.param(
            hs_token(claims()),
            {"issuer": "https://issuer.example"},
            jwt.MissingRequiredClaimError,
            ISSUER_MISMATCH,
            id="no-iss",
        ),
        pytest.param(
            hs_token(claims(aud="other")),
            {"audience": "api"},
            jwt.InvalidAudienceError,
            AUDIENCE_MISMATCH,
            id="other-aud",
        ),
        pytest.param(
            hs_token(claims(aud=["api", 7])),
            {"audience": "api"},
            jwt.InvalidAudienceError,
            AUDIENCE_MISMATCH,
            id="aud-not-strings",
        ),
        pytest.param(
            hs_token(claims()),
            {"audience": "api"},
            jwt.MissingRequiredClaimError,
            AUDIENCE_MISMATCH,
            id="no-aud",
        ),
        pytest.param(
            hs_token(claims(aud=[])),
            {"audience": "api"},
            jwt.MissingRequiredClaimError,
            AUDIENCE_MISMATCH,
            id="empty-aud",
        ),
        pytest.param(
            hs_token(claims(), header={"alg": "HS256", "b64": False}),
            {},
            jwt.DecodeError,
            MALFORMED,
            id="b64-false",
        ),
    ],
)
async def test_what_pyjwt_raises_is_answered_with_its_reason(
    token: bytes, fields: dict[str, str], raised: type[jwt.PyJWTError], reason: str
) -> None:
    with pytest.raises(raised):
        decoder(**fields).decode(token, secret_key())
    await rejects(middleware(NOW, **fields), token, reason)


def test_pyjwt_refuses_an_algorithm_outside_the_keys_list() -> None:
    token = hs_token(claims(), algorithm="HS384")
    with pytest.raises(jwt.InvalidAlgorithmError) as caught:
        decoder().decode(token, secret_key("HS256"))
    assert reason_for(caught.value) == ALGORITHM_NOT_ALLOWED
    decoder().decode(token, secret_key("HS256", "HS384"))


def test_pyjwt_refuses_an_ec_key_of_another_curve() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    token = asymmetric_token(claims(), key, "ES384")
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(jwt.InvalidKeyError) as caught:
        decoder().decode(token, Key(p256, ("ES384",)))
    assert reason_for(caught.value) == UNKNOWN_KEY


def test_pyjwt_leaves_the_time_claims_to_the_middleware() -> None:
    token = hs_token(claims(exp=1, nbf=NOW * 2, iat=NOW * 2))
    decoder().decode(token, secret_key())  # PyJWT's clock would refuse all three


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        pytest.param({"exp": NOW - 100}, EXPIRED, id="expired"),
        pytest.param({"nbf": NOW + 100}, NOT_YET_VALID, id="not-yet-valid"),
        pytest.param({}, ISSUER_MISMATCH, id="in-time"),
    ],
)
async def test_the_time_is_named_before_the_issuer(extra: dict[str, object], reason: str) -> None:
    mw = middleware(issuer="https://issuer.example", leeway=DurationOrZero("0s"))
    await rejects(mw, hs_token(claims(iss="https://evil.example", **extra)), reason)
    mw = middleware(audience="api", leeway=DurationOrZero("0s"))
    expected = AUDIENCE_MISMATCH if reason == ISSUER_MISMATCH else reason
    await rejects(mw, hs_token(claims(aud="web", **extra)), expected)


# --------------------------------------------------------------------------- pitfalls


async def test_a_public_key_pem_as_the_hmac_secret_fails(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    file = write_public(tmp_path, rsa_key)
    pem = public_pem(rsa_key)
    mw = middleware(algorithms=("HS256", "RS256"), public_key_file=file)
    await rejects(mw, hs_token(claims(), secret=pem), BAD_SIGNATURE)
    await rejects(mw, hs_token(claims(), secret=pem.strip()), BAD_SIGNATURE)
    await passes(mw, asymmetric_token(claims(), rsa_key, "RS256"))
    rs_only = middleware(algorithms=("RS256",), value=None, public_key_file=file)
    await rejects(rs_only, hs_token(claims(), secret=pem), ALGORITHM_NOT_ALLOWED)


async def test_the_pem_of_a_jwks_key_as_the_hmac_secret_fails(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = public_pem(rsa_key)
    mixed = jwks_middleware(
        jwks_reply(rsa_jwk(rsa_key, kid="r1")), algorithms=("HS256", "RS256"), value=SECRET
    )
    await refresh(mixed)
    head: dict[str, object] = {"alg": "HS256", "kid": "r1"}
    await rejects(mixed, hs_token(claims(), secret=pem, header=head), BAD_SIGNATURE)
    await passes(mixed, signed(claims(), rsa_key, "RS256", kid="r1"))


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("pem", id="pem"),
        pytest.param("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ user@host", id="ssh"),
    ],
)
def test_a_key_as_the_configured_secret_is_a_start_error(
    rsa_key: rsa.RSAPrivateKey, secret: str
) -> None:
    value = public_pem(rsa_key) if secret == "pem" else secret
    with pytest.raises(StartError, match=r'jwt "auth": "value" cannot be used for HS256'):
        middleware(value=value)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_in_any_spelling_with_or_without_a_signature(alg: str) -> None:
    every = ("HS256", "HS384", "HS512")
    head = segment({"alg": alg, "typ": "JWT"})
    payload = segment(claims())
    unsigned = head + b"." + payload + b"."
    with_signature = head + b"." + payload + b"." + b64(sign_hs(head + b"." + payload))
    for token in (unsigned, with_signature):
        await rejects(middleware(algorithms=every), token, ALGORITHM_NOT_ALLOWED)


def test_none_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="unsupported algorithm 'none'"):
        JwtMiddleware("auth", clock=lambda: NOW, algorithms=("HS256", "none"), secret=SECRET)
    with pytest.raises(ValueError, match="unsupported algorithm 'PS256'"):
        JwtMiddleware("auth", clock=lambda: NOW, algorithms=("PS256",), secret=SECRET)


@pytest.mark.parametrize(
    ("algorithm", "curve", "digest"),
    [
        pytest.param("ES256", ec.SECP256R1(), hashes.SHA256(), id="ES256"),
        pytest.param("ES384", ec.SECP384R1(), hashes.SHA384(), id="ES384"),
        pytest.param("ES512", ec.SECP521R1(), hashes.SHA512(), id="ES512"),
    ],
)
async def test_an_es_signature_must_be_raw_r_and_s_not_der(
    tmp_path: Path, algorithm: str, curve: ec.EllipticCurve, digest: hashes.HashAlgorithm
) -> None:
    key = ec.generate_private_key(curve)
    mw = middleware(
        algorithms=(algorithm,), value=None, public_key_file=write_public(tmp_path, key)
    )
    signing_input = segment({"alg": algorithm}) + b"." + segment(claims())
    der = key.sign(signing_input, ec.ECDSA(digest))
    size = (key.curve.key_size + 7) // 8
    assert len(der) != 2 * size  # a DER SEQUENCE of two INTEGERs, never exactly R||S long
    await rejects(mw, signing_input + b"." + b64(der), BAD_SIGNATURE)
    await passes(mw, signing_input + b"." + b64(sign_es(signing_input, key, algorithm)))


async def test_unsupported_keys_in_a_jwks_leave_the_others_working(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_public = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = ed_public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    k1 = ec.generate_private_key(ec.SECP256K1())
    size = 32
    numbers = k1.public_key().public_numbers()
    mixed = [
        {"kty": "OKP", "crv": "Ed25519", "x": b64_text(raw), "kid": "ed", "alg": "EdDSA"},
        {"kty": "XYZ", "kid": "future", "q": "AQAB"},
        {"kty": "oct", "kid": "secret", "k": b64_text(b"k" * 64)},
        rsa_jwk(rsa_key, kid="enc", use="enc"),
        ec_jwk(ec_key, kid="wrap", key_ops=["wrapKey"]),
        {
            "kty": "EC",
            "crv": "secp256k1",
            "kid": "k1",
            "x": b64_text(numbers.x.to_bytes(size, "big")),
            "y": b64_text(numbers.y.to_bytes(size, "big")),
        },
        rsa_jwk(rsa_key, kid="r1"),
        ec_jwk(ec_key, kid="e1"),
    ]
    mw = jwks_middleware(jwks_reply(*mixed))
    warning = await refresh(mw)
    assert warning is not None
    assert 'skipped 1 invalid key(s): keys[5]: "crv" is not one of P-256, P-384, P-521' in warning
    assert mw.jwks is not None
    assert [jwk.kid for jwk in mw.jwks.keys] == ["r1", "e1"]
    assert mw.jwks_errors == 0
    await passes(mw, signed(claims(), rsa_key, "RS256", kid="r1"))
    await passes(mw, signed(claims(), ec_key, "ES256", kid="e1"))
    await rejects(mw, signed(claims(), rsa_key, "RS256", kid="enc"), UNKNOWN_KEY)
    await rejects(mw, signed(claims(), ec_key, "ES256", kid="wrap"), UNKNOWN_KEY)
    edd = segment({"alg": "EdDSA", "kid": "ed"}) + b"." + segment(claims()) + b"." + b64(raw)
    await rejects(mw, edd, ALGORITHM_NOT_ALLOWED)


async def test_a_private_member_in_a_jwks_key_is_not_loaded(rsa_key: rsa.RSAPrivateKey) -> None:
    private = rsa_key.private_numbers()
    leaked = rsa_jwk(rsa_key, kid="r1", d=b64_text(private.d.to_bytes(256, "big")))
    mw = jwks_middleware(jwks_reply(leaked))
    assert await refresh(mw) is None
    assert mw.jwks is not None
    assert isinstance(mw.jwks.keys[0].key, rsa.RSAPublicKey)
    await passes(mw, signed(claims(), rsa_key, "RS256", kid="r1"))


async def test_short_keys_verify_without_a_warning(tmp_path: Path) -> None:
    # PyJWT warns on every decode with a key below its recommended size; pytest makes a
    # warning an error, so these pass only if the request path stays quiet.
    short = "short-secret"
    mw = middleware(value=short, algorithms=("HS256", "HS512"))
    await passes(mw, hs_token(claims(), secret=short))
    await passes(mw, hs_token(claims(jti="2"), algorithm="HS512", secret=short))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    file = write_public(tmp_path, small)
    rs = middleware(algorithms=("RS256",), value=None, public_key_file=file)
    await passes(rs, asymmetric_token(claims(), small, "RS256"))


async def test_duplicate_claims_are_malformed_though_pyjwt_keeps_the_last() -> None:
    head = segment({"alg": "HS256"})
    payload = b64(b'{"sub":"alice","sub":"root","exp":%d}' % (NOW + 300))
    signing_input = head + b"." + payload
    token = signing_input + b"." + b64(sign_hs(signing_input))
    # PyJWT alone accepts it (if this fails, PyJWT became strict and read_claims may relax).
    decoder().decode(token, secret_key())
    await rejects(middleware(), token, MALFORMED)


async def test_a_key_embedded_in_the_header_is_never_used(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    embedded = {"jwk": rsa_jwk(attacker), "jku": "https://evil.example/jwks.json"}
    mw = middleware(
        algorithms=("RS256",), value=None, public_key_file=write_public(tmp_path, rsa_key)
    )
    await rejects(mw, signed(claims(), attacker, "RS256", **embedded), BAD_SIGNATURE)
    keyed = jwks_middleware(jwks_reply(rsa_jwk(rsa_key, kid="r1")))
    await refresh(keyed)
    await rejects(keyed, signed(claims(), attacker, "RS256", kid="r1", **embedded), BAD_SIGNATURE)
