"""The pool key and pool limits (SPEC §5.7 "Pool key", §3.10 service fields)."""

from __future__ import annotations

import dataclasses

import pytest

from a3s_gateway.config.urls import ServerUrl
from a3s_gateway.upstream.peer import Peer, PoolSettings


@pytest.mark.parametrize(
    ("url", "peer"),
    [
        ("http://10.0.0.1:8080", Peer("http", "10.0.0.1", 8080)),
        ("http://backend", Peer("http", "backend", 80)),
        ("10.0.0.1:9000", Peer("http", "10.0.0.1", 9000)),
        ("ws://backend", Peer("http", "backend", 80)),
        ("h2c://backend", Peer("h2c", "backend", 80)),
        ("tcp://db:5432", Peer("tcp", "db", 5432)),
        ("https://api.test", Peer("https", "api.test", 443, tls=True, server_name="api.test")),
        ("wss://api.test:8443", Peer("https", "api.test", 8443, tls=True, server_name="api.test")),
        ("tls://db:5433", Peer("tls", "db", 5433, tls=True, server_name="db")),
    ],
)
def test_peer_from_url(url: str, peer: Peer) -> None:
    assert Peer.from_url(ServerUrl(url)) == peer


def test_path_does_not_split_the_pool() -> None:
    a = Peer.from_url(ServerUrl("http://backend:80/a"))
    b = Peer.from_url(ServerUrl("http://backend/b"))
    assert a == b
    assert len({a, b}) == 1


def test_udp_has_no_pool() -> None:
    with pytest.raises(ValueError, match="udp"):
        Peer.from_url(ServerUrl("udp://dns:53"))


def test_peer_is_frozen_and_printable() -> None:
    peer = Peer("http", "::1", 8080)
    assert str(peer) == "http://[::1]:8080"
    assert str(Peer("https", "a.test", 443, tls=True)) == "https://a.test:443"
    with pytest.raises(dataclasses.FrozenInstanceError):
        peer.port = 1  # type: ignore[misc]  # the point of the test: assignment must fail
    assert Peer("http", "a", 1) != Peer("http", "a", 1, tls=True)


def test_pool_settings_defaults_and_validation() -> None:
    assert PoolSettings() == PoolSettings(100, 60.0, 1024)
    PoolSettings(max_idle_per_backend=0, idle_conn_timeout=0.0, max_conns_per_backend=1)
    for bad in (
        {"max_idle_per_backend": -1},
        {"idle_conn_timeout": -0.5},
        {"idle_conn_timeout": float("nan")},
        {"max_conns_per_backend": 0},
    ):
        with pytest.raises(ValueError, match="must be"):
            PoolSettings(**bad)
