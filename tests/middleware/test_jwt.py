"""The ``jwt`` middleware (SPEC §8.4) with tokens signed here (HMAC, RSA and EC keys)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.schema_middlewares import Jwt
from a3s_gateway.config.urls import HttpUrl
from a3s_gateway.config.values import DurationOrZero
from a3s_gateway.errors import StartError
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.middleware.jwt import (
    ALGORITHM_NOT_ALLOWED,
    AUDIENCE_MISMATCH,
    BAD_SIGNATURE,
    EXPIRED,
    ISSUER_MISMATCH,
    MALFORMED,
    MAX_KEY_FILE_BYTES,
    MISSING_EXP,
    NOT_YET_VALID,
    UNKNOWN_KEY,
    JwtMiddleware,
    bearer_token,
)
from a3s_gateway.middleware.outbound import HttpReply, MiddlewareDeps, OutboundFailed
from a3s_gateway.middleware.phases import compile_chains
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.protocols.responses import GeneratedResponse
from a3s_gateway.server.outbound_clients import read_file
from tests.middleware.test_jwks import FakeCaller, document, ec_jwk, rsa_jwk

if TYPE_CHECKING:
    from pathlib import Path

SECRET = "s" * 64
JWKS_URL = HttpUrl("https://issuer.example/.well-known/jwks.json")
NOW = 1_700_000_000
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}


# --------------------------------------------------------------------------- helpers


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def segment(value: object) -> bytes:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def sign_hs(message: bytes, algorithm: str = "HS256", secret: str = SECRET) -> bytes:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    return hmac.new(secret.encode(), message, digest[algorithm]).digest()


def sign_rs(message: bytes, key: rsa.RSAPrivateKey, algorithm: str) -> bytes:
    return key.sign(message, padding.PKCS1v15(), HASHES[algorithm[2:]]())


def sign_es(message: bytes, key: ec.EllipticCurvePrivateKey, algorithm: str) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(HASHES[algorithm[2:]]())))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def hs_token(
    claims: dict[str, object],
    *,
    algorithm: str = "HS256",
    secret: str = SECRET,
    header: dict[str, object] | None = None,
) -> bytes:
    head = segment(header if header is not None else {"alg": algorithm, "typ": "JWT"})
    signing_input = head + b"." + segment(claims)
    return signing_input + b"." + b64(sign_hs(signing_input, algorithm, secret))


def raw_token(header: bytes, payload: bytes, secret: str = SECRET) -> bytes:
    """A token over already-encoded segments, signed with HS256."""
    signing_input = header + b"." + payload
    return signing_input + b"." + b64(sign_hs(signing_input))


def claims(**extra: object) -> dict[str, object]:
    return {"sub": "alice", "exp": NOW + 300, **extra}


def make_state(headers: Headers) -> RequestState:
    return RequestState(
        method=b"GET",
        path=b"/",
        query=b"",
        headers=headers,
        authority=b"example.com",
        client_ip="192.0.2.1",
        peer_ip="192.0.2.1",
        tls=False,
    )


def header(response: GeneratedResponse, name: bytes) -> list[bytes]:
    return [value for field, value in response.head.headers if field == name]


def bearer(token: bytes) -> tuple[bytes, bytes]:
    return (b"authorization", b"Bearer " + token)


def middleware(now: float = NOW, **fields: object) -> JwtMiddleware:
    fields.setdefault("value", SECRET)
    block = Jwt(**fields)  # type: ignore[arg-type]  # each test passes a few valid Jwt fields
    return JwtMiddleware.from_config("auth", block, clock=lambda: now, read_file=read_file)


def assert_missing(response: GeneratedResponse | None) -> None:
    assert response is not None
    assert response.head.status == 401
    assert json.loads(response.body) == {"error": "missing token", "status": 401}
    assert header(response, b"www-authenticate") == [b'Bearer realm="a3s-gateway"']
    assert header(response, b"content-type") == [b"application/json"]
    assert header(response, b"content-length") == [str(len(response.body)).encode()]
    assert not response.close


def assert_invalid(response: GeneratedResponse | None, reason: str) -> None:
    assert response is not None
    assert response.head.status == 401
    assert json.loads(response.body) == {"error": "invalid token", "detail": reason, "status": 401}
    challenge = (
        'Bearer realm="a3s-gateway", error="invalid_token", error_description="' + reason + '"'
    )
    assert header(response, b"www-authenticate") == [challenge.encode()]
    assert header(response, b"content-type") == [b"application/json"]
    assert header(response, b"cache-control") == [b"no-store"]
    assert header(response, b"content-length") == [str(len(response.body)).encode()]
    assert not response.close


async def passes(mw: JwtMiddleware, token: bytes) -> RequestState:
    state = make_state([bearer(token)])
    assert await mw.request(state) is None
    return state


async def rejects(mw: JwtMiddleware, token: bytes, reason: str) -> None:
    assert_invalid(await mw.request(make_state([bearer(token)])), reason)


# --------------------------------------------------------------------------- token source


async def test_valid_hs256_token_passes_and_sets_subject() -> None:
    state = await passes(middleware(), hs_token(claims()))
    assert state.headers[-1] == (b"x-jwt-subject", b"alice")
    assert state.headers[0][0] == b"authorization"


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
async def test_each_hs_algorithm(algorithm: str) -> None:
    mw = middleware(algorithms=(algorithm,))
    await passes(mw, hs_token(claims(), algorithm=algorithm))


async def test_missing_header_is_missing_token() -> None:
    assert_missing(await middleware().request(make_state([(b"accept", b"*/*")])))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"Basic dXNlcjpwYXNz", id="basic"),
        pytest.param(b"Token abc", id="other-scheme"),
        pytest.param(b"", id="empty"),
    ],
)
async def test_other_scheme_is_missing_token(value: bytes) -> None:
    assert_missing(await middleware().request(make_state([(b"authorization", value)])))


@pytest.mark.parametrize("scheme", [b"Bearer", b"bearer", b"BEARER", b"bEaReR"])
async def test_scheme_is_case_insensitive(scheme: bytes) -> None:
    state = make_state([(b"authorization", scheme + b"  " + hs_token(claims()))])
    assert await middleware().request(state) is None


async def test_raw_token_without_scheme_is_accepted() -> None:
    state = make_state([(b"authorization", hs_token(claims()))])
    assert await middleware().request(state) is None


async def test_two_header_lines_are_malformed() -> None:
    token = hs_token(claims())
    state = make_state([bearer(token), bearer(token)])
    assert_invalid(await middleware().request(state), MALFORMED)


async def test_configured_header() -> None:
    mw = middleware(header="X-Token")
    token = hs_token(claims())
    assert await mw.request(make_state([(b"x-token", b"Bearer " + token)])) is None
    assert_missing(await mw.request(make_state([bearer(token)])))


def test_bearer_token() -> None:
    assert bearer_token(b"Bearer abc") == b"abc"
    assert bearer_token(b"abc") == b"abc"
    assert bearer_token(b"Basic abc") is None
    assert bearer_token(b"") is None


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(b"abc", id="one-part"),
        pytest.param(b"a.b", id="two-parts"),
        pytest.param(b"a.b.c.d", id="four-parts"),
        pytest.param(b"..", id="empty-parts"),
        pytest.param(b"Bearer", id="scheme-only"),
    ],
)
async def test_structure_is_malformed(token: bytes) -> None:
    await rejects(middleware(), token, MALFORMED)


async def test_padding_and_foreign_characters_are_malformed() -> None:
    good = hs_token(claims())
    head, payload, signature = good.split(b".")
    padded_head = base64.urlsafe_b64encode(json.dumps({"alg": "HS256"}).encode())
    assert padded_head.endswith(b"=")
    await rejects(middleware(), raw_token(padded_head, payload), MALFORMED)
    standard = base64.b64encode(b'{"alg":"HS256","x":"\xff\xfe>>"}').rstrip(b"=")
    assert b"+" in standard or b"/" in standard
    await rejects(middleware(), raw_token(standard, payload), MALFORMED)
    await rejects(middleware(), head + b"." + payload + b"." + signature + b"=", MALFORMED)
    await rejects(middleware(), head + b"." + payload + b" ." + signature, MALFORMED)


async def test_non_canonical_base64_is_malformed() -> None:
    head = segment({"alg": "HS256"})
    # A length of 4n+2 leaves four pad bits, 4n+3 two; they must be zero.
    payload = segment(claims())
    assert len(payload) % 4 in (2, 3)
    last = payload[-1:]
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    tweaked = payload[:-1] + alphabet[alphabet.index(last) + 1 : alphabet.index(last) + 2]
    assert base64.urlsafe_b64decode(tweaked + b"==") == base64.urlsafe_b64decode(payload + b"==")
    await rejects(middleware(), raw_token(head, tweaked), MALFORMED)
    await rejects(middleware(), raw_token(head, payload + b"A" * 5), MALFORMED)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b64(b"not json"), id="not-json"),
        pytest.param(b64(b'["alg","HS256"]'), id="array"),
        pytest.param(b64(b'"HS256"'), id="string"),
        pytest.param(b64(b'{"alg":"HS256","alg":"HS256"}'), id="duplicate-member"),
        pytest.param(b64(b'{"alg":"HS\xff256"}'), id="not-utf8"),
        pytest.param(b64(b'\xef\xbb\xbf{"alg":"HS256"}'), id="bom"),
        pytest.param(b64('{"alg":"HS256"}'.encode("utf-16")), id="utf16"),
        pytest.param(segment({"alg": 256}), id="alg-not-string"),
        pytest.param(segment({"typ": "JWT"}), id="no-alg"),
        pytest.param(segment({"alg": "HS256", "kid": 7}), id="kid-not-string"),
        pytest.param(segment({"alg": "HS256", "crit": ["exp"]}), id="crit"),
        pytest.param(b64(b'{"alg":"HS256","x":NaN}'), id="nan"),
        pytest.param(b64(b'{"alg":"HS256","x":1e999}'), id="infinite"),
        pytest.param(b64(b"[" * 100_000), id="deep"),
    ],
)
async def test_malformed_header(head: bytes) -> None:
    await rejects(middleware(), raw_token(head, segment(claims())), MALFORMED)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b64(b"{"), id="truncated"),
        pytest.param(b64(b"[1,2]"), id="array"),
        pytest.param(b64(b'{"sub":"a","sub":"b","exp":1800000000}'), id="duplicate-member"),
        pytest.param(b64(b'{"exp":Infinity}'), id="infinity"),
        pytest.param(b64(b'{"exp":1e400}'), id="overflow"),
        pytest.param(segment({"exp": "1800000000"}), id="exp-string"),
        pytest.param(segment({"exp": True}), id="exp-bool"),
        pytest.param(segment({"exp": NOW + 300, "nbf": None}), id="nbf-null"),
        pytest.param(segment({"exp": 10**400}), id="exp-huge-int"),
    ],
)
async def test_malformed_payload_with_valid_signature(payload: bytes) -> None:
    await rejects(middleware(), raw_token(segment({"alg": "HS256"}), payload), MALFORMED)


async def test_kid_is_ignored_with_a_single_key() -> None:
    token = hs_token(claims(), header={"alg": "HS256", "kid": "anything"})
    await passes(middleware(), token)


# --------------------------------------------------------------------------- algorithms


async def test_alg_none_is_never_allowed() -> None:
    head = segment({"alg": "none", "typ": "JWT"})
    token = head + b"." + segment(claims()) + b"."
    await rejects(middleware(), token, ALGORITHM_NOT_ALLOWED)
    await rejects(middleware(), raw_token(head, segment(claims())), ALGORITHM_NOT_ALLOWED)


@pytest.mark.parametrize("alg", ["HS384", "HS512", "RS256", "ES256", "hs256", "PS256", ""])
async def test_alg_outside_the_allow_list(alg: str) -> None:
    token = raw_token(segment({"alg": alg}), segment(claims()))
    await rejects(middleware(), token, ALGORITHM_NOT_ALLOWED)


async def test_wrong_secret_is_bad_signature() -> None:
    await rejects(middleware(), hs_token(claims(), secret="t" * 64), BAD_SIGNATURE)


async def test_tampered_signature_payload_and_header_are_bad_signature() -> None:
    mw = middleware(algorithms=("HS256", "HS384"))
    token = hs_token(claims())
    head, payload, signature = token.split(b".")
    flipped = bytearray(base64.urlsafe_b64decode(signature + b"="))
    flipped[0] ^= 1
    await rejects(mw, head + b"." + payload + b"." + b64(bytes(flipped)), BAD_SIGNATURE)
    await rejects(mw, head + b"." + payload + b"." + b64(bytes(flipped[:-3])), BAD_SIGNATURE)
    await rejects(mw, head + b"." + payload + b".", BAD_SIGNATURE)
    forged_payload = segment(claims(sub="mallory"))
    await rejects(mw, head + b"." + forged_payload + b"." + signature, BAD_SIGNATURE)
    forged_head = segment({"alg": "HS384", "typ": "JWT"})
    await rejects(mw, forged_head + b"." + payload + b"." + signature, BAD_SIGNATURE)


# --------------------------------------------------------------------------- claims


async def test_missing_exp_when_required() -> None:
    await rejects(middleware(), hs_token({"sub": "alice"}), MISSING_EXP)
    await passes(middleware(require_exp=False), hs_token({"sub": "alice"}))


async def test_exp_still_checked_when_not_required() -> None:
    mw = middleware(require_exp=False, leeway=DurationOrZero("0s"))
    await rejects(mw, hs_token(claims(exp=NOW - 1)), EXPIRED)


@pytest.mark.parametrize(
    ("exp", "ok"),
    [
        pytest.param(NOW + 1, True, id="future"),
        pytest.param(NOW, False, id="now"),
        pytest.param(NOW - 1, False, id="past"),
        pytest.param(NOW + 0.5, True, id="fraction"),
    ],
)
async def test_exp_without_leeway(exp: float, ok: bool) -> None:
    mw = middleware(leeway=DurationOrZero("0s"))
    token = hs_token(claims(exp=exp))
    if ok:
        await passes(mw, token)
    else:
        await rejects(mw, token, EXPIRED)


@pytest.mark.parametrize(
    ("exp", "ok"),
    [
        pytest.param(NOW - 59, True, id="inside-leeway"),
        pytest.param(NOW - 60, False, id="at-leeway"),
        pytest.param(NOW - 61, False, id="beyond-leeway"),
    ],
)
async def test_exp_with_default_leeway(exp: int, ok: bool) -> None:
    token = hs_token(claims(exp=exp))
    if ok:
        await passes(middleware(), token)
    else:
        await rejects(middleware(), token, EXPIRED)


@pytest.mark.parametrize(
    ("nbf", "leeway", "ok"),
    [
        pytest.param(NOW, "0s", True, id="now"),
        pytest.param(NOW + 1, "0s", False, id="future-no-leeway"),
        pytest.param(NOW + 10, "10s", True, id="at-leeway"),
        pytest.param(NOW + 11, "10s", False, id="beyond-leeway"),
        pytest.param(NOW - 1000, "0s", True, id="past"),
    ],
)
async def test_nbf(nbf: int, leeway: str, ok: bool) -> None:
    mw = middleware(leeway=DurationOrZero(leeway))
    token = hs_token(claims(nbf=nbf))
    if ok:
        await passes(mw, token)
    else:
        await rejects(mw, token, NOT_YET_VALID)


async def test_clock_is_read_per_request() -> None:
    times = [NOW, NOW + 1000]
    block = Jwt(value=SECRET, leeway=DurationOrZero("0s"))
    mw = JwtMiddleware.from_config("auth", block, clock=lambda: times[0])
    token = hs_token(claims())
    await passes(mw, token)
    times[0] = times[1]
    await rejects(mw, token, EXPIRED)


async def test_a_repeated_token_is_verified_once_and_its_claims_checked_every_time() -> None:
    times = [float(NOW)]
    calls: list[bytes] = []
    block = Jwt(value=SECRET, leeway=DurationOrZero("0s"))
    mw = JwtMiddleware.from_config("auth", block, clock=lambda: times[0])
    token = hs_token(claims(sub="carol"))
    for _ in range(3):
        state = await passes(mw, token)
        calls.append(dict(state.headers)[b"x-jwt-subject"])
    assert calls == [b"carol"] * 3
    # A token differing in one signature byte is not the cached one.
    forged = token[:-2] + (b"A" if token[-2:-1] != b"A" else b"B") + token[-1:]
    await rejects(mw, forged, BAD_SIGNATURE)
    times[0] = NOW + 300.0
    await rejects(mw, token, EXPIRED)  # the cached token's exp still counts
    times[0] = float(NOW)
    await passes(mw, token)  # verified afresh


async def test_the_verified_token_cache_is_bounded() -> None:
    mw = middleware()
    for n in range(600):
        await passes(mw, hs_token(claims(jti=str(n))))
    first = hs_token(claims(jti="0"))
    tampered = first.replace(b".", b"x", 1)
    await rejects(mw, tampered, MALFORMED)
    assert len(mw._verified) == 512
    await passes(mw, first)  # evicted, and verified again


async def test_issuer() -> None:
    mw = middleware(issuer="https://issuer.example")
    await passes(mw, hs_token(claims(iss="https://issuer.example")))
    await rejects(mw, hs_token(claims(iss="https://evil.example")), ISSUER_MISMATCH)
    await rejects(mw, hs_token(claims()), ISSUER_MISMATCH)
    await rejects(mw, hs_token(claims(iss=["https://issuer.example"])), ISSUER_MISMATCH)
    await passes(middleware(), hs_token(claims(iss="https://evil.example")))


async def test_audience() -> None:
    mw = middleware(audience=("api", "web"))
    await passes(mw, hs_token(claims(aud="api")))
    await passes(mw, hs_token(claims(aud=["other", "web"])))
    await rejects(mw, hs_token(claims(aud="other")), AUDIENCE_MISMATCH)
    await rejects(mw, hs_token(claims(aud=["other", "more"])), AUDIENCE_MISMATCH)
    await rejects(mw, hs_token(claims(aud=[])), AUDIENCE_MISMATCH)
    await rejects(mw, hs_token(claims()), AUDIENCE_MISMATCH)
    await rejects(mw, hs_token(claims(aud=["api", 7])), AUDIENCE_MISMATCH)
    await rejects(mw, hs_token(claims(aud={"api": True})), AUDIENCE_MISMATCH)


async def test_audience_as_one_string() -> None:
    mw = middleware(audience="api")
    await passes(mw, hs_token(claims(aud=["api"])))
    await rejects(mw, hs_token(claims(aud="ap")), AUDIENCE_MISMATCH)


async def test_aud_ignored_without_audience() -> None:
    await passes(middleware(), hs_token(claims(aud="anyone")))


# --------------------------------------------------------------------------- claim headers


async def test_client_copies_removed_and_claims_set() -> None:
    mw = middleware(
        claims_headers={
            "email": "X-User-Email",
            "roles": "X-User-Roles",
            "admin": "X-Admin",
            "missing": "X-Missing",
            "org": "X-Org",
        }
    )
    token = hs_token(
        claims(email="alice@example.com", roles=["a", "b"], admin=False, org={"id": 7})
    )
    state = make_state(
        [
            (b"x-jwt-subject", b"root"),
            bearer(token),
            (b"x-user-email", b"root@example.com"),
            (b"x-missing", b"spoofed"),
            (b"x-admin", b"true"),
            (b"accept", b"*/*"),
            (b"x-jwt-subject", b"root2"),
        ]
    )
    assert await mw.request(state) is None
    assert state.headers == [
        bearer(token),
        (b"accept", b"*/*"),
        (b"x-jwt-subject", b"alice"),
        (b"x-user-email", b"alice@example.com"),
        (b"x-user-roles", b'["a","b"]'),
        (b"x-admin", b"false"),
        (b"x-org", b'{"id":7}'),
    ]


async def test_non_string_sub_sets_no_subject_but_removes_copies() -> None:
    token = hs_token({"sub": 42, "exp": NOW + 300})
    state = make_state([(b"x-jwt-subject", b"root"), bearer(token)])
    assert await middleware().request(state) is None
    assert state.headers == [bearer(token)]


async def test_custom_subject_header() -> None:
    mw = middleware(subject_header="X-User")
    token = hs_token(claims())
    state = make_state([(b"x-user", b"root"), (b"x-jwt-subject", b"kept"), bearer(token)])
    assert await mw.request(state) is None
    assert state.headers == [(b"x-jwt-subject", b"kept"), bearer(token), (b"x-user", b"alice")]


async def test_claim_values_that_are_not_field_values_are_left_out() -> None:
    mw = middleware(claims_headers={"name": "X-Name", "note": "X-Note"})
    token = hs_token(claims(sub="ali\r\nX-Admin: 1", name=" padded", note="caf\u00e9"))
    state = make_state([(b"x-name", b"spoofed"), bearer(token)])
    assert await mw.request(state) is None
    assert state.headers == [bearer(token), (b"x-note", "caf\u00e9".encode())]


async def test_rejected_request_keeps_its_headers() -> None:
    headers = [(b"x-jwt-subject", b"root"), bearer(hs_token(claims(), secret="x" * 64))]
    state = make_state(list(headers))
    assert_invalid(await middleware().request(state), BAD_SIGNATURE)
    assert state.headers == headers


# --------------------------------------------------------------------------- RS and ES


def write_public(tmp_path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    file = tmp_path / "public.pem"
    file.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return str(file)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def asymmetric_token(
    body: dict[str, object],
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    algorithm: str,
) -> bytes:
    signing_input = segment({"alg": algorithm, "typ": "JWT"}) + b"." + segment(body)
    if isinstance(key, rsa.RSAPrivateKey):
        signature = sign_rs(signing_input, key, algorithm)
    else:
        signature = sign_es(signing_input, key, algorithm)
    return signing_input + b"." + b64(signature)


@pytest.mark.parametrize("algorithm", ["RS256", "RS384", "RS512"])
async def test_rs_algorithms(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, algorithm: str) -> None:
    file = write_public(tmp_path, rsa_key)
    mw = middleware(algorithms=(algorithm,), value=None, public_key_file=file)
    state = await passes(mw, asymmetric_token(claims(), rsa_key, algorithm))
    assert state.headers[-1] == (b"x-jwt-subject", b"alice")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await rejects(mw, asymmetric_token(claims(), other, algorithm), BAD_SIGNATURE)


@pytest.mark.parametrize("algorithm", ["ES256", "ES384", "ES512"])
async def test_es_algorithms(tmp_path: Path, algorithm: str) -> None:
    key = ec.generate_private_key(CURVES[algorithm]())
    file = write_public(tmp_path, key)
    mw = middleware(algorithms=(algorithm,), value=None, public_key_file=file)
    token = asymmetric_token(claims(), key, algorithm)
    await passes(mw, token)
    head, payload, signature = token.split(b".")
    raw = base64.urlsafe_b64decode(signature + b"=" * (-len(signature) % 4))
    await rejects(mw, head + b"." + payload + b"." + b64(raw[:-1]), BAD_SIGNATURE)
    await rejects(mw, head + b"." + payload + b"." + b64(raw + b"\x00"), BAD_SIGNATURE)
    await rejects(mw, head + b"." + payload + b"." + b64(bytes(len(raw))), BAD_SIGNATURE)
    forged = segment(claims(sub="mallory"))
    await rejects(mw, head + b"." + forged + b"." + signature, BAD_SIGNATURE)


async def test_es_key_of_another_curve_is_unknown_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    file = write_public(tmp_path, key)
    mw = middleware(algorithms=("ES256", "ES384"), value=None, public_key_file=file)
    other = ec.generate_private_key(ec.SECP384R1())
    await rejects(mw, asymmetric_token(claims(), other, "ES384"), UNKNOWN_KEY)
    await passes(mw, asymmetric_token(claims(), key, "ES256"))


async def test_no_algorithm_confusion(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    file = write_public(tmp_path, rsa_key)
    pem = (tmp_path / "public.pem").read_text()
    mw = middleware(algorithms=("HS256", "RS256"), value=SECRET, public_key_file=file)
    await passes(mw, hs_token(claims()))
    await passes(mw, asymmetric_token(claims(), rsa_key, "RS256"))
    # An HS token signed with the public key as the HMAC secret: the classic confusion.
    await rejects(mw, hs_token(claims(), secret=pem), BAD_SIGNATURE)
    # An RS token whose "signature" is the HMAC with the secret.
    head = segment({"alg": "RS256"})
    payload = segment(claims())
    forged = head + b"." + payload + b"." + b64(sign_hs(head + b"." + payload))
    await rejects(mw, forged, BAD_SIGNATURE)
    # The RSA key does not fit ES256: a token claiming it has no key.
    mw_es = middleware(algorithms=("RS256", "ES256"), value=None, public_key_file=file)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    await rejects(mw_es, asymmetric_token(claims(), ec_key, "ES256"), UNKNOWN_KEY)


# --------------------------------------------------------------------------- construction


def test_missing_public_key_file_is_a_start_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.pem")
    with pytest.raises(StartError, match=r'jwt "auth": cannot read public key file ".*absent'):
        middleware(algorithms=("RS256",), value=None, public_key_file=missing)


def test_bad_public_key_file_is_a_start_error(tmp_path: Path) -> None:
    file = tmp_path / "bad.pem"
    file.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    with pytest.raises(StartError, match=r'jwt "auth": public key file ".*" is not a PEM'):
        middleware(algorithms=("RS256",), value=None, public_key_file=str(file))


def test_private_key_file_is_not_a_public_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    file = tmp_path / "private.pem"
    file.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(StartError, match="is not a PEM public key"):
        middleware(algorithms=("RS256",), value=None, public_key_file=str(file))


def test_unsupported_key_type_is_a_start_error(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = ed25519.Ed25519PrivateKey.generate().public_key()
    file = tmp_path / "ed.pem"
    file.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(StartError, match="only RSA and EC keys are supported"):
        middleware(algorithms=("RS256",), value=None, public_key_file=str(file))


def test_key_fitting_no_algorithm_is_a_start_error(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    file = write_public(tmp_path, rsa_key)
    with pytest.raises(StartError, match="the RSA public key fits none of ES256"):
        middleware(algorithms=("ES256",), value=None, public_key_file=file)
    ec_file = write_public(tmp_path, ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(StartError, match="the EC public key fits none of ES256, RS256"):
        middleware(algorithms=("ES256", "RS256"), value=None, public_key_file=ec_file)


def test_jwks_url_without_an_http_client_is_a_start_error() -> None:
    block = Jwt(algorithms=("RS256",), jwks_url=JWKS_URL)
    with pytest.raises(StartError, match='jwt "auth": jwks_url needs an outbound HTTP client'):
        JwtMiddleware.from_config("auth", block, clock=lambda: NOW)


def test_public_key_file_without_a_file_reader_is_a_start_error() -> None:
    """The key file is read by the shell's reader (Ring 0 opens no file): none, no key."""
    block = Jwt(algorithms=("RS256",), value=None, public_key_file="/keys/rs.pem")
    with pytest.raises(StartError, match='jwt "auth": public_key_file needs a file reader'):
        JwtMiddleware.from_config("auth", block, clock=lambda: NOW)


