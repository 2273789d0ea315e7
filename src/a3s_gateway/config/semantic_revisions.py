"""Semantic checks of a service's revisions, rollout and scaling (SPEC §3.10, §11, §3.15 checks
6 and 7).

Ring 0: pure. Revisions: unique names and tags, traffic summing to exactly 100, the revision
selectors (``revision_affinity``, ``revision_header``) only with revisions. Rollout: needs
revisions, ``from``/``to`` name two different revisions. Scaling: ``min_replicas <=
max_replicas``, ``buffer_enabled`` needs a health check, the executor sub-block matches the
executor (``k8s`` = ``kubernetes``), ``stable_window`` in whole seconds 6s-1h, the local
executor's ``{port}`` placeholder and port range.

Must not: raise, or echo ``local.env`` values.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from a3s_gateway.config.semantic_report import Report, defined_list
from a3s_gateway.config.values import (
    ENV_NAME_PATTERN,
    HEADER_NAME_PATTERN,
    KEY_EXPRESSION_NO_GLOBAL_PATTERN,
)

if TYPE_CHECKING:
    from a3s_gateway.config.problems import Path
    from a3s_gateway.config.schema import Service
    from a3s_gateway.config.schema_services import Scaling

_TOTAL_TRAFFIC: Final = 100
_KEY_EXPRESSION: Final = re.compile(KEY_EXPRESSION_NO_GLOBAL_PATTERN)
_HEADER_NAME: Final = re.compile(HEADER_NAME_PATTERN)
_ENV_NAME: Final = re.compile(ENV_NAME_PATTERN)
_EXECUTOR_ALIASES: Final = {"k8s": "kubernetes"}
_STABLE_WINDOW_MIN: Final = 6
_STABLE_WINDOW_MAX: Final = 3600
_MAX_PORT: Final = 65535


def check_revisions(report: Report, base: Path, name: str, service: Service) -> None:
    """Revisions, the revision selectors and the rollout of service ``name``."""
    _check_selectors(report, base, service)
    if not service.revisions:
        if service.rollout is not None:
            report.error(
                (*base, "rollout"), "rollout needs revisions (it moves traffic between two of them)"
            )
        return
    _check_unique(report, base, service)
    total = sum(revision.traffic_percent for revision in service.revisions)
    if total != _TOTAL_TRAFFIC:
        report.error((*base, "revisions"), f'revisions of "{name}" sum to {total}, must be 100')
    if service.rollout is not None:
        _check_rollout(report, (*base, "rollout"), service)


def _check_selectors(report: Report, base: Path, service: Service) -> None:
    affinity, header = service.revision_affinity, service.revision_header
    for field, value in (("revision_affinity", affinity), ("revision_header", header)):
        if value and not service.revisions:
            report.error(
                (*base, field), f'field "{field}" applies only to a service with revisions'
            )
    if affinity and _KEY_EXPRESSION.match(affinity) is None:
        report.error(
            (*base, "revision_affinity"),
            "revision_affinity must be a key expression: client-ip, host, path, header:<name>, "
            'cookie:<name> or query:<name> (or "" for none)',
        )
    if header and _HEADER_NAME.match(header) is None:
        report.error(
            (*base, "revision_header"),
            'revision_header must be a header name (RFC 9110 token) or "" for none',
        )


def _check_unique(report: Report, base: Path, service: Service) -> None:
    names: dict[str, int] = {}
    tags: dict[str, int] = {}
    for index, revision in enumerate(service.revisions):
        seen = names.setdefault(revision.name, index)
        if seen != index:
            report.error(
                (*base, "revisions", index, "name"),
                f'revision name "{revision.name}" is used twice (also revisions[{seen}])',
            )
    for index, revision in enumerate(service.revisions):
        tag = revision.tag
        if tag is None:
            continue
        seen = tags.setdefault(tag, index)
        owner = names.get(tag, index)
        if seen != index:
            message = f'revision tag "{tag}" is used twice (also revisions[{seen}])'
            report.error((*base, "revisions", index, "tag"), message)
        elif owner != index:
            message = f'revision tag "{tag}" is the name of revisions[{owner}]'
            report.error((*base, "revisions", index, "tag"), message)


def _check_rollout(report: Report, base: Path, service: Service) -> None:
    rollout = service.rollout
    if rollout is None:
        return
    names = list(dict.fromkeys(revision.name for revision in service.revisions))
    for field, value in (("from", rollout.from_), ("to", rollout.to)):
        if value not in names:
            report.error(
                (*base, field), f'revision "{value}" is not defined ({defined_list(names)})'
            )
    if rollout.from_ == rollout.to:
        report.error((*base, "to"), 'rollout "from" and "to" must name different revisions')


# -- scaling (check 7) -------------------------------------------------------------------------


def check_scaling(report: Report, base: Path, service: Service, scaling: Scaling) -> None:
    """Cross-field rules of ``scaling`` (the schema checked each field's own range)."""
    path: Path = (*base, "scaling")
    if scaling.min_replicas > scaling.max_replicas:
        report.error(
            (*path, "min_replicas"),
            f"min_replicas ({scaling.min_replicas}) must be at most max_replicas "
            f"({scaling.max_replicas})",
        )
    balancer = service.load_balancer
    local = _EXECUTOR_ALIASES.get(scaling.executor, scaling.executor) == "local"
    probed = local or (balancer is not None and balancer.health_check is not None)
    if scaling.buffer_enabled and not probed:  # (local replicas get a connect check)
        report.error(
            (*path, "buffer_enabled"),
            "buffer_enabled needs load_balancer.health_check (the readiness signal of new "
            "replicas)",
        )
    if scaling.min_replicas == 0 and not scaling.buffer_enabled:
        report.warning(
            (*path, "min_replicas"),
            "min_replicas = 0 without buffer_enabled: requests during a cold start get 503",
        )
    window = scaling.stable_window.seconds
    if window != int(window) or not _STABLE_WINDOW_MIN <= window <= _STABLE_WINDOW_MAX:
        report.error(
            (*path, "stable_window"),
            f'stable_window ("{scaling.stable_window.text}") must be whole seconds from 6s to 1h',
        )
    if scaling.container_concurrency == 0:
        report.warning(
            (*path, "container_concurrency"),
            "container_concurrency = 0: no autoscaler runs and the executor is never called "
            "(set the concurrency one replica takes to scale this service)",
        )
    burst = scaling.target_burst_capacity
    if burst < 0 and burst != -1:
        report.error(
            (*path, "target_burst_capacity"),
            f"target_burst_capacity ({burst:g}) must be at least 0, or -1 for unlimited",
        )
    _check_executor(report, path, scaling)


def _check_executor(report: Report, path: Path, scaling: Scaling) -> None:
    executor = _EXECUTOR_ALIASES.get(scaling.executor, scaling.executor)
    blocks = {"box": scaling.box, "kubernetes": scaling.kubernetes, "local": scaling.local}
    for block, value in blocks.items():
        if value is not None and block != executor:
            report.error(
                (*path, block),
                f'block "{block}" applies only to executor "{block}" '
                f'(executor is "{scaling.executor}")',
            )
    local = scaling.local
    if executor == "local" and local is None:
        report.error((*path, "local"), 'executor "local" needs a local block (command, base_port)')
    if local is not None and executor == "local":
        if not any("{port}" in part for part in local.command):
            report.error(
                (*path, "local", "command"), 'command must contain the "{port}" placeholder'
            )
        last = local.base_port + scaling.max_replicas - 1
        if last > _MAX_PORT:
            report.error(
                (*path, "local", "base_port"),
                f"base_port + max_replicas - 1 = {last} is beyond port 65535",
            )
    box = scaling.box
    if box is not None and box.token_env is not None and _ENV_NAME.match(box.token_env) is None:
        report.error(
            (*path, "box", "token_env"),
            "token_env must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
        )
