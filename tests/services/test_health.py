"""The pure side of active health checks (SPEC §3.10 ``health_check``, §7.1, §7.4): the
``expected_status`` parser, compiling a ``health_check`` block and the threshold machine."""

from __future__ import annotations

import pytest

from a3s_gateway.config.schema_services import HealthCheck
from a3s_gateway.config.values import Duration, ServerUrl
from a3s_gateway.services.backend import Backend
from a3s_gateway.services.health import (
    ActiveHealth,
    CheckKind,
    CheckSettings,
    StatusSet,
    kind_for_servers,
    parse_expected_status,
)

# -- expected_status ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("200-299", ((200, 299),)),
        ("200", ((200, 200),)),
        ("200,204", ((200, 200), (204, 204))),
        ("200-299,301", ((200, 299), (301, 301))),
        (" 204 , 200 - 202 ", ((200, 202), (204, 204))),
        ("200-250,240-260,261", ((200, 261),)),
        ("100-599", ((100, 599),)),
        ("301,200,200", ((200, 200), (301, 301))),
    ],
)
def test_parses_codes_and_ranges_into_merged_ranges(
    text: str, ranges: tuple[tuple[int, int], ...]
) -> None:
    assert parse_expected_status(text).ranges == ranges


def test_membership() -> None:
    statuses = parse_expected_status("200-299,301")
    assert 200 in statuses
    assert 299 in statuses
    assert 301 in statuses
    assert 300 not in statuses
    assert 199 not in statuses
    assert 503 not in statuses


def test_canonical_text_reads_back() -> None:
    statuses = parse_expected_status(" 301, 200-299 ,302")
    assert str(statuses) == "200-299,301-302"
    assert parse_expected_status(str(statuses)) == statuses


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("", "an empty item"),
        ("200,", "an empty item"),
        ("abc", 'item "abc" is not a code or range'),
        ("2000", 'item "2000" is not a code or range'),
        ("20", 'item "20" is not a code or range'),
        ("200-", 'item "200-" is not a code or range'),
        ("200;204", 'item "200;204" is not a code or range'),
        ("600", 'item "600" is outside 100-599'),
        ("099-200", 'item "099-200" is outside 100-599'),
        ("299-200", 'range "299-200" is reversed'),
    ],
)
def test_bad_expected_status_is_a_clear_error(text: str, detail: str) -> None:
    with pytest.raises(ValueError, match="expected_status") as caught:
        parse_expected_status(text)
    message = str(caught.value)
    assert detail in message
    assert "200,204,300-399" in message


def test_status_set_is_a_value() -> None:
    assert parse_expected_status("200") == StatusSet(((200, 200),))
    assert hash(parse_expected_status("200-201")) == hash(parse_expected_status("200,201"))


# -- settings -----------------------------------------------------------------------------------


def test_defaults_follow_the_spec_table() -> None:
    settings = CheckSettings.from_config(HealthCheck(path="/health"), default_kind="tcp")
    assert settings == CheckSettings(
        kind="http",
        path="/health",
        method="GET",
        interval=10.0,
        timeout=5.0,
        healthy_threshold=1,
        unhealthy_threshold=3,
        expected=StatusSet(((200, 299),)),
        headers=(),
        hostname=None,
        port=None,
    )


def test_every_field_is_compiled() -> None:
    block = HealthCheck(
        type="http",
        path="/ready?deep=1",
        method="HEAD",
        interval=Duration("2s"),
        timeout=Duration("500ms"),
        unhealthy_threshold=5,
        healthy_threshold=2,
        expected_status="200,204",
        headers={"X-Probe": "yes", "Authorization": "Bearer t"},
        hostname="svc.internal",
        port=9000,
    )
    settings = CheckSettings.from_config(block, default_kind="http")
    assert settings.kind == "http"
    assert (settings.path, settings.method) == ("/ready?deep=1", "HEAD")
    assert (settings.interval, settings.timeout) == (2.0, 0.5)
    assert (settings.healthy_threshold, settings.unhealthy_threshold) == (2, 5)
    assert settings.expected == StatusSet(((200, 200), (204, 204)))
    assert settings.headers == ((b"x-probe", b"yes"), (b"authorization", b"Bearer t"))
    assert (settings.hostname, settings.port) == ("svc.internal", 9000)


@pytest.mark.parametrize(
    ("block", "default_kind", "kind"),
    [
        (HealthCheck(), "tcp", "tcp"),
        (HealthCheck(path="/h"), "tcp", "http"),
        (HealthCheck(path="/h"), "http", "http"),
        (HealthCheck(type="tcp"), "http", "tcp"),
        (HealthCheck(type="http", path="/h"), "tcp", "http"),
    ],
)
def test_type_defaults(block: HealthCheck, default_kind: CheckKind, kind: str) -> None:
    settings = CheckSettings.from_config(block, default_kind=default_kind)
    assert settings.kind == kind
    if kind == "tcp":
        assert settings.path == ""


