"""The SNI map's ``first`` certificates: ACME's claim their names before the configured ones
(routing/sni.py, SPEC §12.5), while index 0 stays the default."""

from __future__ import annotations

from a3s_gateway.routing.sni import SniMap

NAMES = [["default.example"], ["shop.example", "*.api.example"], ["shop.example", "*.api.example"]]


def test_without_first_the_earlier_certificate_wins_a_name() -> None:
    sni = SniMap.build(NAMES)
    assert sni.choose("shop.example") == 1
    assert sni.choose("v1.api.example") == 1
    assert sni.choose("other.example") == 0
    assert sni.choose(None) == 0


def test_a_first_certificate_claims_its_names_and_the_default_stays() -> None:
    sni = SniMap.build(NAMES, first=[2])
    assert sni.choose("shop.example") == 2
    assert sni.choose("v1.api.example") == 2
    assert sni.choose("default.example") == 0
    assert sni.choose("other.example") == 0
    assert sni.choose(None) == 0


def test_indexes_out_of_range_are_ignored() -> None:
    assert SniMap.build(NAMES, first=[7, -1]) == SniMap.build(NAMES)
