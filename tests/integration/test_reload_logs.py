"""What the real CLI logs on start and reload (issue #13, item 8 "Log noise"), read from the
stderr of ``python -m a3s_gateway run`` as a subprocess.

Checked, with ``--workers 2`` and in one process: a config warning is logged once per start
and once per reload (the supervisor reports it; workers never load the file, and an edit
followed by SIGHUP — seen by both the signal and the watcher — is one reload plus an
"unchanged"); an invalid edit seen by both the watcher and SIGHUP is logged as rejected once,
and a new invalid edit again; every line a worker writes names its worker, the supervisor's
lines do not. Every wait is bounded; the process is killed on the way out if still running.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import pytest
import trio

from tests.support.cli import ROOT, cli_env
from tests.support.gateway import LOCAL, free_port

pytestmark = pytest.mark.integration

STARTUP_WAIT: Final = 40.0
#: Long enough that the SIGHUP sent right after an edit is always handled first; the watcher's
#: reload of the same edit follows it (and finds the config unchanged).
DEBOUNCE: Final = "1s"
#: A reload, the watcher's pass of the same edit, or the drain: well within this.
STEP_WAIT: Final = 20.0
RATE_LIMIT_WARNING: Final = "rate-limit is per worker: with 2 workers"
STICKY_WARNING: Final = 'sticky without "secret"'
#: ``<date> <time> <LEVEL> <logger>: <message>[ worker=<n>]`` (observability/applog.py).
LINE: Final = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) +"
    r"(?P<logger>a3s_gateway(?:\.\w+)*): (?P<message>.*?)(?: worker=(?P<worker>\d+))?$"
)
#: Loggers only a worker process uses with ``--workers N`` (the supervisor runs no Gateway).
WORKER_LOGGERS: Final = {"a3s_gateway.app", "a3s_gateway.worker"}
SUPERVISOR_LOGGERS: Final = {"a3s_gateway.cli", "a3s_gateway.workers"}


RATE_LIMITED: Final = (
    'middlewares "limit" {\n  type = "rate-limit"\n  rate = 100\n  burst = 10\n}\n'
)
STICKY: Final = '    sticky {\n      cookie = "s"\n    }\n'


@pytest.fixture
def ports() -> tuple[int, int]:
    """The entrypoint's port and the (never called) backend's, for every version of a file."""
    return free_port(), free_port()


def config_text(
    ports: tuple[int, int], *, middleware: str = "", sticky: str = "", comment: str = ""
) -> str:
    uses = '  middlewares = ["limit"]\n' if middleware else ""
    port, backend = ports
    return (
        f'entrypoints "web" {{\n  address = "{LOCAL}:{port}"\n}}\n'
        f'routers "all" {{\n  rule    = "PathPrefix(`/`)"\n  service = "backend"\n{uses}}}\n'
        'services "backend" {\n  load_balancer {\n'
        f'    servers = [{{ url = "http://{LOCAL}:{backend}" }}]\n{sticky}  }}\n}}\n'
        f"{middleware}"
        f'providers {{\n  file {{\n    debounce = "{DEBOUNCE}"\n  }}\n}}\n'
        f"{comment}"
    )


def write(path: Path, text: str) -> None:
    """An editor's save: a new file renamed over the old one."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


class Stderr:
    """Every line the CLI writes on stderr, kept in order; ``wait_for`` reads on until a line
    it has not returned yet contains ``needle`` (the caller bounds the wait)."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stderr is not None
        self._stream = process.stderr
        self.lines: list[str] = []
        self._returned: set[int] = set()
        self._pending = b""
        self._closed = False

    async def _read(self) -> bool:
        chunk = await self._stream.receive_some(65536)
        if not chunk:
            self._closed = True
            return False
        self._pending += chunk
        *complete, self._pending = self._pending.split(b"\n")
        self.lines.extend(part.decode(errors="replace") for part in complete)
        return True

    async def wait_for(self, needle: str) -> str:
        while True:
            for index, line in enumerate(self.lines):
                if needle in line and index not in self._returned:
                    self._returned.add(index)
                    return line
            if self._closed or not await self._read():
                raise AssertionError(f"stderr ended before {needle!r}:\n" + "\n".join(self.lines))

    async def to_the_end(self) -> None:
        while not self._closed and await self._read():
            pass

    def count(self, needle: str, level: str | None = None) -> int:
        return sum(
            needle in line and (level is None or f" {level} " in line) for line in self.lines
        )


@asynccontextmanager
async def cli(config: Path, *args: str) -> AsyncIterator[tuple[trio.Process, Stderr]]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "a3s_gateway", "run", str(config), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=cli_env(),
        cwd=ROOT,
    )
    try:
        yield process, Stderr(process)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def stop(process: trio.Process, stderr: Stderr) -> None:
    """SIGTERM, a clean exit, and every line up to the end of stderr."""
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(STEP_WAIT):
        assert await process.wait() == 0
        await stderr.to_the_end()
    print("\n".join(stderr.lines))  # shown when an assertion below fails


def parsed(stderr: Stderr) -> list[re.Match[str]]:
    """Every line in the application log's text format (a stray line fails the test)."""
    matches = [LINE.match(line) for line in stderr.lines if line]
    assert all(matches), [line for line in stderr.lines if line and not LINE.match(line)]
    return [match for match in matches if match is not None]


