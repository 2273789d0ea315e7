"""The RFC 2136 DNS-01 provider (acme/dns01.py, SPEC §12.2) against a real Knot DNS server
(tests/support/knot.py) that accepts updates signed with its TSIG key; what the zone holds is
checked by querying knotd directly."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from dns.rdtypes.ANY.TXT import TXT

from a3s_gateway.acme.dns01 import (
    DnsProviderError,
    Rfc2136Provider,
    build_dns_provider,
    wait_for_propagation,
)
from a3s_gateway.config.schema_entrypoints import AcmeDns
from a3s_gateway.config.values import Address
from tests.support.knot import KnotServer, running_knot, silent_udp_nameserver


@pytest.fixture(scope="module")
def knot() -> Iterator[KnotServer]:
    with running_knot(zone="example.test.", records=["www 60 A 10.0.0.1"]) as server:
        yield server


def provider_for(knot: KnotServer, **overrides: str | None) -> Rfc2136Provider:
    settings: dict[str, str | None] = {
        "tsig_key_name": knot.tsig_key_name,
        "tsig_secret": knot.tsig_secret,
        "tsig_algorithm": knot.tsig_algorithm,
        **overrides,
    }
    return Rfc2136Provider(nameserver=knot.address, timeout=5.0, **settings)


def txt_at(knot: KnotServer, name: str) -> tuple[str, list[str]]:
    """(rcode, sorted TXT strings) that knotd answers for ``name``."""
    query = dns.message.make_query(name, dns.rdatatype.TXT)
    answer = dns.query.udp(query, "127.0.0.1", port=knot.port, timeout=5)
    values = [
        b"".join(rdata.strings).decode()
        for rrset in answer.answer
        for rdata in rrset
        if isinstance(rdata, TXT)
    ]
    return dns.rcode.to_text(answer.rcode()), sorted(values)


def test_present_adds_and_cleanup_deletes_exactly_that_value(knot: KnotServer) -> None:
    provider = provider_for(knot)
    name = "_acme-challenge.www.example.test."
    provider.present("www.example.test", "value-one")
    assert txt_at(knot, name) == ("NOERROR", ["value-one"])
    provider.present("*.www.example.test", "value-two")  # a wildcard: the same record name
    assert txt_at(knot, name) == ("NOERROR", ["value-one", "value-two"])
    provider.cleanup("www.example.test", "value-one")
    assert txt_at(knot, name) == ("NOERROR", ["value-two"])
    provider.cleanup("*.www.example.test", "value-two")
    assert txt_at(knot, name) == ("NXDOMAIN", [])
    provider.cleanup("www.example.test", "value-two")  # already gone: knot accepts, no error


@pytest.mark.parametrize(
    ("domain", "zone"),
    [
        ("example.test", "example.test."),  # the apex
        ("deep.below.www.example.test.", "example.test."),  # names that do not exist
        ("WWW.Example.Test", "example.test."),
    ],
)
def test_the_zone_is_found_by_soa_lookups_at_the_nameserver(
    knot: KnotServer, domain: str, zone: str
) -> None:
    provider = provider_for(knot)
    name = dns.name.from_text(f"_acme-challenge.{domain.lower().rstrip('.')}")
    assert provider.find_zone(name) == dns.name.from_text(zone)
    provider.present(domain, "zone-check")
    assert txt_at(knot, name.to_text()) == ("NOERROR", ["zone-check"])
    provider.cleanup(domain, "zone-check")
    assert txt_at(knot, name.to_text())[1] == []


def test_a_name_in_no_zone_of_the_nameserver_is_an_error(knot: KnotServer) -> None:
    provider = provider_for(knot)
    with pytest.raises(DnsProviderError) as caught:
        provider.present("other.invalid", "x")
    assert str(caught.value) == (
        "rfc2136 present: no zone at the nameserver holds _acme-challenge.other.invalid. "
        f"(nameserver {knot.address})"
    )


def test_an_unsigned_update_is_refused(knot: KnotServer) -> None:
    provider = provider_for(knot, tsig_key_name=None, tsig_secret=None)
    with pytest.raises(
        DnsProviderError, match=r"^rfc2136 present: update refused: (REFUSED|NOTAUTH)"
    ):
        provider.present("www.example.test", "unsigned")
    assert txt_at(knot, "_acme-challenge.www.example.test.")[1] == []


def test_a_wrong_secret_is_an_error_that_does_not_show_it(knot: KnotServer) -> None:
    wrong = base64.b64encode(b"w" * 32).decode()
    provider = provider_for(knot, tsig_secret=wrong)
    with pytest.raises(DnsProviderError, match=r"^rfc2136 present: update") as caught:
        provider.present("www.example.test", "wrong-key")
    assert wrong not in str(caught.value)
    assert wrong not in repr(provider)
    assert txt_at(knot, "_acme-challenge.www.example.test.")[1] == []


def test_repr_and_logs_do_not_show_the_secret(
    knot: KnotServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="a3s_gateway.acme")
    provider = provider_for(knot)
    provider.present("www.example.test", "logged")
    provider.cleanup("www.example.test", "logged")
    assert repr(provider) == (
        f"Rfc2136Provider(nameserver='{knot.address}', tsig_key_name='{knot.tsig_key_name}')"
    )
    assert [r.name for r in caplog.records] == ["a3s_gateway.acme", "a3s_gateway.acme"]
    assert all(knot.tsig_secret not in r.getMessage() for r in caplog.records)


def test_a_nameserver_that_never_answers_times_out() -> None:
    with silent_udp_nameserver() as address:
        provider = Rfc2136Provider(nameserver=address, timeout=0.2)
        with pytest.raises(DnsProviderError) as caught:
            provider.present("www.example.test", "x")
    assert str(caught.value) == (
        f"rfc2136 present: SOA query timed out after 0.2s (nameserver {address})"
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tsig_secret": "not base64!"}, "rfc2136: tsig_secret is not valid base64"),
        ({"tsig_algorithm": "hmac-md5"}, "rfc2136: unknown tsig_algorithm 'hmac-md5'"),
        ({"tsig_secret": None}, "rfc2136: tsig_key_name needs tsig_secret"),
    ],
)
def test_bad_tsig_settings_are_errors_without_the_secret(
    settings: dict[str, str | None], message: str
) -> None:
    arguments: dict[str, str | None] = {
        "tsig_key_name": "key",
        "tsig_secret": "c2VjcmV0LXNlY3JldA==",
        "tsig_algorithm": "hmac-sha256",
        **settings,
    }
    with pytest.raises(DnsProviderError) as caught:
        Rfc2136Provider(nameserver="127.0.0.1:53", timeout=1.0, **arguments)
    assert str(caught.value) == message
    assert "c2VjcmV0" not in str(caught.value)


def test_built_from_acme_dns_and_visible_to_the_propagation_check(knot: KnotServer) -> None:
    settings = AcmeDns(
        provider="rfc2136",
        nameserver=Address(knot.address),
        tsig_key_name=knot.tsig_key_name,
        tsig_secret=knot.tsig_secret,
    )
    provider = build_dns_provider(settings, timeout=5.0)
    assert isinstance(provider, Rfc2136Provider)
    assert provider.name == "rfc2136"

    def no_sleep(seconds: float) -> None:
        raise AssertionError("the record is there: no wait expected")

    provider.present("www.example.test", "propagated")
    try:
        assert wait_for_propagation(
            "www.example.test", "propagated", resolver=knot.address, max_wait=10, sleep=no_sleep
        )
    finally:
        provider.cleanup("www.example.test", "propagated")