def test_the_key_file_is_read_through_the_given_reader_with_a_bound(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    asked: list[tuple[str, int]] = []

    def reader(path: str, limit: int) -> bytes:
        asked.append((path, limit))
        return pem

    block = Jwt(algorithms=("RS256",), value=None, public_key_file="/keys/rs.pem")
    mw = JwtMiddleware.from_config("auth", block, clock=lambda: NOW, read_file=reader)
    assert asked == [("/keys/rs.pem", MAX_KEY_FILE_BYTES + 1)]
    assert mw.verify(asymmetric_token(claims(), rsa_key, "RS256"))["sub"] == "alice"


def test_a_key_file_over_the_bound_is_a_start_error() -> None:
    def reader(path: str, limit: int) -> bytes:
        return b"x" * limit

    block = Jwt(algorithms=("RS256",), value=None, public_key_file="/keys/big.pem")
    with pytest.raises(StartError, match=r'public key file "/keys/big.pem" is larger than'):
        JwtMiddleware.from_config("auth", block, clock=lambda: NOW, read_file=reader)


def test_missing_secret_is_a_start_error() -> None:
    with pytest.raises(StartError, match='"value" is required when HS256 is allowed'):
        JwtMiddleware.from_config("auth", Jwt(), clock=lambda: NOW)


def test_constructor_rejects_negative_leeway() -> None:
    with pytest.raises(ValueError, match="leeway"):
        JwtMiddleware("auth", clock=lambda: NOW, secret=SECRET, leeway=-1)


# --------------------------------------------------------------------------- JWKS


def signed(
    body: dict[str, object],
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    algorithm: str,
    **head: object,
) -> bytes:
    """An RS/ES token whose header has ``alg`` and the ``head`` members (``kid``...)."""
    signing_input = segment({"alg": algorithm, **head}) + b"." + segment(body)
    if isinstance(key, rsa.RSAPrivateKey):
        signature = sign_rs(signing_input, key, algorithm)
    else:
        signature = sign_es(signing_input, key, algorithm)
    return signing_input + b"." + b64(signature)


def jwks_middleware(
    *replies: HttpReply | Exception,
    algorithms: tuple[str, ...] = ("RS256", "ES256"),
    **fields: object,
) -> JwtMiddleware:
    fields.setdefault("value", None)
    block = Jwt(algorithms=algorithms, jwks_url=JWKS_URL, **fields)  # type: ignore[arg-type]  # a few valid Jwt fields per test
    caller = FakeCaller(list(replies))
    return JwtMiddleware.from_config("auth", block, clock=lambda: NOW, http=caller)


def jwks_reply(*keys: object) -> HttpReply:
    return HttpReply(200, [(b"content-type", b"application/json")], document(*keys))


async def refresh(mw: JwtMiddleware, now: float = 0.0) -> str | None:
    [work] = mw.background()
    return await work.run(now)


async def rejects_at(mw: JwtMiddleware, token: bytes, reason: str, now: float) -> None:
    state = make_state([bearer(token)])
    state.now = now
    assert_invalid(await mw.request(state), reason)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


async def test_jwks_keys_verify_rs_and_es_tokens_by_kid(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    mw = jwks_middleware(jwks_reply(rsa_jwk(rsa_key, kid="r1"), ec_jwk(ec_key, kid="e1")))
    assert await refresh(mw) is None
    state = await passes(mw, signed(claims(), rsa_key, "RS256", kid="r1", typ="JWT"))
    assert state.headers[-1] == (b"x-jwt-subject", b"alice")
    await passes(mw, signed(claims(sub="bob"), ec_key, "ES256", kid="e1"))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await rejects(mw, signed(claims(), other, "RS256", kid="r1"), BAD_SIGNATURE)
    await rejects(mw, signed(claims(), ec_key, "ES256", kid="r1"), UNKNOWN_KEY)  # an RSA key
    await rejects(mw, signed(claims(exp=NOW - 100), rsa_key, "RS256", kid="r1"), EXPIRED)
    await rejects(mw, signed(claims(), rsa_key, "RS384", kid="r1"), ALGORITHM_NOT_ALLOWED)
    assert mw.jwks_errors == 0


async def test_before_the_first_fetch_every_jwks_token_is_unknown_key(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    mw = jwks_middleware(OutboundFailed("refused"), jwks_reply(rsa_jwk(rsa_key, kid="r1")))
    token = signed(claims(), rsa_key, "RS256", kid="r1")
    await rejects(mw, token, UNKNOWN_KEY)
    assert await refresh(mw) is not None  # refused: still no keys
    assert mw.jwks_errors == 1
    await rejects(mw, token, UNKNOWN_KEY)
    assert await refresh(mw, 600.0) is None
    await passes(mw, token)


async def test_an_unknown_kid_asks_for_a_refresh_at_most_once_a_minute(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    mw = jwks_middleware(jwks_reply(rsa_jwk(rsa_key, kid="r1")))
    await refresh(mw, 0.0)
    [work] = mw.background()
    assert work.next_run() == 600.0
    unknown = signed(claims(), rsa_key, "RS256", kid="r2")
    await rejects_at(mw, unknown, UNKNOWN_KEY, now=100.0)
    assert work.next_run() == 100.0  # answered at once; the refresh is brought forward
    await refresh(mw, 100.0)
    await rejects_at(mw, unknown, UNKNOWN_KEY, now=150.0)
    assert work.next_run() == 700.0  # 50 s after the last demand: no refresh
    await rejects_at(mw, unknown, UNKNOWN_KEY, now=160.0)
    assert work.next_run() == 160.0


async def test_other_failures_ask_for_no_refresh(rsa_key: rsa.RSAPrivateKey) -> None:
    mw = jwks_middleware(jwks_reply(rsa_jwk(rsa_key, kid="r1")))
    await refresh(mw, 0.0)
    [work] = mw.background()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await rejects_at(mw, signed(claims(), other, "RS256", kid="r1"), BAD_SIGNATURE, 100.0)
    await rejects_at(mw, b"not.a.token", MALFORMED, 100.0)
    await rejects_at(mw, hs_token(claims()), ALGORITHM_NOT_ALLOWED, 100.0)
    assert work.next_run() == 600.0


async def test_the_jwk_alg_and_curve_must_fit_the_token(rsa_key: rsa.RSAPrivateKey) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    mw = jwks_middleware(jwks_reply(rsa_jwk(rsa_key, kid="r", alg="RS512"), ec_jwk(p384, kid="e")))
    await refresh(mw)
    await rejects(mw, signed(claims(), rsa_key, "RS256", kid="r"), UNKNOWN_KEY)
    await rejects(mw, signed(claims(), p384, "ES256", kid="e"), UNKNOWN_KEY)


async def test_a_jwks_never_supplies_an_hmac_key(rsa_key: rsa.RSAPrivateKey) -> None:
    oct_secret = b"k" * 64
    keys = (
        {"kty": "oct", "kid": "hs", "k": base64.urlsafe_b64encode(oct_secret).decode()},
        rsa_jwk(rsa_key, kid="r1"),
    )
    mixed = jwks_middleware(jwks_reply(*keys), algorithms=("HS256", "RS256"), value=SECRET)
    await refresh(mixed)
    head: dict[str, object] = {"alg": "HS256", "kid": "hs"}
    await rejects(mixed, hs_token(claims(), secret=oct_secret.decode(), header=head), BAD_SIGNATURE)
    # The classic confusion: the published key as the HMAC secret, with the key's kid.
    published = json.dumps(rsa_jwk(rsa_key, kid="r1"))
    head = {"alg": "HS256", "kid": "r1"}
    await rejects(mixed, hs_token(claims(), secret=published, header=head), BAD_SIGNATURE)
    await passes(mixed, hs_token(claims(), header=head))  # HS uses "value"; kid is ignored
    await rejects(mixed, signed(claims(), rsa_key, "RS256", kid="hs"), UNKNOWN_KEY)
    rs_only = jwks_middleware(jwks_reply(*keys), algorithms=("RS256",))
    await refresh(rs_only)
    await rejects(rs_only, hs_token(claims(), secret=published, header=head), ALGORITHM_NOT_ALLOWED)


async def test_a_token_without_kid_uses_the_only_fitting_key(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    mw = jwks_middleware(jwks_reply(rsa_jwk(rsa_key, kid="r1"), ec_jwk(ec_key, kid="e1")))
    await refresh(mw)
    await passes(mw, signed(claims(), rsa_key, "RS256"))
    await passes(mw, signed(claims(), ec_key, "ES256"))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    two = jwks_middleware(jwks_reply(rsa_jwk(rsa_key, kid="r1"), rsa_jwk(other, kid="r2")))
    await refresh(two)
    await rejects(two, signed(claims(), rsa_key, "RS256"), UNKNOWN_KEY)
    await passes(two, signed(claims(), other, "RS256", kid="r2"))


async def test_a_failed_refresh_keeps_the_keys(rsa_key: rsa.RSAPrivateKey) -> None:
    mw = jwks_middleware(jwks_reply(rsa_jwk(rsa_key, kid="r1")), HttpReply(500, [], b"oops"))
    await refresh(mw, 0.0)
    warning = await refresh(mw, 600.0)
    assert warning is not None
    assert "fetch failed: status 500" in warning
    assert mw.jwks_errors == 1
    await passes(mw, signed(claims(), rsa_key, "RS256", kid="r1"))


def test_only_a_jwks_definition_has_background_work() -> None:
    assert middleware().background() == ()
    assert middleware().jwks is None
    assert middleware().jwks_errors == 0
    mw = jwks_middleware()
    assert mw.jwks is not None
    assert mw.background() == (mw.jwks,)
    assert mw.jwks.url is JWKS_URL


def test_compile_chains_hands_the_http_client_to_jwt() -> None:
    config = load_config_text(
        f"""
entrypoints "web" {{
  address = "127.0.0.1:0"
}}
routers "r" {{
  rule        = "PathPrefix(`/`)"
  service     = "svc"
  middlewares = ["auth"]
}}
services "svc" {{
  load_balancer {{
    servers = [{{ url = "http://10.9.0.1:80" }}]
  }}
}}
middlewares "auth" {{
  type       = "jwt"
  algorithms = ["RS256"]
  jwks_url   = "{JWKS_URL.text}"
}}
"""
    )
    caller = FakeCaller([OutboundFailed("down")])
    instances, _ = compile_chains(config, deps=MiddlewareDeps(clock=lambda: NOW, http=caller))
    auth = instances["auth"]
    assert isinstance(auth, JwtMiddleware)
    assert auth.jwks is not None
    assert auth.jwks.url == JWKS_URL
    with pytest.raises(StartError, match="jwks_url needs an outbound HTTP client"):
        compile_chains(config, deps=MiddlewareDeps(clock=lambda: NOW))
