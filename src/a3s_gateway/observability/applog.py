"""The application log on stderr, as text or JSON lines (SPEC §9.3).

Ring 1 (it puts a handler on the ``a3s_gateway`` logger): formatting on top of the standard
``logging`` module; the CLI and each worker install it, the library never does (a library
user keeps their own logging setup). Text lines are ``<time> <LEVEL> <logger>: <message>``,
the message carrying its own ``key=value`` fields (SPEC §9.3). A worker process of ``run
--workers N`` installs it with its slot index, so that each of its lines names it: a last
field ``worker=<n>`` in text, a ``"worker": n`` field in JSON; the supervisor's lines (and a
single process's) have neither. Must not: log secrets — callers pass redacted values only.

``install`` returns the logger settings it replaced (``LoggerState``), so that an in-process
caller (``cli.main`` from a test or a program) leaves the logger as it found it.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

import msgspec

LogFormat = Literal["text", "json"]
#: The logger ``install`` configures: every module logs under it.
LOGGER: Final = "a3s_gateway"
LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
_encoder: Final = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, the worker's index (worker processes only),
    logger, message (and exception text if any)."""

    def __init__(self, *, worker: int | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str | int] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
        }
        if self._worker is not None:
            entry["worker"] = self._worker
        entry["logger"] = record.name
        entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(entry).decode()


def text_format(worker: int | None = None) -> str:
    """The ``logging`` format string of the text log (``worker``: a worker process's index)."""
    who = "" if worker is None else f" worker={worker}"
    return f"%(asctime)s %(levelname)-7s %(name)s: %(message)s{who}"


@dataclass(frozen=True, slots=True)
class LoggerState:
    """The settings of the ``a3s_gateway`` logger that ``install`` changes, as they were when
    taken: ``LoggerState.now()``; ``restore()`` puts them back (an in-process caller of the CLI,
    a test)."""

    handlers: tuple[logging.Handler, ...]
    level: int
    propagate: bool

    @classmethod
    def now(cls) -> LoggerState:
        logger = logging.getLogger(LOGGER)
        return cls(tuple(logger.handlers), logger.level, logger.propagate)

    def restore(self) -> None:
        logger = logging.getLogger(LOGGER)
        logger.handlers[:] = self.handlers
        logger.setLevel(self.level)
        logger.propagate = self.propagate


def install(level: str, log_format: LogFormat, *, worker: int | None = None) -> LoggerState:
    """Send the ``a3s_gateway`` loggers to stderr at ``level`` in ``log_format``; ``worker``:
    the index of the worker process this is (every line then names it). Returns the settings
    it replaced: their ``restore()`` undoes the install."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(worker=worker))
    else:
        handler.setFormatter(logging.Formatter(text_format(worker)))
    previous = LoggerState.now()
    root = logging.getLogger(LOGGER)
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    root.propagate = False
    return previous
