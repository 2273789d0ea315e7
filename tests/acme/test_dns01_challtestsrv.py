"""The challtestsrv DNS-01 provider and the propagation wait (acme/dns01.py, SPEC §12.2, §12.6)
against a real ``pebble-challtestsrv`` (tests/support/challtestsrv.py): records set through its
management API are read back from its DNS server with dnspython."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from a3s_gateway.acme.dns01 import (
    ChallTestSrvProvider,
    DnsProviderError,
    build_dns_provider,
    wait_for_propagation,
)
from a3s_gateway.config.schema_entrypoints import AcmeDns
from a3s_gateway.config.values import HttpUrl
from tests.support.challtestsrv import ChallTestSrv, running_challtestsrv, txt_values


@pytest.fixture(scope="module")
def challtestsrv() -> Iterator[ChallTestSrv]:
    with running_challtestsrv() as server:
        yield server


class FakeTime:
    """A clock that moves only when ``sleep`` is called; the sleeps are recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_present_then_cleanup_through_the_management_api(challtestsrv: ChallTestSrv) -> None:
    provider = ChallTestSrvProvider(management_url=challtestsrv.management_url, timeout=5)
    provider.present("App.Example.com", "value-1")
    assert txt_values(challtestsrv, "_acme-challenge.app.example.com.") == ["value-1"]
    provider.cleanup("app.example.com", "value-1")
    assert txt_values(challtestsrv, "_acme-challenge.app.example.com.") == []
    provider.close()


def test_cleanup_of_one_value_keeps_the_others(challtestsrv: ChallTestSrv) -> None:
    provider = ChallTestSrvProvider(management_url=challtestsrv.management_url, timeout=5)
    name = "_acme-challenge.both.example.com."
    provider.present("both.example.com", "apex")
    provider.present("*.both.example.com", "wildcard")  # the same record name
    assert sorted(txt_values(challtestsrv, name)) == ["apex", "wildcard"]
    provider.cleanup("both.example.com", "apex")
    assert txt_values(challtestsrv, name) == ["wildcard"]
    provider.cleanup("*.both.example.com", "wildcard")
    assert txt_values(challtestsrv, name) == []
    provider.close()


def test_propagation_is_seen_at_once_when_the_record_is_there(challtestsrv: ChallTestSrv) -> None:
    provider = build_dns_provider(
        AcmeDns(provider="challtestsrv", management_url=HttpUrl(challtestsrv.management_url)),
        timeout=5,
    )
    assert isinstance(provider, ChallTestSrvProvider)
    fake = FakeTime()
    provider.present("seen.example.com", "visible")
    try:
        assert wait_for_propagation(
            "seen.example.com",
            "visible",
            resolver=challtestsrv.dns_address,
            max_wait=60,
            sleep=fake.sleep,
            clock=fake.clock,
        )
    finally:
        provider.cleanup("seen.example.com", "visible")
        provider.close()
    assert fake.sleeps == []


def test_propagation_polls_every_interval_until_max_wait(challtestsrv: ChallTestSrv) -> None:
    provider = ChallTestSrvProvider(management_url=challtestsrv.management_url, timeout=5)
    provider.present("late.example.com", "some-other-value")  # the name exists, not our value
    fake = FakeTime()
    try:
        visible = wait_for_propagation(
            "late.example.com",
            "expected",
            resolver=challtestsrv.dns_address,
            max_wait=5,
            interval=2,
            sleep=fake.sleep,
            clock=fake.clock,
        )
    finally:
        provider.cleanup("late.example.com", "some-other-value")
        provider.close()
    assert visible is False
    assert fake.sleeps == [2, 2, 1]
    assert fake.now == 1005


def test_propagation_sees_a_value_that_appears_while_waiting(challtestsrv: ChallTestSrv) -> None:
    provider = ChallTestSrvProvider(management_url=challtestsrv.management_url, timeout=5)
    fake = FakeTime()

    def sleep_then_publish(seconds: float) -> None:
        fake.sleep(seconds)
        if len(fake.sleeps) == 3:
            provider.present("slow.example.com", "arrives")

    try:
        assert wait_for_propagation(
            "slow.example.com",
            "arrives",
            resolver=challtestsrv.dns_address,
            max_wait=60,
            sleep=sleep_then_publish,
            clock=fake.clock,
        )
    finally:
        provider.cleanup("slow.example.com", "arrives")
        provider.close()
    assert fake.sleeps == [2.0, 2.0, 2.0]


def test_management_api_errors_are_provider_errors(challtestsrv: ChallTestSrv) -> None:
    provider = ChallTestSrvProvider(management_url=challtestsrv.management_url + "/nope", timeout=5)
    with pytest.raises(DnsProviderError) as caught:
        provider.present("x.example.com", "v")
    assert str(caught.value) == "challtestsrv present: HTTP 404: 404 page not found"
    provider.close()
