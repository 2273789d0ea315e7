"""The ``local`` executor with real child processes.

The child is a small Python program (``CHILD``): it prints a ready line naming its pid, port,
arguments, environment and working directory, then some awkward output (an undecodable byte,
a line longer than ``MAX_LINE``, a line on stderr), and waits for signals. ``IGNORE_TERM=1`` makes
it ignore SIGTERM; SIGUSR1 makes it exit with code 3 (an unexpected exit). The children never
bind their port, so the tests need no free ports.

Tests wait for what the executor logs (``Watcher`` wakes on every record) instead of sleeping.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from a3s_gateway.config.schema_services import LocalExecutor as LocalSettings
from a3s_gateway.config.values import Duration
from a3s_gateway.scaling.executor_http import Current, ExecutorError, ScaleResult
from a3s_gateway.scaling.executor_local import MAX_LINE, LocalExecutor

LOG = logging.getLogger("tests.scaling.executor_local")
BASE = 39100
CHILD = r"""
import os, signal, sys
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGUSR1, lambda *_: os._exit(3))
print(
    f"ready pid={os.getpid()} port={os.environ['PORT']} arg={sys.argv[1]}"
    f" extra={os.environ.get('EXTRA')} cwd={os.getcwd()}",
    flush=True,
)
sys.stdout.buffer.write(b"bad \xff byte\r\n" + b"x" * 5000 + b"\n")
sys.stdout.flush()
print("on stderr", file=sys.stderr, flush=True)
while True:
    signal.pause()
"""
READY = re.compile(r"ready pid=(\d+) ")


class Watcher(logging.Handler):
    """Keeps every record of ``LOG`` and lets a test wait for some."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()
        self._changed = trio.Event()

    def matching(self, text: str) -> list[str]:
        return [r.getMessage() for r in self.records if text in r.getMessage()]

    async def wait_for(self, text: str, count: int = 1) -> list[str]:
        """The messages containing ``text``, once there are ``count`` of them."""
        while len(found := self.matching(text)) < count:
            await self._changed.wait()
        return found


@pytest.fixture
def watcher() -> Iterator[Watcher]:
    watcher = Watcher()
    level = LOG.level
    LOG.setLevel(logging.DEBUG)
    LOG.addHandler(watcher)
    try:
        yield watcher
    finally:
        LOG.removeHandler(watcher)
        LOG.setLevel(level)


def settings(
    *,
    stop_timeout: str = "5s",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    base_port: int = BASE,
    command: tuple[str, ...] = (sys.executable, "-c", CHILD, "{port}"),
) -> LocalSettings:
    return LocalSettings(
        command=command,
        base_port=base_port,
        env=env or {},
        cwd=None if cwd is None else str(cwd),
        stop_timeout=Duration(stop_timeout),
    )


def executor_for(local: LocalSettings) -> LocalExecutor:
    return LocalExecutor("api", local, environ=os.environ, log=LOG)


def url(slot: int) -> str:
    return f"http://127.0.0.1:{BASE + slot}"


def pids(messages: list[str]) -> list[int]:
    return [int(match[1]) for message in messages if (match := READY.search(message))]


