"""The access-log writer (SPEC §9.2, §14.1): order, overflow, reopen, close, stdout, errors.

Writes run in a worker thread, so most tests here use trio's real clock and wait on the log's
own progress (``flush``) or on events the sink sets, never on sleeps; ``autojump_clock`` is used
where no thread has to finish in between (it would jump virtual time while a thread works).
Stalled writers are sinks whose ``write`` blocks on a ``threading.Event`` in the writer's thread.
"""

from __future__ import annotations

import io
import json
import logging
import os
import select
import threading
import time
from pathlib import Path

import pytest
import trio

from a3s_gateway.config.schema import Observability
from a3s_gateway.observability.record import ExchangeRecord
from a3s_gateway.server.accesslog_writer import (
    CLOSE_GRACE,
    AccessLog,
    DisabledAccessLog,
    access_log_for,
    pipe_chunks,
)

WALL = 1796223845.123


def record(number: int, *, query: bytes = b"") -> ExchangeRecord:
    entry = ExchangeRecord("web", 10.0)
    entry.ended = 10.001
    entry.wall = WALL
    entry.status = 200
    entry.method = b"GET"
    entry.path = b"/items"
    entry.query = query
    entry.request_id = f"req-{number}".encode()
    return entry


def ids(data: bytes) -> list[str]:
    """The request ids of the lines in ``data``, each line checked to be one JSON object."""
    assert data.endswith(b"\n") or not data
    found = []
    for line in data.splitlines():
        value = json.loads(line)
        assert isinstance(value, dict)
        found.append(value["request_id"])
    return found


def expected(numbers: range) -> list[str]:
    return [f"req-{number}" for number in numbers]


class StalledSink:
    """A stream whose writes block in the writer's thread until ``release`` is set; the first
    blocked write sets ``entered`` (a trio event, from that thread)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = trio.Event()
        self.data = bytearray()

    def write(self, data: bytes, /) -> int:
        if not self.release.is_set():
            trio.from_thread.run_sync(self.entered.set)
            self.release.wait(30)  # a bound for a broken test, not synchronisation
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class FailingSink:
    """Raises ``OSError`` on its first ``failures`` writes, then keeps what it is given."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.data = bytearray()

    def write(self, data: bytes, /) -> int:
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


async def test_lines_arrive_in_order_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    access_log = AccessLog(str(path), 1000)  # room for every line: none may be dropped here
    async with trio.open_nursery() as nursery:
        await nursery.start(access_log.run)
        number = 0
        for burst in (1, 7, 60, 100, 3):
            for _ in range(burst):
                access_log.submit(record(number))
                number += 1
            # Lets the writer take what is queued (one batch) while earlier ones are written.
            await trio.lowlevel.checkpoint()
        await access_log.flush()
        assert ids(path.read_bytes()) == expected(range(number))
        await access_log.aclose()
    assert (access_log.written, access_log.dropped) == (number, 0)


async def test_the_file_is_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_bytes(b'{"request_id":"earlier"}\n')
    access_log = AccessLog(str(path), 100)
    async with trio.open_nursery() as nursery:
        await nursery.start(access_log.run)
        access_log.submit(record(0))
        await access_log.aclose()
    assert ids(path.read_bytes()) == ["earlier", "req-0"]


async def test_stdout_mode_writes_to_the_stream() -> None:
    stream = io.BytesIO()
    access_log = AccessLog("", 100, stream=stream)
    async with trio.open_nursery() as nursery:
        await nursery.start(access_log.run)
        for number in range(5):
            access_log.submit(record(number))
        await access_log.flush()
        assert ids(stream.getvalue()) == expected(range(5))
        await access_log.aclose()
    assert not stream.closed  # stdout is not the log's to close


