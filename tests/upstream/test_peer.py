"""The pool key and pool limits (SPEC §5.7 "Pool key", §3.10 service fields)."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3s_gateway.config.urls import ServerUrl
from a3s_gateway.upstream.peer import Peer, PoolSettings, TlsIdentity, UpstreamTlsSettings


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


def test_upstream_tls_settings_apply_to_tls_backends_only() -> None:
    identity = TlsIdentity(ca_file="/ca.pem", cert_file="/c.pem", key_file="/k.pem")
    named = UpstreamTlsSettings(server_name="api.internal", identity=identity)
    assert Peer.from_url(ServerUrl("https://10.0.0.7:8443"), named) == Peer(
        "https", "10.0.0.7", 8443, tls=True, server_name="api.internal", identity=identity
    )
    # No server_name: each backend's URL host is sent and verified.
    unnamed = UpstreamTlsSettings(identity=identity)
    assert Peer.from_url(ServerUrl("https://api.test"), unnamed).server_name == "api.test"
    # Plaintext backends of the same service ignore the block.
    assert Peer.from_url(ServerUrl("http://10.0.0.7"), named) == Peer("http", "10.0.0.7", 80)


def test_tls_identity_splits_the_pool() -> None:
    """SPEC §5.7: the pool key includes the server name, CA, client certificate and the
    verify flag; equal settings share connections."""
    url = ServerUrl("https://10.0.0.7:8443")
    base = UpstreamTlsSettings(server_name="a.test")
    variants = [
        base,
        UpstreamTlsSettings(server_name="b.test"),
        UpstreamTlsSettings(server_name="a.test", identity=TlsIdentity(ca_file="/ca.pem")),
        UpstreamTlsSettings(
            server_name="a.test", identity=TlsIdentity(cert_file="/c.pem", key_file="/k.pem")
        ),
        UpstreamTlsSettings(server_name="a.test", identity=TlsIdentity(verify=False)),
    ]
    peers = [Peer.from_url(url, settings) for settings in variants]
    assert len(set(peers)) == len(variants)
    again = Peer.from_url(url, UpstreamTlsSettings(server_name="a.test"))
    assert again == peers[0]
    assert hash(again) == hash(peers[0])
    assert {peers[0]: 1}[again] == 1


def test_a_peer_survives_pickling_with_a_fresh_hash() -> None:
    peer = Peer("https", "a.test", 443, tls=True, server_name="b.test", identity=TlsIdentity("/x"))
    copy = pickle.loads(pickle.dumps(peer))
    assert copy == peer
    assert hash(copy) == hash(peer)
    moved = dataclasses.replace(peer, port=8443)
    assert moved != peer
    assert moved == Peer(
        "https", "a.test", 8443, tls=True, server_name="b.test", identity=TlsIdentity("/x")
    )
    assert hash(moved) == hash(
        Peer("https", "a.test", 8443, tls=True, server_name="b.test", identity=TlsIdentity("/x"))
    )


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


_IDENTITIES = st.builds(
    TlsIdentity,
    ca_file=st.sampled_from(["", "/ca.pem"]),
    cert_file=st.sampled_from(["", "/c.pem"]),
    key_file=st.sampled_from(["", "/k.pem"]),
    verify=st.booleans(),
)
_PEERS = st.builds(
    Peer,
    scheme=st.sampled_from(["http", "https"]),
    host=st.sampled_from(["a.test", "10.0.0.1"]),
    port=st.sampled_from([443, 8443]),
    tls=st.booleans(),
    server_name=st.sampled_from(["", "a.test", "b.test"]),
    identity=_IDENTITIES,
)


@given(_PEERS, _PEERS)
def test_peers_are_equal_exactly_when_every_key_field_is(a: Peer, b: Peer) -> None:
    def key(peer: Peer) -> tuple[object, ...]:
        return (peer.scheme, peer.host, peer.port, peer.tls, peer.server_name, peer.identity)

    assert (a == b) == (key(a) == key(b))
    if a == b:
        assert hash(a) == hash(b)
    assert len({a, b}) == (1 if a == b else 2)
