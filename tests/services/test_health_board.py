"""``HealthBoard`` and ``carry_active_health`` (SPEC §7.4 "Reload", "Multi-worker"): the pure
records of active health decided elsewhere — pushed verdicts kept per (service, URL), applied
to any generation's backends, a full table forgetting what it no longer names."""

from __future__ import annotations

from a3s_gateway.config.values import ServerUrl
from a3s_gateway.services import Backend
from a3s_gateway.services.health import HealthBoard, carry_active_health

A = "http://10.0.0.1:80"
B = "http://10.0.0.2:80"


def backends(*urls: str) -> list[Backend]:
    return [Backend(ServerUrl(url), index=index) for index, url in enumerate(urls)]


def test_the_board_sets_the_flags_it_names_and_reports_what_changed() -> None:
    board = HealthBoard()
    board.update([("svc", A, False), ("other", B, False)])
    a, b = backends(A, B)
    assert board.apply("svc", [a, b]) == [a]
    assert (a.active_healthy, b.active_healthy) == (False, True)
    assert board.apply("svc", [a, b]) == []  # nothing new
    board.update([("svc", A, True)])
    assert board.apply("svc", [a, b]) == [a]
    assert a.active_healthy
    assert board.healthy("other", B) is False


def test_a_full_update_forgets_the_verdicts_it_does_not_name() -> None:
    board = HealthBoard()
    board.update([("svc", A, False), ("svc", B, False)], full=True)
    board.update([("svc", B, True)], full=True)
    assert dict(board.states) == {("svc", B): True}
    assert board.healthy("svc", A) is None
    (a,) = backends(A)
    a.active_healthy = False
    assert board.apply("svc", [a]) == []  # not named: left as it is
    assert not a.active_healthy


def test_a_reload_carries_the_flags_by_url() -> None:
    before = backends(A, B)
    before[1].active_healthy = False
    after = backends(B, "http://10.0.0.3:80")
    carry_active_health(before, after)
    assert [backend.active_healthy for backend in after] == [False, True]
