"""What every DNS-01 provider shares (acme/dns01.py, SPEC §12.2): record names, building a
provider from an ``acme_dns`` block, reprs without secrets, and the propagation wait's edges
(no answer, a bad resolver address). The providers' exchanges are tested against real or fake
peers in the other ``test_dns01_*`` modules."""

from __future__ import annotations

import logging
import time

import pytest

from a3s_gateway.acme.dns01 import (
    CHALLTESTSRV_URL,
    ChallTestSrvProvider,
    CloudflareProvider,
    DnsChallengeProvider,
    DnsProviderError,
    Rfc2136Provider,
    Route53Provider,
    build_dns_provider,
    challenge_name,
    wait_for_propagation,
)
from a3s_gateway.config.schema_entrypoints import AcmeDns
from a3s_gateway.config.values import Address, HttpUrl
from tests.support.knot import silent_udp_nameserver

SECRET = "c2VjcmV0LXRoYXQtbXVzdC1ub3Qtc2hvdw=="


@pytest.mark.parametrize(
    ("domain", "name"),
    [
        ("example.com", "_acme-challenge.example.com"),
        ("WWW.Example.COM.", "_acme-challenge.www.example.com"),
        ("*.example.com", "_acme-challenge.example.com"),
        (" a.b.example.com ", "_acme-challenge.a.b.example.com"),
    ],
)
def test_challenge_name(domain: str, name: str) -> None:
    assert challenge_name(domain) == name


def test_every_provider_class_is_a_dns_challenge_provider() -> None:
    providers: list[DnsChallengeProvider] = [
        CloudflareProvider(api_token=SECRET, zone_id="z"),
        Route53Provider(api_token=f"AKID:{SECRET}", zone_id="z"),
        Rfc2136Provider(nameserver="127.0.0.1:53"),
        ChallTestSrvProvider(),
    ]
    assert [p.name for p in providers] == ["cloudflare", "route53", "rfc2136", "challtestsrv"]


def test_build_each_provider_without_showing_secrets() -> None:
    built = [
        build_dns_provider(AcmeDns(provider="cloudflare", api_token=SECRET, zone_id="zone-1")),
        build_dns_provider(AcmeDns(provider="route53", api_token=f"AKID:{SECRET}", zone_id="Z1")),
        build_dns_provider(
            AcmeDns(
                provider="rfc2136",
                nameserver=Address("[::1]:5353"),
                tsig_key_name="update-key",
                tsig_secret=SECRET,
                tsig_algorithm="hmac-sha512",
            )
        ),
        build_dns_provider(AcmeDns(provider="challtestsrv")),
        build_dns_provider(
            AcmeDns(provider="challtestsrv", management_url=HttpUrl("http://10.0.0.9:9000/"))
        ),
    ]
    assert [repr(p) for p in built] == [
        "CloudflareProvider(zone_id='zone-1')",
        "Route53Provider(zone_id='Z1')",
        "Rfc2136Provider(nameserver='[::1]:5353', tsig_key_name='update-key')",
        f"ChallTestSrvProvider(management_url='{CHALLTESTSRV_URL}')",
        "ChallTestSrvProvider(management_url='http://10.0.0.9:9000')",
    ]
    rfc2136 = built[2]
    assert isinstance(rfc2136, Rfc2136Provider)
    assert (rfc2136.host, rfc2136.port) == ("::1", 5353)
    for provider in built:
        assert SECRET not in repr(provider)
        assert SECRET not in str(vars(provider).get("_http", ""))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (AcmeDns(provider="cloudflare", zone_id="z"), 'cloudflare: acme_dns field "api_token"'),
        (AcmeDns(provider="cloudflare", api_token=SECRET), 'cloudflare: acme_dns field "zone_id"'),
        (
            AcmeDns(provider="route53", api_token="", zone_id="z"),
            'route53: acme_dns field "api_token"',
        ),
        (AcmeDns(provider="rfc2136"), 'rfc2136: acme_dns field "nameserver" is required'),
    ],
)
def test_missing_fields_are_errors(settings: AcmeDns, message: str) -> None:
    with pytest.raises(DnsProviderError, match=message) as caught:
        build_dns_provider(settings)
    assert SECRET not in str(caught.value)


def test_an_unknown_provider_is_an_error() -> None:
    settings = AcmeDns(provider="nope")  # type: ignore[arg-type]  # what validation would reject
    with pytest.raises(DnsProviderError, match="unknown dns provider 'nope'"):
        build_dns_provider(settings)


def test_propagation_against_a_silent_resolver_gives_up_after_max_wait() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    started = time.monotonic()
    with silent_udp_nameserver() as address:
        visible = wait_for_propagation(
            "example.com",
            "v",
            resolver=address,
            max_wait=0.5,
            interval=0.5,
            sleep=sleep,
            clock=lambda: now[0],
        )
    assert visible is False
    assert sleeps == [0.5]
    assert time.monotonic() - started < 3  # two queries, each bounded by the interval (0.5 s)


def test_propagation_with_a_bad_resolver_address_is_false_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="a3s_gateway.acme")

    def no_sleep(seconds: float) -> None:
        raise AssertionError("nothing to wait for")

    assert not wait_for_propagation(
        "example.com", "v", resolver="not-an-address", max_wait=10, sleep=no_sleep
    )
    assert [r.getMessage() for r in caplog.records] == [
        "dns-01: cannot check propagation of _acme-challenge.example.com.: "
        "address 'not-an-address' is not ip:port"
    ]
