"""Backends and leases: the availability predicate (SPEC §7.1) and in-flight accounting (§7.3)."""

from __future__ import annotations

import pytest

from a3s_gateway.config.values import ServerUrl
from a3s_gateway.services import Backend, Lease


def make_backend(weight: int = 1) -> Backend:
    return Backend(ServerUrl("http://10.0.0.1:8080"), weight, 3)


def test_fields_and_defaults() -> None:
    backend = make_backend(2)
    assert backend.url.text == "http://10.0.0.1:8080"
    assert (backend.weight, backend.index, backend.in_flight) == (2, 3, 0)
    assert backend.active_healthy
    assert not backend.passive_ejected
    assert backend.available


def test_scaled_backends_can_start_unhealthy() -> None:
    backend = Backend(ServerUrl("10.0.0.1:80"), active_healthy=False)
    assert not backend.available


def test_negative_weight_is_rejected() -> None:
    with pytest.raises(ValueError, match="weight"):
        make_backend(-1)


@pytest.mark.parametrize(
    ("weight", "healthy", "ejected", "available"),
    [
        (1, True, False, True),
        (0, True, False, False),
        (1, False, False, False),
        (1, True, True, False),
        (5, False, True, False),
    ],
)
def test_available_predicate(weight: int, healthy: bool, ejected: bool, available: bool) -> None:
    backend = make_backend(weight)
    backend.active_healthy = healthy
    backend.passive_ejected = ejected
    assert backend.available is available


def test_identity_not_value() -> None:
    one, two = make_backend(), make_backend()
    assert one != two
    assert len({one, two}) == 2


def test_lease_counts_and_releases_once() -> None:
    backend = make_backend()
    lease = backend.lease()
    assert isinstance(lease, Lease)
    assert lease.backend is backend
    assert backend.in_flight == 1
    lease.release()
    assert backend.in_flight == 0
    assert lease.released
    lease.release()
    assert backend.in_flight == 0


def test_new_lease_is_held() -> None:
    assert not make_backend().lease().released


def test_leases_overlap() -> None:
    backend = make_backend()
    first, second = backend.lease(), backend.lease()
    assert backend.in_flight == 2
    second.release()
    first.release()
    first.release()
    assert backend.in_flight == 0


def test_context_manager_releases_on_exit() -> None:
    backend = make_backend()
    with backend.lease() as lease:
        assert backend.in_flight == 1
        assert lease.backend is backend
    assert backend.in_flight == 0
    assert lease.released


def test_context_manager_releases_on_exception() -> None:
    backend = make_backend()
    with pytest.raises(KeyError), backend.lease():
        raise KeyError("boom")
    assert backend.in_flight == 0


def test_context_manager_after_explicit_release() -> None:
    backend = make_backend()
    with backend.lease() as lease:
        lease.release()
        assert backend.in_flight == 0
    assert backend.in_flight == 0


def test_repr_shows_state_but_is_not_identity() -> None:
    backend = make_backend()
    assert "available" in repr(backend)
    assert "http://10.0.0.1:8080" in repr(backend)
    backend.passive_ejected = True
    assert "unavailable" in repr(backend)
    lease = backend.lease()
    assert "held" in repr(lease)
    lease.release()
    assert "released" in repr(lease)
