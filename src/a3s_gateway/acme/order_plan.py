"""What to order from ACME: one entry per entrypoint with ``tls { acme = true }``, its settings
resolved and its domains derived from the routers' rules (SPEC §3.8, §12.1).

Ring 0: pure functions of a validated ``Config``. Rules are read with the routing package's own
parser and tables (``parse_rule``, ``check_calls`` and the v3/v2 arity tables), never by pattern
matching on the text, so a derived name is exactly what the router matches: ``Host`` (its v3
alias ``HostHeader`` and spellings included, and v2's several arguments) in a leaf with no
``!`` above it, lower-cased, one trailing dot removed. Not derived: ``*``, ``*.`` wildcards,
v2 templates (``{name}``), IP literals, names a CA cannot issue for (not letters, digits and
hyphens in dot-separated labels), and every other matcher (``HostRegexp``, ``HostSNI``…). A rule
that does not compile yields nothing: configuration validation reports it.

(The module is ``order_plan`` rather than ``plan``: ``server/exchange/plan.py`` holds that name
and module names are unique in ``src/``.)

Must not: read files, clocks or the environment, log, or decide anything about issuance beyond
what to order (the schedule is the manager's).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, assert_never

from a3s_gateway.routing.compiler import HTTP_ALIASES, HTTP_ARITY, compile_rule
from a3s_gateway.routing.compiler_v2 import HTTP_V2_ARITY
from a3s_gateway.routing.rules import And, Call, Not, Or, RuleSyntaxError, check_calls, parse_rule

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from a3s_gateway.config.schema import Config
    from a3s_gateway.config.schema_entrypoints import AcmeDns, Entrypoint, Tls
    from a3s_gateway.config.schema_routers import Router
    from a3s_gateway.routing.compiler import RuleSyntax
    from a3s_gateway.routing.rules import Node

__all__ = [
    "LETS_ENCRYPT_PRODUCTION",
    "LETS_ENCRYPT_STAGING",
    "AcmeEntry",
    "derive_domains",
    "plan_acme",
    "rule_host_names",
]

LETS_ENCRYPT_PRODUCTION: Final = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING: Final = "https://acme-staging-v02.api.letsencrypt.org/directory"

#: Matchers whose arguments are host names, after ``check_calls`` (v3 maps ``HostHeader`` to
#: ``Host``; v2 keeps both names).
_HOST_MATCHERS: Final = {"v3": frozenset({"Host"}), "v2": frozenset({"Host", "HostHeader"})}
#: A name a CA can issue for: LDH labels of 1-63 characters, 253 characters at most.
_ISSUABLE: Final = re.compile(
    r"(?=.{1,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z"
)


@dataclass(frozen=True, slots=True)
class AcmeEntry:
    """One entrypoint with ``tls.acme = true``, its settings resolved (SPEC §3.8)."""

    entrypoint: str
    email: str
    #: ``acme_directory_url``, else Let's Encrypt staging if ``acme_staging``, else production.
    directory_url: str
    ca_file: str | None
    storage_path: str
    #: ``"http-01"``, ``"tls-alpn-01"`` or ``"dns-01"``.
    challenge: str
    renewal_days: int
    #: ``"ec256"``, ``"ec384"``, ``"rsa2048"`` or ``"rsa4096"``.
    key_type: str
    dns: AcmeDns | None
    #: Lower-case, unique, sorted.
    domains: tuple[str, ...]


def plan_acme(config: Config) -> tuple[AcmeEntry, ...]:
    """Every entrypoint with ``tls.acme = true``, in name order."""
    entries: list[AcmeEntry] = []
    for name in sorted(config.entrypoints):
        tls = config.entrypoints[name].tls
        if tls is not None and tls.acme:
            entries.append(_entry(config, name, tls))
    return tuple(entries)


def _entry(config: Config, name: str, tls: Tls) -> AcmeEntry:
    if tls.acme_directory_url is not None:
        directory_url = str(tls.acme_directory_url)
    else:
        directory_url = LETS_ENCRYPT_STAGING if tls.acme_staging else LETS_ENCRYPT_PRODUCTION
    return AcmeEntry(
        entrypoint=name,
        email=tls.acme_email or "",
        directory_url=directory_url,
        ca_file=tls.acme_ca_file,
        storage_path=tls.acme_storage_path,
        challenge=tls.acme_challenge,
        renewal_days=tls.acme_renewal_days,
        key_type=tls.acme_key_type,
        dns=tls.acme_dns,
        domains=derive_domains(config, name),
    )


def derive_domains(config: Config, entrypoint: str) -> tuple[str, ...]:
    """The domains of ``entrypoint`` (SPEC §12.1): its ``acme_domains`` when set (wildcards
    kept), else the literal hosts of the HTTP routers attached to it or to an entrypoint whose
    ``redirect_to`` names it. Lower-case, without a trailing dot, unique, sorted."""
    own = config.entrypoints.get(entrypoint)
    if own is not None and own.tls is not None and own.tls.acme_domains:
        return tuple(sorted({_canonical(domain) for domain in own.tls.acme_domains}))
    sources = {entrypoint} | {
        name for name, other in config.entrypoints.items() if other.redirect_to == entrypoint
    }
    found: set[str] = set()
    for router in config.routers.values():
        if _attached(router, sources, config.entrypoints):
            found.update(rule_host_names(router.rule, router.rule_syntax))
    return tuple(sorted(found))


def _attached(router: Router, sources: set[str], entrypoints: dict[str, Entrypoint]) -> bool:
    """Whether ``router`` serves one of ``sources`` (no ``entrypoints`` = every HTTP one)."""
    if router.entrypoints:
        return not sources.isdisjoint(router.entrypoints)
    return any(name in entrypoints and entrypoints[name].protocol == "http" for name in sources)


@functools.lru_cache(maxsize=4096)
def rule_host_names(rule: str, syntax: RuleSyntax = "v3") -> frozenset[str]:
    """The issuable literal host names of an HTTP ``rule`` that appear in a leaf with no ``!``
    above it; empty when the rule does not compile. Cached: the plan is made again at every
    reload and for every ACME entrypoint, and compiling each router's rule each time would be
    the bulk of it."""
    try:
        compile_rule(rule, kind="http", syntax=syntax)
        tree = parse_rule(rule)
        if syntax == "v2":
            tree = check_calls(tree, HTTP_V2_ARITY)
        else:
            tree = check_calls(tree, HTTP_ARITY, aliases=HTTP_ALIASES)
    except RuleSyntaxError:
        return frozenset()
    names = _HOST_MATCHERS[syntax]
    found: set[str] = set()
    for call in _positive_leaves(tree):
        if call.name in names:
            found.update(_literal_hosts(call.args, templates=syntax == "v2"))
    return frozenset(found)


def _positive_leaves(tree: Node) -> Iterator[Call]:
    """The leaves of ``tree`` with no ``Not`` on their path from the root (explicit stack:
    trees are deep by design, up to ``MAX_DEPTH``)."""
    stack: list[Node] = [tree]
    while stack:
        current = stack.pop()
        match current:
            case Call():
                yield current
            case And() | Or():
                stack += [current.right, current.left]
            case Not():
                pass  # nothing under a negation is a name the router needs
            case _:
                assert_never(current)


def _literal_hosts(args: Iterable[str], *, templates: bool) -> Iterator[str]:
    for arg in args:
        if templates and "{" in arg:
            continue  # a v2 template matches a pattern, not a name
        host = _canonical(arg)
        if _issuable(host):
            yield host


def _canonical(name: str) -> str:
    return name.lower().removesuffix(".")


def _issuable(host: str) -> bool:
    """A name a CA can issue for: not ``*`` or a wildcard, not an IP literal, LDH labels, at
    least two of them, and not ``localhost`` or under it (a dev config's ``Host(`localhost`)``
    would otherwise be ordered, refused and retried forever)."""
    if _ISSUABLE.match(host) is None or "." not in host.rstrip("."):
        return False
    if host.rstrip(".").lower().endswith(".localhost"):
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False
