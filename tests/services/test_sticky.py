"""Sticky sessions (SPEC §7.6): the signed cookie value, lookup and the ``Set-Cookie`` field.

Expected values are recomputed here from the SPEC's definition with hashlib/hmac/base64, not
taken from the module under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools

import pytest

from a3s_gateway.config.schema_services import Sticky
from a3s_gateway.config.values import DurationOrZero, ServerUrl
from a3s_gateway.services.backend import Backend
from a3s_gateway.services.sticky import (
    SameSite,
    StickyCodec,
    StickyPool,
    StickySettings,
    backend_id,
    derived_key,
)

SERVICE = "web"
SECRET = "0123456789abcdef-shared"
NOW = 1_700_000_000
URLS = ("http://10.0.0.1:8080", "http://10.0.0.2:8080", "10.0.0.3:80")


def settings(
    *,
    max_age: int = 3600,
    secure: bool | None = None,
    http_only: bool = True,
    same_site: SameSite = "lax",
    path: str = "/",
    domain: str | None = None,
    key: bytes = SECRET.encode(),
) -> StickySettings:
    return StickySettings(
        cookie="a3s_sticky",
        max_age=max_age,
        secure=secure,
        http_only=http_only,
        same_site=same_site,
        path=path,
        domain=domain,
        key=key,
        keyed_by_secret=True,
    )


def make_pool(
    urls: tuple[str, ...] = URLS, config: StickySettings | None = None
) -> tuple[StickyPool, list[Backend]]:
    backends = [Backend(ServerUrl(url), 1, i) for i, url in enumerate(urls)]
    return StickyPool(SERVICE, backends, config or settings()), backends


def expected_bid(service: str, url: str) -> str:
    return hashlib.sha256(f"{service}\n{url}".encode()).digest()[:8].hex()


def expected_value(key: bytes, service: str, url: str, exp: int) -> str:
    signed = f"1.{expected_bid(service, url)}.{exp}"
    mac = hmac.new(key, signed.encode(), hashlib.sha256).digest()[:16]
    return signed + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def cookie(value: str | bytes, name: str = "a3s_sticky") -> list[tuple[bytes, bytes]]:
    raw = value.encode() if isinstance(value, str) else value
    return [(b"cookie", name.encode() + b"=" + raw)]


# -- value format -----------------------------------------------------------------------------


def test_value_format_matches_the_spec_definition() -> None:
    pool, backends = make_pool()
    value = pool.cookie_value(backends[0], NOW)
    assert value == expected_value(SECRET.encode(), SERVICE, URLS[0], NOW + 3600)
    version, bid, exp, mac = value.split(".")
    assert (version, exp) == ("1", str(NOW + 3600))
    assert len(bid) == 16
    assert bid == bid.lower()
    assert len(mac) == 22
    assert "=" not in mac


def test_known_vector() -> None:
    # Pinned so an accidental change of the format (and so of every client's cookie) shows.
    assert backend_id("web", "http://10.0.0.1:8080") == expected_bid("web", "http://10.0.0.1:8080")
    codec = StickyCodec(b"k" * 16, 60)
    bid = "0011223344556677"
    signed = b"1.0011223344556677.160"
    mac = hmac.new(b"k" * 16, signed, hashlib.sha256).digest()[:16]
    assert codec.encode(bid, 100) == (
        "1.0011223344556677.160." + base64.urlsafe_b64encode(mac).decode()[:22]
    )


def test_zero_max_age_writes_exp_zero_and_never_expires() -> None:
    pool, backends = make_pool(config=settings(max_age=0))
    value = pool.cookie_value(backends[1], NOW)
    assert value == expected_value(SECRET.encode(), SERVICE, URLS[1], 0)
    assert pool.lookup(cookie(value), 10**12) is backends[1]


def test_backend_id_uses_the_url_as_written_and_the_service() -> None:
    pool, backends = make_pool()
    assert pool.settings == settings()
    assert pool.backend_id(backends[2]) == expected_bid(SERVICE, "10.0.0.3:80")
    other = StickyPool("api", backends, settings())
    assert other.backend_id(backends[0]) != pool.backend_id(backends[0])
    stranger = Backend(ServerUrl("http://10.9.9.9:1"))
    assert pool.backend_id(stranger) == expected_bid(SERVICE, "http://10.9.9.9:1")


# -- settings ---------------------------------------------------------------------------------


def test_from_config_with_secret() -> None:
    block = Sticky(
        cookie="sid",
        max_age=DurationOrZero("2m"),
        secure=True,
        http_only=False,
        same_site="strict",
        path="/app",
        domain="example.com",
        secret=SECRET,
    )
    compiled = StickySettings.from_config(block, SERVICE)
    assert compiled == StickySettings(
        cookie="sid",
        max_age=120,
        secure=True,
        http_only=False,
        same_site="strict",
        path="/app",
        domain="example.com",
        key=SECRET.encode(),
        keyed_by_secret=True,
    )
    assert SECRET not in repr(compiled)


def test_from_config_without_secret_derives_the_spec_key() -> None:
    compiled = StickySettings.from_config(Sticky(), SERVICE)
    assert compiled.key == hashlib.sha256(b"a3s-sticky\nweb").digest()
    assert compiled.key == derived_key(SERVICE)
    assert not compiled.keyed_by_secret
    assert (compiled.cookie, compiled.max_age, compiled.secure) == ("a3s_sticky", 3600, None)
    assert (compiled.http_only, compiled.same_site, compiled.path, compiled.domain) == (
        True,
        "lax",
        "/",
        None,
    )


@pytest.mark.parametrize(("text", "seconds"), [("0s", 0), ("500ms", 1), ("1h", 3600)])
def test_from_config_max_age_rounds_up_to_whole_seconds(text: str, seconds: int) -> None:
    block = Sticky(max_age=DurationOrZero(text))
    assert StickySettings.from_config(block, SERVICE).max_age == seconds


@pytest.mark.parametrize(
    ("path", "domain"),
    [("/a;b", None), ("/a\r\nx: y", None), ("/é", None), ("/", "a.com; Secure"), ("/", "a\x00")],
)
def test_attributes_that_would_break_the_field_are_refused(path: str, domain: str | None) -> None:
    with pytest.raises(ValueError, match="sticky"):
        settings(path=path, domain=domain)


def test_negative_max_age_is_refused() -> None:
    with pytest.raises(ValueError, match="max_age"):
        settings(max_age=-1)


# -- lookup -----------------------------------------------------------------------------------


def test_valid_cookie_names_its_backend() -> None:
    pool, backends = make_pool()
    for backend in backends:
        assert pool.lookup(cookie(pool.cookie_value(backend, NOW)), NOW + 1) is backend


def test_no_cookie_field_or_no_sticky_cookie() -> None:
    pool, _ = make_pool()
    assert pool.lookup([], NOW) is None
    assert pool.lookup([(b"host", b"a"), (b"cookie", b"other=1; x=2")], NOW) is None


def test_every_changed_byte_is_rejected() -> None:
    pool, backends = make_pool()
    value = pool.cookie_value(backends[0], NOW).encode()
    for i, replacement in itertools.product(range(len(value)), b"0aA_-.9fz"):
        if value[i] == replacement:
            continue
        tampered = value[:i] + bytes([replacement]) + value[i + 1 :]
        assert pool.lookup(cookie(tampered), NOW) is None, tampered


def test_truncated_extended_and_reformatted_values_are_rejected() -> None:
    pool, backends = make_pool()
    value = pool.cookie_value(backends[0], NOW)
    _, bid, exp, mac = value.split(".")
    for bad in [
        value[:-1],
        value + "A",
        value + "==",
        f"2.{bid}.{exp}.{mac}",
        f"1.{bid.upper()}.{exp}.{mac}",
        f"1.{bid}.0{exp}.{mac}",
        f"1.{bid}.+{exp}.{mac}",
        f"1.{bid}.{exp}",
        f"1.{bid}.{exp}.{mac}.x",
        f'"{value}"',
        "",
        "garbage",
    ]:
        assert pool.lookup(cookie(bad), NOW) is None, bad


def test_a_value_signed_with_another_key_is_rejected() -> None:
    pool, _ = make_pool()
    forged = expected_value(b"wrong key", SERVICE, URLS[0], NOW + 3600)
    assert pool.lookup(cookie(forged), NOW) is None


def test_no_secret_mode_accepts_values_anyone_can_compute() -> None:
    # The documented weakness that makes validation warn (SPEC §7.6 "Key").
    pool, backends = make_pool(config=settings(key=derived_key(SERVICE)))
    forged = expected_value(hashlib.sha256(b"a3s-sticky\nweb").digest(), SERVICE, URLS[1], 0)
    assert pool.lookup(cookie(forged), NOW) is backends[1]


def test_expiry_is_exclusive() -> None:
    pool, backends = make_pool(config=settings(max_age=60))
    value = pool.cookie_value(backends[0], NOW)
    assert pool.lookup(cookie(value), NOW + 59) is backends[0]
    assert pool.lookup(cookie(value), NOW + 60) is None
    assert pool.lookup(cookie(value), NOW + 10_000) is None


def test_unknown_bid_is_rejected_even_with_a_valid_mac() -> None:
    pool, _ = make_pool()
    foreign = expected_value(SECRET.encode(), SERVICE, "http://10.0.0.99:8080", NOW + 60)
    assert pool.lookup(cookie(foreign), NOW) is None
    # The same URL in another service has another bid.
    other_service = expected_value(SECRET.encode(), "api", URLS[0], NOW + 60)
    assert pool.lookup(cookie(other_service), NOW) is None


@pytest.mark.parametrize("state", ["drained", "unhealthy", "ejected"])
def test_unavailable_backend_is_rejected(state: str) -> None:
    pool, backends = make_pool()
    value = pool.cookie_value(backends[1], NOW)
    if state == "drained":
        backends[1].weight = 0
    elif state == "unhealthy":
        backends[1].active_healthy = False
    else:
        backends[1].passive_ejected = True
    assert pool.lookup(cookie(value), NOW) is None
    # Availability is read at lookup time: the backend coming back restores the affinity.
    backends[1].weight, backends[1].active_healthy, backends[1].passive_ejected = 1, True, False
    assert pool.lookup(cookie(value), NOW) is backends[1]


@pytest.mark.parametrize("state", ["unhealthy", "ejected", "both"])
def test_panic_honours_an_unhealthy_weight_positive_backend(state: str) -> None:
    # SPEC §7.1: in panic, health is ignored for the cookie as for the balancer.
    pool, backends = make_pool()
    value = pool.cookie_value(backends[1], NOW)
    backends[1].active_healthy = state == "ejected"
    backends[1].passive_ejected = state != "unhealthy"
    assert pool.lookup(cookie(value), NOW) is None
    assert pool.lookup(cookie(value), NOW, panic=True) is backends[1]


def test_panic_still_rejects_a_drained_backend() -> None:
    pool, backends = make_pool()
    value = pool.cookie_value(backends[0], NOW)
    backends[0].weight = 0
    assert pool.lookup(cookie(value), NOW, panic=True) is None


def test_pairs_are_split_and_trimmed_across_fields() -> None:
    pool, backends = make_pool()
    value = pool.cookie_value(backends[2], NOW).encode()
    headers = [
        (b"cookie", b"a=1; b=2"),
        (b"accept", b"a3s_sticky=not-a-cookie-field"),
        (b"cookie", b"flag;c=3 ;\t a3s_sticky = " + value + b" \t; d=4"),
    ]
    assert pool.lookup(headers, NOW) is backends[2]


def test_similar_names_do_not_match() -> None:
    pool, backends = make_pool()
    value = pool.cookie_value(backends[0], NOW).encode()
    line = b"xa3s_sticky=" + value + b"; a3s_sticky2=" + value + b"; A3S_STICKY=" + value
    assert pool.lookup([(b"cookie", line)], NOW) is None


def test_the_first_cookie_with_the_name_wins() -> None:
    pool, backends = make_pool()
    first = pool.cookie_value(backends[0], NOW).encode()
    second = pool.cookie_value(backends[1], NOW).encode()
    same_line = [(b"cookie", b"a3s_sticky=" + first + b"; a3s_sticky=" + second)]
    assert pool.lookup(same_line, NOW) is backends[0]
    two_lines = [(b"cookie", b"a3s_sticky=" + second), (b"cookie", b"a3s_sticky=" + first)]
    assert pool.lookup(two_lines, NOW) is backends[1]
    # An invalid first cookie is not skipped in favour of a later valid one.
    invalid_first = [(b"cookie", b"a3s_sticky=bogus"), (b"cookie", b"a3s_sticky=" + first)]
    assert pool.lookup(invalid_first, NOW) is None


def test_garbage_never_raises() -> None:
    pool, _ = make_pool()
    for line in [
        b"a3s_sticky=\xff\xfe\x00",
        b"a3s_sticky=" + b"1." * 100_000,
        b"a3s_sticky=1.\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff.1.x",
        b"a3s_sticky=1.0011223344556677.\xd9\xa3.AAAAAAAAAAAAAAAAAAAAAA",
        b";" * 100_000 + b"a3s_sticky",
        b"=a3s_sticky",
    ]:
        assert pool.lookup([(b"cookie", line)], NOW) is None


def test_duplicate_urls_the_first_backend_wins() -> None:
    pool, backends = make_pool((URLS[0], URLS[1], URLS[0]))
    assert pool.backend_id(backends[0]) == pool.backend_id(backends[2])
    value = pool.cookie_value(backends[2], NOW)
    assert pool.lookup(cookie(value), NOW) is backends[0]


# -- Set-Cookie -------------------------------------------------------------------------------


def test_set_cookie_default_attributes() -> None:
    pool, backends = make_pool()
    name, field = pool.set_cookie(backends[0], NOW, tls=False)
    value = expected_value(SECRET.encode(), SERVICE, URLS[0], NOW + 3600)
    assert name == b"set-cookie"
    assert field == f"a3s_sticky={value}; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax".encode()


def _expected_attributes(
    *,
    max_age: int,
    secure: bool,
    http_only: bool,
    same_site: str,
    path: str,
    domain: str | None,
) -> str:
    text = f"; Path={path}"
    text += f"; Max-Age={max_age}" if max_age else ""
    text += f"; Domain={domain}" if domain is not None else ""
    text += "; Secure" if secure else ""
    text += "; HttpOnly" if http_only else ""
    return text + "; SameSite=" + {"lax": "Lax", "strict": "Strict", "none": "None"}[same_site]


SAME_SITES: tuple[SameSite, ...] = ("lax", "strict", "none")


@pytest.mark.parametrize(
    ("max_age", "secure", "http_only", "same_site", "domain", "tls"),
    list(
        itertools.product(
            (0, 90), (None, True, False), (True, False), SAME_SITES, (None, ".a.com"), (False, True)
        )
    ),
)
def test_set_cookie_attributes_for_every_combination(
    max_age: int,
    secure: bool | None,
    http_only: bool,
    same_site: SameSite,
    domain: str | None,
    tls: bool,
) -> None:
    config = settings(
        max_age=max_age,
        secure=secure,
        http_only=http_only,
        same_site=same_site,
        path="/app",
        domain=domain,
    )
    pool, backends = make_pool(config=config)
    _, field = pool.set_cookie(backends[1], NOW, tls=tls)
    # Secure: as configured, else by the request's transport; SameSite=None always forces it.
    want_secure = same_site == "none" or (tls if secure is None else secure)
    exp = NOW + max_age if max_age else 0
    value = expected_value(SECRET.encode(), SERVICE, URLS[1], exp)
    attributes = _expected_attributes(
        max_age=max_age,
        secure=want_secure,
        http_only=http_only,
        same_site=same_site,
        path="/app",
        domain=domain,
    )
    assert field == f"a3s_sticky={value}{attributes}".encode()


def test_set_cookie_round_trips_through_lookup() -> None:
    pool, backends = make_pool()
    _, field = pool.set_cookie(backends[2], NOW, tls=True)
    value = field.split(b";")[0].split(b"=", 1)[1]
    assert pool.lookup(cookie(value), NOW + 1) is backends[2]
