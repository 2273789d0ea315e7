"""JWK Sets for ``jwt`` (SPEC §8.4 "JWKS"): RFC 7517 parsing, key choice, and ``JwksKeys``'s
fetch and refresh schedule with a fake ``HttpCaller``.

Parsing: RSA and EC keys of every curve kept; ``oct``/OKP keys and keys for another use ignored;
an invalid key skipped on its own; an invalid document refused. Choice: ``kid``, key type and
curve, the JWK's ``alg``, and the single-key rule for tokens without ``kid``. Fetching: the URL,
5 s and 1 MiB bounds; every failure keeps the previous keys, counts in ``errors`` and says why;
the schedule (every 10 min, demands at most once a minute, wake-ups).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from a3s_gateway.config.urls import HttpUrl
from a3s_gateway.middleware.jwks import (
    DEMAND_INTERVAL,
    FETCH_TIMEOUT,
    MAX_JWKS_BYTES,
    REFRESH_INTERVAL,
    JwksKeys,
    key_fits,
    parse_jwk_set,
)
from a3s_gateway.middleware.outbound import (
    HttpReply,
    OutboundFailed,
    OutboundTimeout,
    ReplyTooLarge,
)
from a3s_gateway.protocols.headers import Headers

URL = HttpUrl("https://issuer.example/.well-known/jwks.json")
CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(number: int) -> str:
    return b64(number.to_bytes((number.bit_length() + 7) // 8, "big"))


def rsa_jwk(key: rsa.RSAPrivateKey, **extra: object) -> dict[str, object]:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "n": uint(numbers.n), "e": uint(numbers.e), **extra}


def ec_jwk(key: ec.EllipticCurvePrivateKey, **extra: object) -> dict[str, object]:
    numbers = key.public_key().public_numbers()
    size = (key.curve.key_size + 7) // 8
    crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
    return {
        "kty": "EC",
        "crv": crv,
        "x": b64(numbers.x.to_bytes(size, "big")),
        "y": b64(numbers.y.to_bytes(size, "big")),
        **extra,
    }


def document(*keys: object) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


# --------------------------------------------------------------------------- parsing


def test_rsa_and_ec_keys_of_every_curve_are_kept(rsa_key: rsa.RSAPrivateKey) -> None:
    ec_keys = {name: ec.generate_private_key(curve) for name, curve in CURVES.items()}
    data = document(
        rsa_jwk(rsa_key, kid="r", alg="RS256", use="sig"),
        *(ec_jwk(key, kid=name) for name, key in ec_keys.items()),
    )
    parsed = parse_jwk_set(data)
    assert parsed.skipped == ()
    assert [(jwk.kid, jwk.alg) for jwk in parsed.keys] == [
        ("r", "RS256"),
        ("P-256", None),
        ("P-384", None),
        ("P-521", None),
    ]
    first = parsed.keys[0].key
    assert isinstance(first, rsa.RSAPublicKey)
    assert first.public_numbers() == rsa_key.public_key().public_numbers()
    for jwk, key in zip(parsed.keys[1:], ec_keys.values(), strict=True):
        assert isinstance(jwk.key, ec.EllipticCurvePublicKey)
        assert jwk.key.public_numbers() == key.public_key().public_numbers()


def test_keys_that_are_not_for_signatures_are_ignored(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    data = document(
        {"kty": "oct", "kid": "secret", "k": b64(b"s" * 32), "alg": "HS256"},
        {"kty": "OKP", "crv": "Ed25519", "x": b64(bytes(32)), "kid": "ed"},
        rsa_jwk(rsa_key, kid="enc", use="enc"),
        ec_jwk(ec_key, kid="wrap", key_ops=["wrapKey"]),
        ec_jwk(ec_key, kid="verify", key_ops=["verify"]),
        rsa_jwk(rsa_key, kid="sig", use="sig"),
    )
    parsed = parse_jwk_set(data)
    assert [jwk.kid for jwk in parsed.keys] == ["verify", "sig"]
    assert parsed.skipped == ()  # ignored, not invalid


def test_an_invalid_key_is_skipped_alone(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    good_ec = ec_jwk(ec_key)
    y = base64.urlsafe_b64decode(str(good_ec["y"]) + "==")
    off_curve = bytes([y[0] ^ 1]) + y[1:]
    bad: list[object] = [
        rsa_jwk(small, kid="small"),
        {"kty": "RSA", "kid": "no-n", "e": "AQAB"},
        {**rsa_jwk(rsa_key), "e": 65537},
        {**rsa_jwk(rsa_key), "n": "not base64!"},
        {**rsa_jwk(rsa_key), "e": "AA"},
        {**rsa_jwk(rsa_key), "e": "Ag"},  # an even exponent is no RSA key
        {**good_ec, "crv": "P-192"},
        {**good_ec, "x": b64(b"\x00" + base64.urlsafe_b64decode(str(good_ec["x"]) + "=="))},
        {**good_ec, "y": b64(off_curve)},
        {**good_ec, "kid": 7},
        {**good_ec, "alg": ["ES256"]},
        {**good_ec, "use": None},  # present but not a string
        {**good_ec, "key_ops": "verify"},
        {**good_ec, "key_ops": None},
        {"kid": "no-kty"},
        "not an object",
    ]
    data = document(*bad, rsa_jwk(rsa_key, kid="good"))
    duplicate = data.replace(b'"kid": "good"', b'"kid": "good", "kid": "evil"')
    parsed = parse_jwk_set(data)
    assert [jwk.kid for jwk in parsed.keys] == ["good"]
    assert len(parsed.skipped) == len(bad)
    assert parsed.skipped[0].startswith("keys[0]: an RSA modulus of 1024 bits")
    assert parse_jwk_set(duplicate).skipped[-1] == f"keys[{len(bad)}]: duplicate member names"


def test_padded_base64url_in_a_key_is_tolerated(rsa_key: rsa.RSAPrivateKey) -> None:
    jwk = rsa_jwk(rsa_key, kid="padded")
    jwk["e"] = "AQAB"  # 65537: no padding needed; pad n instead when its length allows
    n = str(jwk["n"])
    jwk["n"] = n + "=" * (-len(n) % 4)
    assert [key.kid for key in parse_jwk_set(document(jwk)).keys] == ["padded"]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        pytest.param(b"not json", "not JSON", id="not-json"),
        pytest.param(b'{"keys": [}', "not JSON", id="truncated"),
        pytest.param(b'\xff{"keys": []}', "not UTF-8", id="not-utf8"),
        pytest.param(b'[{"kty": "RSA"}]', "not a JSON object", id="array"),
        pytest.param(b'{"key": []}', 'no "keys" array', id="no-keys"),
        pytest.param(b'{"keys": {"kty": "RSA"}}', 'no "keys" array', id="keys-object"),
        pytest.param(b'{"keys": [], "keys": []}', "duplicate member names", id="duplicate"),
        pytest.param(b'{"keys": [], "x": NaN}', "not JSON", id="nan"),
        pytest.param(b'{"keys": [], "x": 1e999}', "not JSON", id="infinite"),
        pytest.param(b"[" * 100_000, "nested too deeply", id="deep"),
    ],
)
def test_an_invalid_document_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_jwk_set(data)


# --------------------------------------------------------------------------- choice


def test_key_fits_type_and_curve(rsa_key: rsa.RSAPrivateKey) -> None:
    public = rsa_key.public_key()
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    p521 = ec.generate_private_key(ec.SECP521R1()).public_key()
    assert key_fits(public, "RS256")
    assert key_fits(public, "RS512")
    assert not key_fits(public, "ES256")
    assert not key_fits(public, "HS256")
    assert key_fits(p256, "ES256")
    assert not key_fits(p256, "ES512")
    assert not key_fits(p256, "RS256")
    assert key_fits(p521, "ES512")


async def loaded(data: bytes) -> JwksKeys:
    keys = JwksKeys(URL, FakeCaller(replies=[HttpReply(200, [], data)]))
    assert await keys.run(0.0) is None
    return keys


async def test_select_by_kid_type_and_alg(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    keys = await loaded(
        document(
            rsa_jwk(rsa_key, kid="r", alg="RS384"),
            ec_jwk(ec_key, kid="e"),
            ec_jwk(ec_key, kid="shared", alg="ES256"),
            rsa_jwk(rsa_key, kid="shared"),
        )
    )
    rsa_public = keys.keys[0].key
    ec_public = keys.keys[1].key
    assert keys.select("r", "RS384") is rsa_public
    assert keys.select("r", "RS256") is None  # the JWK's alg must equal the token's
    assert keys.select("r", "ES256") is None  # an RSA key never verifies ES
    assert keys.select("e", "ES256") is ec_public
    assert keys.select("e", "ES384") is None  # another curve
    assert keys.select("e", "RS256") is None
    assert keys.select("shared", "ES256") is keys.keys[2].key
    assert keys.select("shared", "RS512") is keys.keys[3].key
    assert keys.select("missing", "RS384") is None


async def test_a_token_without_kid_uses_the_only_fitting_key(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    one_each = await loaded(document(rsa_jwk(rsa_key, kid="r"), ec_jwk(ec_key)))
    assert one_each.select(None, "RS256") is one_each.keys[0].key
    assert one_each.select(None, "ES256") is one_each.keys[1].key
    assert one_each.select(None, "ES384") is None
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    two_rsa = await loaded(document(rsa_jwk(rsa_key, kid="a"), rsa_jwk(other, kid="b")))
    assert two_rsa.select(None, "RS256") is None  # ambiguous: refused, not tried
    assert two_rsa.select("b", "RS256") is two_rsa.keys[1].key
    no_kid = await loaded(document(rsa_jwk(rsa_key)))
    assert no_kid.select("r", "RS256") is None  # a kid never matches a key without one


# --------------------------------------------------------------------------- fetching


@dataclass
class FakeCaller:
    """Answers call i with ``replies[i]`` (the last one again once they run out); an exception
    is raised instead. Records the calls."""

    replies: list[HttpReply | Exception]
    calls: list[tuple[HttpUrl, Headers, float, int]] = field(default_factory=list)

    async def get(
        self, url: HttpUrl, headers: Headers, *, within: float, max_body: int
    ) -> HttpReply:
        self.calls.append((url, list(headers), within, max_body))
        reply = self.replies[min(len(self.calls), len(self.replies)) - 1]
        if isinstance(reply, Exception):
            raise reply
        return reply


async def test_a_fetch_is_bounded_and_schedules_the_next(rsa_key: rsa.RSAPrivateKey) -> None:
    caller = FakeCaller([HttpReply(200, [], document(rsa_jwk(rsa_key, kid="r")))])
    keys = JwksKeys(URL, caller)
    assert keys.next_run() == float("-inf")  # due at once
    assert not keys.loaded
    assert keys.select("r", "RS256") is None
    assert await keys.run(100.0) is None
    [(url, headers, within, max_body)] = caller.calls
    assert url is URL
    assert (within, max_body) == (FETCH_TIMEOUT, MAX_JWKS_BYTES) == (5.0, 1024 * 1024)
    assert headers == [(b"accept", b"application/jwk-set+json, application/json")]
    assert keys.next_run() == 100.0 + REFRESH_INTERVAL == 700.0
    assert (keys.loaded, keys.errors) == (True, 0)
    assert keys.select("r", "RS256") is not None


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        pytest.param(OutboundTimeout(), "no complete reply within 5 s", id="timeout"),
        pytest.param(ReplyTooLarge(), "the reply is larger than 1048576 bytes", id="too-large"),
        pytest.param(OutboundFailed("connection refused"), "connection refused", id="refused"),
        pytest.param(HttpReply(503, [], b"{}"), "status 503", id="503"),
        pytest.param(
            HttpReply(302, [(b"location", b"https://elsewhere/")], b""),
            "status 302 (redirects are not followed)",
            id="redirect",
        ),
        pytest.param(HttpReply(200, [], b"<html>"), "not a JWK Set: not JSON", id="html"),
        pytest.param(HttpReply(200, [], b"{}"), 'not a JWK Set: no "keys" array', id="no-keys"),
    ],
)
async def test_a_failed_fetch_keeps_the_previous_keys(
    rsa_key: rsa.RSAPrivateKey, failure: HttpReply | Exception, reason: str
) -> None:
    good = HttpReply(200, [], document(rsa_jwk(rsa_key, kid="r")))
    keys = JwksKeys(URL, FakeCaller([failure, good, failure]))
    prefix = f"JWKS {URL.text}: fetch failed: {reason}"
    warning = await keys.run(0.0)
    assert warning is not None
    assert warning.startswith(prefix)
    assert warning.endswith('; no keys yet: tokens that need one are refused as "unknown key"')
    assert (keys.errors, keys.loaded, keys.next_run()) == (1, False, REFRESH_INTERVAL)
    assert await keys.run(600.0) is None
    assert keys.errors == 1
    warning = await keys.run(1200.0)
    assert warning is not None
    assert warning.startswith(prefix)
    assert warning.endswith("; keeping the 1 key fetched before")
    assert keys.errors == 2
    assert keys.select("r", "RS256") is not None
    assert keys.next_run() == 1200.0 + REFRESH_INTERVAL


async def test_skipped_keys_and_an_empty_set_are_reported(rsa_key: rsa.RSAPrivateKey) -> None:
    bad = [{"kty": "RSA", "kid": str(i)} for i in range(5)]
    keys = JwksKeys(
        URL,
        FakeCaller(
            [
                HttpReply(200, [], document(*bad, rsa_jwk(rsa_key, kid="r"))),
                HttpReply(200, [], document({"kty": "oct", "k": "c2VjcmV0"})),
            ]
        ),
    )
    warning = await keys.run(0.0)
    assert warning is not None
    assert warning.startswith(f'JWKS {URL.text}: skipped 5 invalid key(s): keys[0]: "n" is not')
    assert warning.endswith("(and 2 more)")
    assert [jwk.kid for jwk in keys.keys] == ["r"]
    # A good document is the issuer's word, even when it holds no key for us.
    assert await keys.run(600.0) == f"JWKS {URL.text}: the set has no RSA or EC signature key"
    assert keys.keys == ()
    assert keys.errors == 0


async def test_demand_brings_the_fetch_forward_once_a_minute(rsa_key: rsa.RSAPrivateKey) -> None:
    keys = JwksKeys(URL, FakeCaller([HttpReply(200, [], document(rsa_jwk(rsa_key)))]))
    woken: list[str] = []
    unwatch = keys.watch(lambda: woken.append("a"))
    keys.watch(lambda: woken.append("b"))
    keys.demand(5.0)  # the first fetch is due anyway: nothing to wake
    assert woken == []
    await keys.run(10.0)
    assert keys.next_run() == 610.0
    keys.demand(64.0)  # 59 s after the previous demand: refused
    assert keys.next_run() == 610.0
    keys.demand(65.0)
    assert keys.next_run() == 65.0
    assert woken == ["a", "b"]
    unwatch()
    await keys.run(65.0)
    keys.demand(65.0 + DEMAND_INTERVAL - 0.5)
    assert keys.next_run() == 665.0
    keys.demand(65.0 + DEMAND_INTERVAL)
    assert keys.next_run() == 125.0
    assert woken == ["a", "b", "b"]


async def test_a_demand_during_a_fetch_costs_nothing(rsa_key: rsa.RSAPrivateKey) -> None:
    keys: JwksKeys

    class Demanding(FakeCaller):
        async def get(
            self, url: HttpUrl, headers: Headers, *, within: float, max_body: int
        ) -> HttpReply:
            keys.demand(3.0)  # a request whose key is missing while the fetch runs
            return await super().get(url, headers, within=within, max_body=max_body)

    keys = JwksKeys(URL, Demanding([HttpReply(200, [], document(rsa_jwk(rsa_key)))]))
    await keys.run(0.0)
    keys.demand(4.0)  # still allowed: the demand during the fetch did not count
    assert keys.next_run() == 4.0


async def test_adopt_takes_the_keys_of_the_same_url_only(rsa_key: rsa.RSAPrivateKey) -> None:
    old = await loaded(document(rsa_jwk(rsa_key, kid="r")))
    same = JwksKeys(HttpUrl(URL.text), FakeCaller([OutboundFailed("down")]))
    same.adopt(old)
    assert same.loaded
    assert same.select("r", "RS256") is old.keys[0].key
    assert same.next_run() == float("-inf")  # still fetches at start
    other = JwksKeys(HttpUrl("https://other.example/jwks"), FakeCaller([OutboundFailed("x")]))
    other.adopt(old)
    assert not other.loaded
    assert other.keys == ()
