"""Settings the schema knows but this version of the gateway cannot honour yet, refused by name.

Ring 0: pure. The schema describes the whole configuration language, and features land one at a
time. A setting whose feature does not run yet must never be accepted and then silently ignored
(an entrypoint with ``tls`` that serves plain HTTP is worse than an error), so ``load`` reports
every use of such a setting as an error naming the field and the missing feature, and
``Gateway`` refuses a ``Config`` built in code that uses one. ``UNAVAILABLE`` is the one table:
when a feature lands, its rows go, and the table-driven test (tests/config/test_availability.py)
follows. docs/configuration.md lists the same rows for users.

A field counts as *used* when the config file writes it (the source map has its position) or,
for a ``Config`` built without a source map, when its value differs from the default.

Must not: raise, read files or the environment, or echo a configured value (it may be a secret).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

from a3s_gateway.config.problems import Path, Problem, SourceMap, make_problem

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from a3s_gateway.config.schema import Config

    #: Every use of one setting in a config, as ``(path, what)``.
    Finder: TypeAlias = Callable[[Config, SourceMap], Iterator[tuple[Path, str]]]

__all__ = ["UNAVAILABLE", "Unavailable", "check_availability", "written"]


@dataclass(frozen=True, slots=True)
class Unavailable:
    """One setting that is refused until its feature lands."""

    #: Where it is written, as users read it (``entrypoints.<name>.tls``).
    where: str
    #: What is missing, completing "… is not available yet".
    feature: str
    #: Every use in a config, as ``(path, what)``: ``what`` names the use in the message.
    find: Finder
    #: A snippet that uses it, added to a minimal config with entrypoint "web", service "app"
    #: and router "app" (the table-driven test loads each one).
    sample: str


def check_availability(config: Config, sources: SourceMap, *, default_file: str) -> list[Problem]:
    """An error for every use of an unavailable setting in ``config``, in table order."""
    problems: list[Problem] = []
    for row in UNAVAILABLE:
        for path, what in row.find(config, sources):
            message = (
                f"{what} is not available yet in this version of a3s_gateway ({row.feature}); "
                "remove it (the gateway would otherwise ignore it)"
            )
            problems.append(
                make_problem("error", path, message, sources, default_file=default_file)
            )
    return problems


# -- finders -------------------------------------------------------------------------------------


def written(sources: SourceMap, path: Path, *, differs: bool) -> bool:
    """For finders: whether the field at ``path`` is used, written in the file or (no position
    known, as for a ``Config`` built in code) set to something other than its default."""
    return sources.get(path) is not None or differs


#: Every setting refused until its feature lands, in the order the docs list them. Empty since
#: ACME landed (issue #23): every setting of the language works. The mechanism stays for the
#: next feature whose schema lands before its implementation.
UNAVAILABLE: Final[tuple[Unavailable, ...]] = ()
