"""Schema conversion reports every problem in the user's words (SPEC §2.3, §3.4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from a3s_gateway.config.convert import convert_config
from a3s_gateway.config.problems import Path, Position, SourceMap
from a3s_gateway.config.schema_middlewares import RateLimit

if TYPE_CHECKING:
    from a3s_gateway.config.schema import Config


def convert(
    data: dict[str, object], whole: frozenset[Path] = frozenset(), sources: SourceMap | None = None
) -> tuple[Config | None, list[tuple[str, str]], set[tuple[str, str]]]:
    result = convert_config(data, sources or SourceMap(), default_file="t.hcl", whole=whole)
    return result.config, [(p.path, p.message) for p in result.problems], result.broken


WEB = {"web": {"address": "127.0.0.1:8080"}}


def test_valid_data_converts_without_problems() -> None:
    config, problems, broken = convert({"entrypoints": dict(WEB)})
    assert problems == []
    assert broken == set()
    assert config is not None
    assert config.entrypoints["web"].address.port == 8080


def test_unknown_field_suggests_the_nearest_name() -> None:
    _, problems, _ = convert({"entrypoints": {"web": {"address": ":80", "prtocol": "tcp"}}})
    assert problems == [
        ('entrypoints["web"].prtocol', 'unknown field "prtocol" (did you mean "protocol"?)')
    ]


def test_unknown_block_without_a_near_name_gets_no_suggestion() -> None:
    _, problems, _ = convert({"entrypoints": dict(WEB), "frobnicate": {}})
    assert problems == [("frobnicate", 'unknown block "frobnicate"')]


def test_field_of_another_middleware_type_names_both_types() -> None:
    data: dict[str, object] = {
        "middlewares": {"m": {"type": "rate-limit", "rate": 5, "keys": ["k"]}}
    }
    config, problems, _ = convert(data)
    assert len(problems) == 1
    path, message = problems[0]
    assert path == 'middlewares["m"].keys'
    assert 'does not apply to middleware type "rate-limit"' in message
    assert '"api-key"' in message
    assert "rate, burst" in message
    assert config is not None
    assert isinstance(config.middlewares["m"], RateLimit)


def test_unknown_middleware_type_lists_the_types_and_marks_the_block_broken() -> None:
    _, problems, broken = convert({"middlewares": {"m": {"type": "rate-limiter", "rate": 1}}})
    assert problems[0][0] == 'middlewares["m"].type'
    assert problems[0][1].startswith('unknown middleware type "rate-limiter"')
    assert "tcp-filter" in problems[0][1]
    assert broken == {("middlewares", "m")}


def test_every_problem_is_reported_not_just_the_first() -> None:
    data: dict[str, object] = {
        "entrypoints": {"web": {"address": "nohost:1"}, "b": {"address": ":1", "via": "yes"}},
        "routers": {"a": {"rule": "Path(`/`)", "service": "s", "priority": 1.5}},
        "services": {"s": {"load_balancer": {"strategy": "rr"}}},
        "shutdown_timeout_secs": 0,
    }
    _, problems, _ = convert(data)
    assert [path for path, _ in problems] == [
        'entrypoints["web"].address',
        'entrypoints["b"].via',
        'routers["a"].priority',
        'services["s"].load_balancer.strategy',
        "shutdown_timeout_secs",
    ]


def test_messages_say_what_is_accepted() -> None:
    data: dict[str, object] = {
        "services": {"s": {"load_balancer": {"strategy": "rr", "connect_attempts": 11}}},
        "shutdown_timeout_secs": 0,
    }
    _, problems, _ = convert(data)
    assert dict(problems) == {
        'services["s"].load_balancer.strategy': 'invalid value "rr": expected one of '
        "round-robin, weighted, least-connections, random, p2c, consistent-hash",
        'services["s"].load_balancer.connect_attempts': "must be at most 10",
        "shutdown_timeout_secs": "must be at least 1",
    }


def test_missing_required_field_removes_the_block_once() -> None:
    _, problems, broken = convert({"routers": {"r": {"service": "s"}}})
    assert problems == [('routers["r"]', 'missing required field "rule"')]
    assert broken == {("routers", "r")}


def test_a_removed_required_value_is_not_reported_twice() -> None:
    _, problems, broken = convert({"routers": {"r": {"rule": 5, "service": "s"}}})
    assert problems == [('routers["r"].rule', "expected a string, got an integer")]
    assert broken == {("routers", "r")}


def test_list_indices_are_the_users_after_earlier_removals() -> None:
    servers = [{"url": "ftp://a"}, {"url": "http://b"}, {"url": "gopher://c"}]
    _, problems, _ = convert({"services": {"s": {"load_balancer": {"servers": servers}}}})
    assert [path for path, _ in problems] == [
        'services["s"].load_balancer.servers[0].url',
        'services["s"].load_balancer.servers[2].url',
    ]


def test_whole_interpolations_convert_strictly_to_the_field_type() -> None:
    data: dict[str, object] = {
        "entrypoints": {"web": {"address": ":80", "max_connections": "25", "via": "false"}},
        "shutdown_timeout_secs": "12",
    }
    whole = frozenset(
        {
            ("entrypoints", "web", "max_connections"),
            ("entrypoints", "web", "via"),
            ("shutdown_timeout_secs",),
        }
    )
    config, problems, _ = convert(data, whole)
    assert problems == []
    assert config is not None
    assert config.shutdown_timeout_secs == 12
    assert config.entrypoints["web"].max_connections == 25
    assert config.entrypoints["web"].via is False


def test_a_quoted_literal_number_is_still_a_type_error() -> None:
    _, problems, _ = convert({"shutdown_timeout_secs": "12"})
    assert problems == [("shutdown_timeout_secs", "expected an integer, got a string")]


def test_interpolated_value_that_is_not_a_number_is_an_error() -> None:
    _, problems, _ = convert(
        {"shutdown_timeout_secs": "soon"}, frozenset({("shutdown_timeout_secs",)})
    )
    assert len(problems) == 1
    assert problems[0][0] == "shutdown_timeout_secs"


def test_docker_provider_is_a_named_non_goal() -> None:
    _, problems, _ = convert({"providers": {"docker": {}}})
    assert problems == [
        (
            "providers.docker",
            "the docker provider is not supported (not a goal of a3s_gateway, SPEC §1.3)",
        )
    ]


def test_problems_carry_the_line_of_the_innermost_known_element() -> None:
    sources = SourceMap()
    sources.add(("routers", "r"), Position("g.hcl", 3, 1))
    sources.add(("routers", "r", "priority"), Position("g.hcl", 5, 3))
    result = convert_config(
        {"routers": {"r": {"rule": "x", "service": "s", "priority": "high", "extra": 1}}},
        sources,
        default_file="g.hcl",
        whole=frozenset(),
    )
    lines = {p.path: (p.file, p.line) for p in result.problems}
    assert lines == {
        'routers["r"].extra': ("g.hcl", 3),
        'routers["r"].priority': ("g.hcl", 5),
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1 s", 'duration "1 s" is invalid'),
        ("10", 'duration "10" is invalid'),
        ("-1s", 'duration "-1s" is invalid'),
    ],
)
def test_bad_durations_are_reported_at_their_field(value: str, message: str) -> None:
    data: dict[str, object] = {"services": {"s": {"load_balancer": {"connect_timeout": value}}}}
    _, problems, _ = convert(data)
    assert len(problems) == 1
    assert problems[0][0] == 'services["s"].load_balancer.connect_timeout'
    assert problems[0][1].startswith(message)


def test_conversion_never_raises_on_hostile_shapes() -> None:
    hostile: list[dict[str, object]] = [
        {"entrypoints": []},
        {"entrypoints": {"web": []}},
        {"routers": {"r": None}},
        {"middlewares": {"m": {"type": None}}},
        {"middlewares": {"m": {}}},
        {"services": {"s": {"revisions": [1, "x", {"name": 5}]}}},
    ]
    for data in hostile:
        result = convert_config(data, SourceMap(), default_file="t", whole=frozenset())
        assert result.problems


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (
            {"middlewares": {"m": {"type": "headers", "request_headers": {"bad name": "v"}}}},
            'middlewares["m"].request_headers["bad name"]',
            "must be a header name (RFC 9110 token)",
        ),
        (
            {"middlewares": {"m": {"type": "basic-auth", "username": "a:b", "password": "p"}}},
            'middlewares["m"].username',
            "must be a value without ':'",
        ),
        (
            {"management": {"path_prefix": "/api/"}},
            "management.path_prefix",
            "must be a path starting with '/' and not ending with '/'",
        ),
        (
            {"services": {"s": {"revisions": [{"name": "V1"}]}}},
            'services["s"].revisions[0].name',
            "must be a DNS label: lower-case letters, digits and '-', starting with a letter, "
            "not ending with '-', at most 63 characters",
        ),
        (
            {"observability": {"request_id_header": "X-Id\n"}},
            "observability.request_id_header",
            "must be a header name (RFC 9110 token) or empty",
        ),
    ],
)
def test_pattern_errors_are_described_in_words(
    data: dict[str, object], path: str, message: str
) -> None:
    _, problems, _ = convert(data)
    assert (path, message) in problems
