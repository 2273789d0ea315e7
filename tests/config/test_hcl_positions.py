"""HCL duplicate detection and source positions (SPEC §3.2).

Pins the problems for duplicate labels, attributes, object keys and singular blocks; and, on the
README's example config, that it normalises as documented, that every data path has a position
and where selected paths point.
"""

from __future__ import annotations

import pytest

from a3s_gateway.config.problems import Path, make_problem
from tests.support.hcl import README_CONFIG, messages, ok, parse

# --------------------------------------------------------------------------- duplicates


def test_duplicate_label_names_both_locations() -> None:
    text = 'routers "api" {\n  rule = "a"\n}\nrouters "web" {}\nrouters "api" {\n  rule = "b"\n}\n'
    result = parse(text)
    assert result.data == {"routers": {"api": {"rule": "a"}, "web": {}}}
    (problem,) = result.problems
    assert problem.format() == (
        'gateway.hcl:5:1: error: routers["api"]: routers "api" is defined twice '
        "(also at gateway.hcl:1)"
    )


def test_duplicate_nested_label() -> None:
    text = 'services "x" {\n  websocket_mux {\n    channels "c" {}\n    channels "c" {}\n  }\n}'
    assert messages(text) == [
        (
            4,
            'services["x"].websocket_mux.channels["c"]',
            'channels "c" is defined twice (also at gateway.hcl:3)',
        )
    ]


def test_duplicate_attribute() -> None:
    result = parse('routers "a" {\n  service = "x"\n  service = "y"\n}')
    assert result.ok
    assert [(p.line, p.column, p.path, p.message) for p in result.problems] == [
        (3, 3, 'routers["a"].service', 'attribute "service" is set twice (also at line 2)')
    ]


def test_duplicate_object_key() -> None:
    assert messages('x = {\n  a = 1\n  "a" = 2\n}') == [
        (3, "x.a", 'key "a" is set twice (also at line 2)')
    ]


def test_repeated_singular_block() -> None:
    result = parse('entrypoints "w" {\n  tls { a = "1" }\n  tls { a = "2" }\n}')
    assert result.data == {"entrypoints": {"w": {"tls": {"a": "1"}}}}
    assert [(p.line, p.path, p.message) for p in result.problems] == [
        (3, 'entrypoints["w"].tls', 'block "tls" may appear only once')
    ]


@pytest.mark.parametrize(("text", "ok_"), [("tls = {}\ntls {}", False), ("tls {}\ntls = {}", True)])
def test_block_and_attribute_with_one_name(text: str, ok_: bool) -> None:
    result = parse(text)
    assert result.ok is ok_
    assert [(p.line, p.message) for p in result.problems] == [
        (2, '"tls" is defined both as a block and as an attribute (also at line 1)')
    ]


# ------------------------------------------------------------------------------ positions


def data_paths(value: object, path: Path = ()) -> list[Path]:
    """Every path into normalised data (each attribute, block, list element and object key)."""
    found: list[Path] = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += data_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += data_paths(item, (*path, index))
    return found


def test_readme_config_normalises() -> None:
    data = ok(README_CONFIG)
    assert sorted(data) == ["entrypoints", "middlewares", "providers", "routers", "services"]
    service = data["services"]
    assert isinstance(service, dict)
    api = service["api-service"]
    assert api["load_balancer"]["servers"] == [
        {"url": "http://127.0.0.1:8001"},
        {"url": "http://127.0.0.1:8002"},
    ]
    assert api["revisions"][1] == {
        "name": "v2",
        "traffic_percent": 10,
        "strategy": "round-robin",
        "servers": [{"url": "http://127.0.0.1:8003"}],
    }
    assert api["scaling"]["target_utilization"] == 0.7
    assert api["rollout"]["from"] == "v1"
    assert data["middlewares"] == {
        "auth-jwt": {"type": "jwt", "value": "${JWT_SECRET}"},
        "rate-limit": {"type": "rate-limit", "rate": 100, "burst": 50},
    }
    assert data["providers"] == {
        "file": {"watch": True, "directory": "/etc/gateway/conf.d/"},
        "discovery": {
            "poll_interval_secs": 30,
            "seeds": [{"url": "http://10.0.0.5:8080"}, {"url": "http://10.0.0.6:8080"}],
        },
    }


def test_readme_config_every_data_path_has_a_position() -> None:
    result = parse(README_CONFIG)
    paths = data_paths(result.data)
    assert len(paths) == len(result.sources)
    assert [path for path in paths if result.sources.get(path) is None] == []


@pytest.mark.parametrize(
    ("path", "line", "column"),
    [
        (("entrypoints", "web"), 2, 1),
        (("entrypoints", "websecure", "tls"), 7, 1),
        (("entrypoints", "websecure", "tls", "key_file"), 9, 1),
        (("entrypoints", "tcp-db", "tcp_allowed_ips", 0), 16, 20),
        (("routers", "api", "middlewares", 1), 23, 28),
        (("services", "api-service", "load_balancer", "servers", 1), 31, 1),
        (("services", "api-service", "load_balancer", "servers", 1, "url"), 31, 3),
        (("services", "api-service", "load_balancer", "sticky", "cookie"), 38, 1),
        (("services", "api-service", "revisions"), 60, 1),
        (("services", "api-service", "revisions", 0, "strategy"), 61, 38),
        (("services", "api-service", "revisions", 1), 63, 1),
        (("services", "api-service", "revisions", 1, "servers"), 64, 1),
        (("services", "api-service", "revisions", 1, "servers", 0, "url"), 64, 14),
        (("services", "api-service", "rollout", "latency_threshold_ms"), 73, 1),
        (("middlewares", "auth-jwt", "value"), 79, 1),
        (("providers", "discovery", "seeds", 1, "url"), 96, 3),
    ],
)
def test_readme_config_positions(path: Path, line: int, column: int) -> None:
    position = parse(README_CONFIG).sources.get(path)
    assert position is not None
    assert (position.file, position.line, position.column) == ("gateway.hcl", line, column)


def test_problems_locate_the_innermost_known_element() -> None:
    result = parse(README_CONFIG)
    path: Path = ("services", "api-service", "revisions", 1, "servers", 0, "url", "host")
    problem = make_problem("error", path, "x", result.sources, default_file="other.hcl")
    assert (problem.file, problem.line, problem.column) == ("gateway.hcl", 64, 14)


def test_list_block_positions_use_indices() -> None:
    result = parse('lb {\n  servers { url = "a" }\n  servers {\n    url = "b"\n  }\n}')
    assert data_paths(result.data) == [
        ("lb",),
        ("lb", "servers"),
        ("lb", "servers", 0),
        ("lb", "servers", 0, "url"),
        ("lb", "servers", 1),
        ("lb", "servers", 1, "url"),
    ]
    lines = [getattr(result.sources.get(p), "line", None) for p in data_paths(result.data)]
    assert lines == [1, 2, 2, 2, 3, 4]