async def test_stdout_mode_defaults_to_sys_stdout(
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    access_log = AccessLog("", 100)
    async with trio.open_nursery() as nursery:
        await nursery.start(access_log.run)
        access_log.submit(record(1))
        await access_log.aclose()
    assert ids(capfdbinary.readouterr().out) == ["req-1"]


async def test_include_query_can_change_while_running() -> None:
    stream = io.BytesIO()
    access_log = AccessLog("", 100, stream=stream)
    async with trio.open_nursery() as nursery:
        await nursery.start(access_log.run)
        access_log.submit(record(0, query=b"a=1"))
        access_log.include_query = True
        access_log.submit(record(1, query=b"b=2"))
        await access_log.aclose()
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "query" not in first
    assert second["query"] == "b=2"


async def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    sink = StalledSink()
    drops: list[int] = []
    access_log = AccessLog("", 100, stream=sink, on_drop=drops.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(access_log.run)
        access_log.submit(record(0))
        await sink.entered.wait()  # the writer holds line 0 and is stuck writing it
        for number in range(1, 108):  # 100 fit in the queue, 7 do not
            access_log.submit(record(number))
        assert access_log.dropped == 7
        assert sum(drops) == 7
        sink.release.set()
        await access_log.flush()
        assert access_log.written == 101
        await access_log.aclose()
    assert ids(bytes(sink.data)) == expected(range(101))


async def test_submit_takes_bounded_time_while_the_writer_is_stuck() -> None:
    sink = StalledSink()
    access_log = AccessLog("", 100, stream=sink)
    async with trio.open_nursery() as nursery:
        await nursery.start(access_log.run)
        access_log.submit(record(0))
        await sink.entered.wait()
        entry = record(1)
        slowest = 0.0
        begin = time.perf_counter()
        for _ in range(20_000):
            start = time.perf_counter()
            access_log.submit(entry)
            slowest = max(slowest, time.perf_counter() - start)
        total = time.perf_counter() - begin
        # Generous bounds for a loaded 2-core machine (a preempted submit can look slow): a
        # submit that waited for the stuck writer would never return. The drops say each one
        # gave up at once.
        assert slowest < 1.0
        assert total < 10.0
        assert access_log.dropped == 20_000 - 100
        sink.release.set()
        await access_log.aclose()
    assert access_log.written == 101


async def test_reopen_after_rename_writes_to_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    access_log = AccessLog(str(path), 100)
    async with trio.open_nursery() as nursery:
        await nursery.start(access_log.run)
        for number in range(3):
            access_log.submit(record(number))
        await access_log.flush()
        path.rename(rotated)  # logrotate
        access_log.reopen()  # SIGHUP
        await access_log.flush()  # the writer reopens with no line pending
        assert path.exists()
        assert path.read_bytes() == b""
        for number in range(3, 5):
            access_log.submit(record(number))
        await access_log.aclose()
    assert ids(rotated.read_bytes()) == expected(range(3))
    assert ids(path.read_bytes()) == expected(range(3, 5))


async def test_a_failed_reopen_keeps_writing_to_the_old_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "logs" / "access.log"
    path.parent.mkdir()
    access_log = AccessLog(str(path), 100)
    with caplog.at_level(logging.ERROR, logger="a3s_gateway.accesslog"):
        async with trio.open_nursery() as nursery:
            await nursery.start(access_log.run)
            access_log.submit(record(0))
            await access_log.flush()
            path.parent.rename(tmp_path / "old")  # the directory is gone: reopen fails
            access_log.reopen()
            access_log.submit(record(1))
            await access_log.aclose()
    assert ids((tmp_path / "old" / "access.log").read_bytes()) == expected(range(2))
    assert access_log.dropped == 0
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "cannot reopen" in caplog.records[0].getMessage()


async def test_reopen_in_stdout_mode_changes_nothing() -> None:
    stream = io.BytesIO()
    access_log = AccessLog("", 100, stream=stream)
    async with trio.open_nursery() as nursery:
        await nursery.start(access_log.run)
        access_log.submit(record(0))
        access_log.reopen()
        access_log.submit(record(1))
        await access_log.aclose()
    assert ids(stream.getvalue()) == expected(range(2))


async def test_aclose_writes_what_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    access_log = AccessLog(str(path), 500)
    async with trio.open_nursery() as nursery:
        await nursery.start(access_log.run)
        for number in range(400):
            access_log.submit(record(number))
        await access_log.aclose()  # no flush first
        await access_log.aclose()  # idempotent
    assert ids(path.read_bytes()) == expected(range(400))
    assert (access_log.written, access_log.dropped) == (400, 0)
    access_log.submit(record(400))  # after close: counted, never raised
    assert access_log.dropped == 1


async def test_aclose_is_bounded_when_the_writer_is_stuck(autojump_clock: trio.abc.Clock) -> None:
    del autojump_clock  # only the stuck thread runs meanwhile: virtual time may jump
    sink = StalledSink()
    drops: list[int] = []
    access_log = AccessLog("", 100, stream=sink, on_drop=drops.append)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(access_log.run)
            for number in range(10):
                access_log.submit(record(number))
            start = trio.current_time()
            await access_log.aclose()
            assert trio.current_time() - start == pytest.approx(CLOSE_GRACE)
    finally:
        sink.release.set()
    assert access_log.written == 0
    assert access_log.dropped == 10
    assert sum(drops) == 10


async def test_a_write_error_drops_the_batch_logs_once_and_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = FailingSink(failures=2)
    drops: list[int] = []
    access_log = AccessLog("", 100, stream=sink, on_drop=drops.append)
    with caplog.at_level(logging.WARNING, logger="a3s_gateway.accesslog"):
        async with trio.open_nursery() as nursery:
            await nursery.start(access_log.run)
            number = 0
            for burst in (3, 4, 5):  # one batch each: the first two fail
                for _ in range(burst):
                    access_log.submit(record(number))
                    number += 1
                await access_log.flush()
            await access_log.aclose()
    assert ids(bytes(sink.data)) == expected(range(7, 12))
    assert (access_log.written, access_log.dropped) == (5, 7)
    assert drops == [3, 4]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1  # the second failure within 10 s is suppressed
    assert "3 line(s) dropped" in messages[0]
    assert "No space left on device" in messages[0]


async def test_queue_full_warnings_come_at_most_every_10_seconds(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    del autojump_clock
    access_log = AccessLog("", 1, stream=io.BytesIO())  # no writer: the queue stays full
    with caplog.at_level(logging.WARNING, logger="a3s_gateway.accesslog"):
        access_log.submit(record(0))  # queued
        for number in range(1, 4):
            access_log.submit(record(number))  # dropped: one warning, two suppressed
        await trio.sleep(9.9)
        access_log.submit(record(4))  # still within 10 s: suppressed
        await trio.sleep(0.2)
        access_log.submit(record(5))  # warns again, counting the three suppressed
    assert access_log.dropped == 5
    assert [r.getMessage() for r in caplog.records] == [
        "access log queue full: line dropped (0 more since the last warning)",
        "access log queue full: line dropped (3 more since the last warning)",
    ]
    await access_log.aclose()  # never started: what is queued counts as dropped
    assert access_log.dropped == 6


async def test_a_file_that_cannot_be_opened_fails_open_and_run(tmp_path: Path) -> None:
    access_log = AccessLog(str(tmp_path / "missing" / "access.log"), 100)
    with pytest.raises(FileNotFoundError):
        await access_log.open()
    with pytest.raises(FileNotFoundError):
        await access_log.run()  # before reporting started: ``nursery.start`` raises it
    await access_log.aclose()
    access_log.submit(record(0))
    assert access_log.dropped == 1


async def test_writes_to_a_pipe_stay_within_pipe_buf() -> None:
    class RecordingFile(io.FileIO):
        sizes: list[int]

        def write(self, data: bytes, /) -> int:  # type: ignore[override]  # narrower: bytes only
            self.sizes.append(len(data))
            return super().write(data)

    read_fd, write_fd = os.pipe()
    sink = RecordingFile(write_fd, "wb")
    sink.sizes = []
    access_log = AccessLog("", 200, stream=sink)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(access_log.run)
            for number in range(150):  # about 40 KiB: fits the pipe without a reader
                access_log.submit(record(number))
            await access_log.aclose()
        sink.close()
        data = b""
        while chunk := os.read(read_fd, 65536):
            data += chunk
    finally:
        os.close(read_fd)
        if not sink.closed:
            sink.close()
    assert ids(data) == expected(range(150))
    assert len(sink.sizes) > 1
    assert max(sink.sizes) <= select.PIPE_BUF


def test_pipe_chunks_cut_only_between_lines() -> None:
    lines = [b"a" * 10 + b"\n", b"b" * 30 + b"\n", b"c" * 5 + b"\n", b"d" * 100 + b"\n", b"e\n"]
    chunks = pipe_chunks(lines, 45)
    assert b"".join(chunks) == b"".join(lines)
    assert chunks == [lines[0] + lines[1], lines[2], lines[3], lines[4]]
    assert pipe_chunks([], 45) == []


def test_the_config_chooses_the_access_log() -> None:
    default = access_log_for(Observability())
    assert isinstance(default, AccessLog)
    assert default.enabled
    assert default.include_query is False
    with_query = access_log_for(Observability(access_log_include_query=True))
    assert with_query.include_query is True
    assert not access_log_for(Observability(access_log_enabled=False)).enabled


async def test_a_disabled_access_log_does_nothing() -> None:
    access_log = access_log_for(Observability(access_log_enabled=False))
    assert isinstance(access_log, DisabledAccessLog)
    async with trio.open_nursery() as nursery:
        await access_log.open()
        await nursery.start(access_log.run)
        access_log.submit(record(0))
        access_log.reopen()
        await access_log.flush()
        await access_log.aclose()
    assert (access_log.written, access_log.dropped) == (0, 0)


def test_the_buffer_must_hold_a_line() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AccessLog("", 0)