def pid_of(messages: list[str], slot: int) -> int:
    """The pid in replica ``slot``'s ready line."""
    [pid] = pids([m for m in messages if m.startswith(f"[api#{slot} ")])
    return pid


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie counts: only a reaped child is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_scale_zero_two_one_zero_with_prefixed_output(
    nursery: trio.Nursery, watcher: Watcher, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    executor = executor_for(settings(env={"EXTRA": "yes", "PORT": "1"}, cwd=tmp_path))
    await nursery.start(executor.run)
    with trio.fail_after(20):
        assert await executor.current("api") == Current(0, ())
        assert await executor.scale("api", 2, "load", current=0) == ScaleResult(
            True, 2, "started 2"
        )
        started = pids(await watcher.wait_for("ready pid=", 2))
        await watcher.wait_for("on stderr", 2)
        assert await executor.current("api") == Current(2, (url(0), url(1)))

        result = await executor.scale("api", 1, "idle", current=2)
        assert result == ScaleResult(True, 1, "stopping 1")
        [stopped] = await watcher.wait_for(": stopped (")
        assert f"replica api#1 (port {BASE + 1}," in stopped
        assert stopped.endswith("stopped (killed by SIGTERM)")
        assert await executor.current("api") == Current(1, (url(0),))

        assert (await executor.scale("api", 0, "idle", current=1)).actual_replicas == 0
        await watcher.wait_for(": stopped (", 2)
        assert await executor.current("api") == Current(0, ())
    assert not any(alive(pid) for pid in started)

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[api#0 ")]
    pid = pid_of(lines, 0)
    first = f"[api#0 :{BASE}] ready pid={pid} port={BASE} arg={BASE} extra=yes cwd={tmp_path}"
    assert lines[0] == first
    assert f"[api#0 :{BASE}] bad \ufffd byte" in lines
    assert f"[api#0 :{BASE}] " + "x" * MAX_LINE in lines
    assert f"[api#0 :{BASE}] " + "x" * (5000 - MAX_LINE) in lines
    assert f"[api#0 :{BASE}] on stderr" in lines
    assert any(m.startswith(f"[api#1 :{BASE + 1}] ready") for m in caplog.messages)


async def test_a_free_slot_is_reused_and_a_stopping_one_is_not(
    nursery: trio.Nursery, watcher: Watcher
) -> None:
    executor = executor_for(settings(env={"IGNORE_TERM": "1"}, stop_timeout="1s"))
    await nursery.start(executor.run)
    with trio.fail_after(20):
        await executor.scale("api", 2, "load", current=0)
        await watcher.wait_for("ready pid=", 2)
        await executor.scale("api", 1, "idle", current=2)  # slot 1 ignores SIGTERM for now
        assert (await executor.scale("api", 2, "load", current=1)).actual_replicas == 2
        assert await executor.current("api") == Current(2, (url(0), url(2)))
        await watcher.wait_for("killing it")
        await watcher.wait_for("stopped (killed by SIGKILL)")
        await executor.scale("api", 3, "load", current=2)
        assert await executor.current("api") == Current(3, (url(0), url(1), url(2)))


async def test_a_child_that_exits_is_no_longer_counted(
    nursery: trio.Nursery, watcher: Watcher, caplog: pytest.LogCaptureFixture
) -> None:
    executor = executor_for(settings())
    await nursery.start(executor.run)
    with trio.fail_after(20):
        await executor.scale("api", 2, "load", current=0)
        first = pid_of(await watcher.wait_for("ready pid=", 2), 0)
        os.kill(first, signal.SIGUSR1)
        [exited] = await watcher.wait_for("exited unexpectedly")
        assert exited.endswith("exited unexpectedly (exit code 3)")
        assert await executor.current("api") == Current(1, (url(1),))
    [record] = [r for r in caplog.records if "exited unexpectedly" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert not alive(first)


async def test_aclose_kills_a_child_that_ignores_sigterm(
    nursery: trio.Nursery, watcher: Watcher
) -> None:
    executor = executor_for(settings(env={"IGNORE_TERM": "1"}, stop_timeout="300ms"))
    await nursery.start(executor.run)
    with trio.fail_after(20):
        await executor.scale("api", 1, "load", current=0)
        [pid] = pids(await watcher.wait_for("ready pid="))
        began = trio.current_time()
        await executor.aclose()
        took = trio.current_time() - began
    assert 0.3 <= took < 5
    assert not alive(pid)
    assert watcher.matching("still running 0.3 s after SIGTERM; killing it")
    with pytest.raises(ExecutorError, match="closed"):
        await executor.scale("api", 1, "load", current=0)


async def test_cancelling_run_leaves_no_child(watcher: Watcher) -> None:
    executor = executor_for(settings(env={"IGNORE_TERM": "1"}, stop_timeout="300ms"))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(executor.run)
            await executor.scale("api", 2, "load", current=0)
            started = pids(await watcher.wait_for("ready pid=", 2))
            await watcher.wait_for("on stderr", 2)  # (so neither dies writing to a closed pipe)
            nursery.cancel_scope.cancel()
    assert len(started) == 2
    assert not any(alive(pid) for pid in started)
    assert len(watcher.matching("stopped (killed by SIGKILL)")) == 2
    assert await executor.current("api") == Current(0, ())
    with pytest.raises(ExecutorError, match="not running"):
        await executor.scale("api", 1, "load", current=0)


async def test_scale_needs_run() -> None:
    executor = executor_for(settings())
    with pytest.raises(ExecutorError, match="local executor of service api is not running"):
        await executor.scale("api", 1, "load", current=0)
    assert await executor.current("api") == Current(0, ())
    await executor.aclose()


async def test_a_command_that_cannot_start(nursery: trio.Nursery) -> None:
    executor = executor_for(settings(command=("/nonexistent/a3s-child", "{port}")))
    await nursery.start(executor.run)
    reason = "cannot start '/nonexistent/a3s-child': No such file or directory"
    with trio.fail_after(10), pytest.raises(ExecutorError, match=reason):
        await executor.scale("api", 1, "load", current=0)
    assert await executor.current("api") == Current(0, ())


async def test_a_missing_working_directory(nursery: trio.Nursery, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    executor = executor_for(settings(cwd=missing))
    await nursery.start(executor.run)
    with trio.fail_after(10), pytest.raises(ExecutorError) as caught:
        await executor.scale("api", 1, "load", current=0)
    assert str(caught.value).endswith(f"No such file or directory ({missing})")


async def test_ports_end_at_65535(nursery: trio.Nursery, watcher: Watcher) -> None:
    executor = executor_for(settings(base_port=65535))
    await nursery.start(executor.run)
    with trio.fail_after(10):
        with pytest.raises(ExecutorError, match="no port for replica 1"):
            await executor.scale("api", 2, "load", current=0)
        assert await executor.current("api") == Current(1, ("http://127.0.0.1:65535",))
        await watcher.wait_for("ready pid=")
        await executor.aclose()
    assert await executor.current("api") == Current(0, ())


async def test_another_service_is_refused() -> None:
    executor = executor_for(settings())
    with pytest.raises(ExecutorError, match="of service api was asked about web"):
        await executor.current("web")
    with pytest.raises(ExecutorError, match="asked about web"):
        await executor.scale("web", 1, "load", current=0)


async def test_a_replica_never_starts_outside_the_services_ports(
    nursery: trio.Nursery, watcher: Watcher
) -> None:
    """With ``max_replicas = 1`` the only backend is ``base_port``: a scale-up while the child
    of that slot is still stopping starts nothing (the next tick retries), never a child on
    ``base_port + 1``."""
    executor = LocalExecutor("api", settings(), environ=os.environ, log=LOG, slots=1)
    await nursery.start(executor.run)
    with trio.fail_after(20):
        await executor.scale("api", 1, "load", current=0)
        await watcher.wait_for("ready")
        await executor.scale("api", 0, "idle", current=1)
        again = await executor.scale("api", 1, "load", current=0)
        assert again.actual_replicas in (0, 1)
        current = await executor.current("api")
        assert current.endpoints in ((), (url(0),))
        await executor.aclose()
