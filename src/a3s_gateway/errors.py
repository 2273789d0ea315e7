"""The gateway's exception hierarchy (SPEC §2.7), and ``one_line``, the shape of the messages
of errors that quote what a peer said.

Ring 0: plain exception classes. Each carries what a caller needs to report it; none carries a
secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from a3s_gateway.config.problems import Problem


#: The longest ``one_line`` text.
MESSAGE_LIMIT: Final = 300


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` on one line (control characters and runs of blanks become one space), cut at
    ``limit`` characters: fit for a log line or an error quoting what a peer answered."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A configuration was rejected; ``problems`` lists every error and warning found."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        first = errors[0].format() if errors else "invalid configuration"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)


class StartError(GatewayError):
    """The gateway could not start outside the config: bind failure, permissions, limits."""


class ReloadError(GatewayError):
    """A reload could not be applied (e.g. a new listener failed to bind); nothing changed."""