def workers_of(matches: list[re.Match[str]], needle: str) -> list[str]:
    """The worker of each line whose message holds ``needle``, sorted (``-``: none)."""
    return sorted(match["worker"] or "-" for match in matches if needle in match["message"])


async def test_with_two_workers_a_warning_is_logged_once_per_load_and_reload_lines_name_a_worker(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    path = tmp_path / "gateway.hcl"
    write(path, config_text(ports, middleware=RATE_LIMITED))
    async with cli(path, "--workers", "2", "--log-level", "debug") as (process, stderr):
        with trio.fail_after(STARTUP_WAIT):
            await stderr.wait_for("workers ready: 2")
            await stderr.wait_for("config build process ready")
        assert stderr.count(RATE_LIMIT_WARNING, "WARNING") == 1  # the start

        write(path, config_text(ports, middleware=RATE_LIMITED, comment="# edited\n"))
        process.send_signal(signal.SIGHUP)  # the watcher sees the same edit
        with trio.fail_after(STEP_WAIT):
            await stderr.wait_for("config validated: generation 2")
            await stderr.wait_for("config reloaded: generation 2")
            await stderr.wait_for("config reloaded: generation 2")
            await stderr.wait_for("config unchanged: generation 2 kept")
        await stop(process, stderr)

    matches = parsed(stderr)
    warned = [m for m in matches if RATE_LIMIT_WARNING in m["message"]]
    # Once at the start (the CLI) and once for the one reload (the supervisor)...
    assert [m["logger"] for m in warned if m["level"] == "WARNING"] == [
        "a3s_gateway.cli",
        "a3s_gateway.reload",
    ]
    # The workers never load the file (the supervisor hands them its validated config), so
    # they have no warning to log, at any level.
    assert [m["worker"] for m in warned if m["worker"] is not None] == []

    for match in matches:
        if match["logger"] in WORKER_LOGGERS:
            assert match["worker"] in {"0", "1"}, match[0]
        if match["logger"] in SUPERVISOR_LOGGERS:
            assert match["worker"] is None, match[0]
    listening = f"listening entrypoint=web address={LOCAL}:{ports[0]}"
    assert workers_of(matches, listening) == ["0", "1"]
    assert workers_of(matches, "config reloaded: generation 2") == ["0", "1"]
    assert workers_of(matches, "draining") == ["-", "0", "1"]  # "draining workers", then each
    assert workers_of(matches, "gateway stopped") == ["0", "1"]


async def test_with_two_workers_an_invalid_edit_seen_by_the_watcher_and_sighup_is_rejected_once(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    path = tmp_path / "gateway.hcl"
    write(path, config_text(ports))
    async with cli(path, "--workers", "2") as (process, stderr):
        with trio.fail_after(STARTUP_WAIT):
            await stderr.wait_for("workers ready: 2")
            await stderr.wait_for("config build process ready")

        write(path, "routers {\n")
        process.send_signal(signal.SIGHUP)
        with trio.fail_after(STEP_WAIT):
            first = await stderr.wait_for("reload rejected")
            await stderr.wait_for("config still rejected")  # the watcher's pass: not repeated

        write(path, "routers {\n\n")  # a new edit, still invalid: reported again
        with trio.fail_after(STEP_WAIT):
            second = await stderr.wait_for("reload rejected")
        await stop(process, stderr)

    assert "2:1: error: syntax error" in first
    assert "3:1: error: syntax error" in second
    assert stderr.count("reload rejected") == 2
    rejected = [m for m in parsed(stderr) if "reload rejected" in m["message"]]
    assert [(m["level"], m["worker"], m["logger"]) for m in rejected] == [
        ("ERROR", None, "a3s_gateway.reload")
    ] * 2  # the supervisor's; no worker saw the invalid file


async def test_in_one_process_warnings_and_rejections_are_logged_once_each(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    path = tmp_path / "gateway.hcl"
    write(path, config_text(ports, sticky=STICKY))
    async with cli(path) as (process, stderr):
        with trio.fail_after(STARTUP_WAIT):
            await stderr.wait_for("gateway running")
            await stderr.wait_for("config build process ready")
        assert stderr.count(STICKY_WARNING, "WARNING") == 1

        write(path, config_text(ports, sticky=STICKY, comment="# edited\n"))
        process.send_signal(signal.SIGHUP)
        with trio.fail_after(STEP_WAIT):
            await stderr.wait_for("config reloaded: generation 2")
            await stderr.wait_for("config unchanged: generation 2 kept")

        write(path, "routers {\n")
        process.send_signal(signal.SIGHUP)
        with trio.fail_after(STEP_WAIT):
            await stderr.wait_for("reload rejected")
            await stderr.wait_for("config still rejected")
        await stop(process, stderr)

    assert stderr.count(STICKY_WARNING, "WARNING") == 2
    assert stderr.count("reload rejected") == 1
    assert all(match["worker"] is None for match in parsed(stderr))