def test_http_without_path_is_rejected() -> None:
    with pytest.raises(ValueError, match='"path" is required'):
        CheckSettings.from_config(HealthCheck(), default_kind="http")
    with pytest.raises(ValueError, match='"path" is required'):
        CheckSettings.from_config(HealthCheck(type="http"), default_kind="tcp")


def test_bad_expected_status_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected_status"):
        CheckSettings.from_config(
            HealthCheck(path="/h", expected_status="2xx"), default_kind="http"
        )


def test_host_header_is_the_hostname_unless_hostname_is_set() -> None:
    block = HealthCheck(path="/h", headers={"Host": "a.test", "Connection": "keep-alive"})
    settings = CheckSettings.from_config(block, default_kind="http")
    assert settings.hostname == "a.test"
    assert settings.headers == ()  # host became the hostname; connection is the prober's
    block = HealthCheck(path="/h", hostname="b.test", headers={"host": "a.test"})
    assert CheckSettings.from_config(block, default_kind="http").hostname == "b.test"


def test_kind_for_servers_mirrors_the_validator() -> None:
    assert kind_for_servers([]) == "http"
    assert kind_for_servers([ServerUrl("tcp://10.0.0.1:5432")]) == "tcp"
    assert kind_for_servers([ServerUrl("10.0.0.1:5432")]) == "tcp"  # bare host:port
    assert kind_for_servers([ServerUrl("http://a:1"), ServerUrl("tcp://b:2")]) == "http"
    assert kind_for_servers([ServerUrl("wss://a")]) == "http"


@pytest.mark.parametrize(
    "changes",
    [
        {"path": "health"},
        {"interval": 0.0},
        {"timeout": -1.0},
        {"healthy_threshold": 0},
        {"unhealthy_threshold": 0},
        {"port": 0},
        {"port": 65536},
    ],
)
def test_direct_construction_checks_invariants(changes: dict[str, object]) -> None:
    fields: dict[str, object] = {"kind": "http", "path": "/h", **changes}
    with pytest.raises(ValueError, match="health check"):
        CheckSettings(**fields)  # type: ignore[arg-type]  # deliberately loose test input


# -- the threshold machine ---------------------------------------------------------------------


def make_backend(*, healthy: bool = True) -> Backend:
    return Backend(ServerUrl("http://10.0.0.1:8080"), active_healthy=healthy)


def test_unhealthy_after_exactly_the_threshold_of_failures() -> None:
    backend = make_backend()
    state = ActiveHealth(backend, healthy_threshold=2, unhealthy_threshold=3)
    assert state.record(False) is None
    assert state.record(False) is None
    assert (backend.active_healthy, backend.available) == (True, True)
    assert state.record(False) is False
    assert (backend.active_healthy, backend.available) == (False, False)
    assert state.record(False) is None  # already unhealthy: no second transition


def test_healthy_after_exactly_the_threshold_of_successes() -> None:
    backend = make_backend(healthy=False)
    state = ActiveHealth(backend, healthy_threshold=2, unhealthy_threshold=3)
    assert not state.healthy
    assert state.record(True) is None
    assert state.record(True) is True
    assert backend.active_healthy
    assert state.record(True) is None


def test_opposite_results_reset_the_streak() -> None:
    backend = make_backend()
    state = ActiveHealth(backend, healthy_threshold=2, unhealthy_threshold=2)
    results = [state.record(r) for r in (False, True, False, True, False)]
    assert results == [None, None, None, None, None]
    assert backend.active_healthy
    assert state.streak == (0, 1)
    assert state.record(False) is False
    assert [state.record(r) for r in (True, False, True)] == [None, None, None]
    assert state.streak == (1, 0)
    assert state.record(True) is True


def test_state_is_the_backend_flag() -> None:
    """A restarted machine (SPEC §7.4 reload: "keeping the current state") carries it on."""
    backend = make_backend()
    ActiveHealth(backend, 1, 1).record(False)
    assert not backend.active_healthy
    again = ActiveHealth(backend, 1, 1)
    assert not again.healthy
    assert again.record(True) is True


def test_thresholds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="thresholds"):
        ActiveHealth(make_backend(), 0, 1)
    with pytest.raises(ValueError, match="thresholds"):
        ActiveHealth(make_backend(), 1, 0)


def test_repr_shows_state_and_streaks() -> None:
    state = ActiveHealth(make_backend(), 1, 3)
    state.record(False)
    assert repr(state) == ("<ActiveHealth http://10.0.0.1:8080 healthy successes=0/1 failures=1/3>")
