"""Semantic checks of revisions, rollout and scaling (SPEC §3.15 checks 6 and 7).

Mirrors ``semantic_revisions``; helpers live in ``tests.support.semantic``.
"""

from __future__ import annotations

import pytest

from tests.support.semantic import Case, load, run_case, service_with

# -- revisions, rollout (check 6) -----------------------------------------------------------------


REVISION_CASES = [
    Case(
        "revisions-sum",
        service_with(
            '  revisions = [\n    { name = "v1", traffic_percent = 80 },\n'
            '    { name = "v2", traffic_percent = 10 },\n  ]\n'
        ),
        'services["api"].revisions',
        'revisions of "api" sum to 90, must be 100',
        "revisions =",
    ),
    Case(
        "revision-names-unique",
        service_with(
            '  revisions = [\n    { name = "v1", traffic_percent = 60 },\n'
            '    { name = "v1", traffic_percent = 40 },\n  ]\n'
        ),
        'services["api"].revisions[1].name',
        'revision name "v1" is used twice (also revisions[0])',
        "traffic_percent = 40",
    ),
    Case(
        "revision-tags-unique",
        service_with(
            '  revisions = [\n    { name = "v1", traffic_percent = 50, tag = "t" },\n'
            '    { name = "v2", traffic_percent = 50, tag = "t" },\n  ]\n'
        ),
        'services["api"].revisions[1].tag',
        'revision tag "t" is used twice',
        'name = "v2"',
    ),
    Case(
        "rollout-unknown-revision",
        service_with(
            '  revisions = [{ name = "v1" }]\n  rollout {\n    from = "v1"\n    to = "v9"\n  }\n'
        ),
        'services["api"].rollout.to',
        'revision "v9" is not defined (defined: v1)',
        'to = "v9"',
    ),
    Case(
        "rollout-same-revision",
        service_with(
            '  revisions = [{ name = "v1" }]\n  rollout {\n    from = "v1"\n    to = "v1"\n  }\n'
        ),
        'services["api"].rollout.to',
        'rollout "from" and "to" must name different revisions',
        'to = "v1"',
    ),
    Case(
        "rollout-without-revisions",
        service_with(
            '  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n  }\n'
            '  rollout {\n    from = "v1"\n    to = "v2"\n  }\n'
        ),
        'services["api"].rollout',
        "rollout needs revisions",
        "rollout {",
    ),
    Case(
        "servers-next-to-revisions",
        service_with(
            '  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n  }\n'
            '  revisions = [{ name = "v1" }]\n'
        ),
        'services["api"].load_balancer.servers',
        "only the fallback pool",
        "servers =",
        severity="warning",
    ),
    Case(
        "revision-header-without-revisions",
        service_with(
            '  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n  }\n'
            '  revision_header = "X-Revision"\n'
        ),
        'services["api"].revision_header',
        'field "revision_header" applies only to a service with revisions',
        "revision_header",
    ),
    Case(
        "revision-affinity-grammar",
        service_with('  revisions = [{ name = "v1" }]\n  revision_affinity = "ip"\n'),
        'services["api"].revision_affinity',
        "revision_affinity must be a key expression",
        "revision_affinity",
    ),
]


@pytest.mark.parametrize("case", REVISION_CASES, ids=lambda c: c.id)
def test_revisions(case: Case) -> None:
    run_case(case)


# -- scaling (check 7) ----------------------------------------------------------------------------


def scaled(scaling: str, *, health: bool = True) -> str:
    check = '    health_check {\n      path = "/health"\n    }\n' if health else ""
    return service_with(
        '  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n'
        + check
        + "  }\n  scaling {\n"
        + scaling
        + "  }\n"
    )


SCALING_CASES = [
    Case(
        "min-above-max",
        scaled("    min_replicas = 5\n    max_replicas = 3\n"),
        'services["api"].scaling.min_replicas',
        "min_replicas (5) must be at most max_replicas (3)",
        "min_replicas = 5",
    ),
    Case(
        "buffer-needs-health-check",
        scaled("    min_replicas = 1\n    buffer_enabled = true\n", health=False),
        'services["api"].scaling.buffer_enabled',
        "buffer_enabled needs load_balancer.health_check",
        "buffer_enabled",
    ),
    Case(
        "executor-block-mismatch",
        scaled(
            '    min_replicas = 1\n    executor = "box"\n    local {\n'
            '      command = ["x", "{port}"]\n      base_port = 7000\n    }\n'
        ),
        'services["api"].scaling.local',
        'block "local" applies only to executor "local" (executor is "box")',
        "local {",
    ),
    Case(
        "local-executor-needs-block",
        scaled('    min_replicas = 1\n    executor = "local"\n'),
        'services["api"].scaling.local',
        'executor "local" needs a local block',
        "scaling {",
    ),
    Case(
        "local-command-placeholder",
        scaled(
            '    min_replicas = 1\n    executor = "local"\n    local {\n'
            '      command = ["x", "--port", "8000"]\n      base_port = 7000\n    }\n'
        ),
        'services["api"].scaling.local.command',
        'command must contain the "{port}" placeholder',
        "command =",
    ),
    Case(
        "stable-window-too-short",
        scaled('    min_replicas = 1\n    stable_window = "5s"\n'),
        'services["api"].scaling.stable_window',
        'stable_window ("5s") must be whole seconds from 6s to 1h',
        "stable_window",
    ),
    Case(
        "stable-window-fraction",
        scaled('    min_replicas = 1\n    stable_window = "6.5s"\n'),
        'services["api"].scaling.stable_window',
        "must be whole seconds",
        "stable_window",
    ),
    Case(
        "min-zero-without-buffer",
        scaled("    max_replicas = 3\n"),
        'services["api"].scaling.min_replicas',
        "min_replicas = 0 without buffer_enabled",
        "scaling {",
        severity="warning",
    ),
]


@pytest.mark.parametrize("case", SCALING_CASES, ids=lambda c: c.id)
def test_scaling(case: Case) -> None:
    run_case(case)


def test_k8s_is_an_alias_of_kubernetes() -> None:
    snippet = scaled(
        '    min_replicas = 1\n    container_concurrency = 10\n    executor = "k8s"\n'
        "    kubernetes {\n"
        '      kind = "statefulsets"\n    }\n'
    )
    assert load(snippet).problems == ()


def test_a_scaling_block_without_container_concurrency_is_warned_about() -> None:
    [problem] = load(scaled('    executor = "mock"\n    min_replicas = 1\n')).problems
    assert problem.severity == "warning"
    assert problem.path == 'services["api"].scaling.container_concurrency'
    assert "no autoscaler runs" in problem.message


def test_a_server_in_two_pools_is_warned_about() -> None:
    snippet = service_with(
        '  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n  }\n'
        "  revisions = [\n"
        '    { name = "v1", traffic_percent = 60, servers = [{ url = "http://10.0.0.2" }] },\n'
        '    { name = "v2", traffic_percent = 40, servers = [{ url = "http://10.0.0.2" }] },\n'
        "  ]\n"
    )
    found = [p for p in load(snippet).problems if "also in" in p.message]
    assert [(p.severity, p.path) for p in found] == [
        ("warning", 'services["api"].revisions[1].servers[0].url')
    ]
    assert "also in revisions[0]" in found[0].message
