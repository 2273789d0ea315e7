"""The access-log writer: a bounded queue of lines and the task that writes them (SPEC §9.2).

Ring 1. ``AccessLog.submit`` runs in the request's task once its response went out: it encodes
the record (``observability/accesslog.py``, Ring 0) and hands the line to a trio memory channel
of ``access_log_buffer`` entries with ``send_nowait``. It never blocks and never raises; when
the queue is full the line is dropped and counted (``dropped``, the ``on_drop`` hook for
``a3s_access_log_dropped_total``, and a warning at most every 10 s, SPEC §9.3).

Encoding happens in ``submit``, not in the writer (measured by ``bench/micro/accesslog_bench``):
it costs a few microseconds per request either way, but done by the writer it would come in
bursts (a backlog of 10 000 records is tens of milliseconds in one go on the event loop,
stalling every connection), the queue would hold mutable records instead of immutable bytes,
and lines could not be sized for pipe-atomic writes. Dropping after encoding wastes that cost
only while the log is already overloaded.

``run`` is the writer task: it takes everything queued (one batch), and writes the batch with
one write (``trio.to_thread.run_sync``, its own one-thread limiter) to the file opened in
append mode, or to stdout for ``path == ""``. Stdout goes through the thread too: a stalled
pipe reader (a container log collector) must not block the event loop. When the sink is a
FIFO, writes are cut at line boundaries into pieces of at most ``PIPE_BUF`` bytes, which POSIX
makes atomic, so the workers of ``run --workers N`` sharing one stdout pipe never interleave
inside a line (a single line longer than ``PIPE_BUF`` goes alone). A failed write drops that
batch (counted) and is logged at most every 10 s; the task keeps running. ``reopen`` (SIGHUP,
logrotate style) makes the writer open ``path`` again before its next write, so lines go to
the new file while the renamed one keeps what it had.

Lifecycle: ``open`` (optional, to report an unopenable file as a start error), ``run`` started
in the owner's root nursery with ``nursery.start``, ``submit`` per exchange, ``reopen`` on
SIGHUP, ``aclose`` once the connections are done. ``DisabledAccessLog`` has the same interface
and does nothing (``access_log_enabled = false``); ``access_log_for`` picks one from the config.

Nurseries and deadlines: owns no nursery (``run`` holds the cancel scope ``aclose`` may
cancel). ``aclose`` waits at most ``close_grace`` (2 s) for the queue to be written, then
abandons a stuck write (its lines count as dropped). Must not: write on the event loop
thread, wait for queue space, or close a stream it did not open (stdout).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import select
import stat
import sys
from typing import TYPE_CHECKING, Final, Protocol, TypeVar, TypeVarTuple

import trio

from a3s_gateway.observability.accesslog import encode_line

if TYPE_CHECKING:
    from collections.abc import Callable

    from a3s_gateway.config.schema import Observability
    from a3s_gateway.observability.record import ExchangeRecord

__all__ = [
    "CLOSE_GRACE",
    "LOG_EVERY",
    "AccessLog",
    "DisabledAccessLog",
    "LogSink",
    "access_log_for",
    "pipe_chunks",
]

log: Final = logging.getLogger("a3s_gateway.accesslog")

T = TypeVar("T")
Args = TypeVarTuple("Args")

#: How long ``aclose`` waits for the queue to be written.
CLOSE_GRACE: Final = 2.0
#: At most one warning per kind (queue full, write failed, open failed) this often (SPEC §9.3).
LOG_EVERY: Final = 10.0
#: Wakes the writer without a line (``reopen``); never written.
_WAKE: Final = b""


class LogSink(Protocol):
    """Where lines go: a buffered binary stream (``open(path, "ab")``, ``sys.stdout.buffer``)
    whose ``write`` takes all it is given (a raw ``FileIO`` may write part of it)."""

    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _open_append(path: str) -> LogSink:
    return open(path, "ab")  # closed by the writer task that opened it


def _stdout() -> LogSink:
    return sys.stdout.buffer


def pipe_chunks(lines: list[bytes], limit: int) -> list[bytes]:
    """``lines`` joined into pieces of at most ``limit`` bytes, cut only between lines (a
    longer line is a piece on its own); in order, nothing lost."""
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) > limit:
            chunks.append(b"".join(current))
            current = []
            size = 0
        current.append(line)
        size += len(line)
    if current:
        chunks.append(b"".join(current))
    return chunks


def _atomic_limit(sink: LogSink) -> int | None:
    """``PIPE_BUF`` when ``sink`` is a FIFO (writes up to it are atomic), else None."""
    if not isinstance(sink, io.IOBase):
        return None
    try:
        mode = os.fstat(sink.fileno()).st_mode
    except (OSError, ValueError):  # no descriptor (BytesIO), or closed
        return None
    return select.PIPE_BUF if stat.S_ISFIFO(mode) else None


def _write_chunks(sink: LogSink, chunks: list[bytes]) -> None:
    """In the writer's thread: each chunk is one write (flushed on its own)."""
    for chunk in chunks:
        sink.write(chunk)
        sink.flush()


def _swap(opener: Callable[[str], LogSink], path: str, old: LogSink) -> LogSink:
    """In the writer's thread: open ``path`` anew, then close ``old`` (its errors ignored:
    its lines were already flushed). Raises what ``opener`` raises, leaving ``old`` open."""
    new = opener(path)
    with contextlib.suppress(OSError, ValueError):
        old.close()
    return new


class _Throttle:
    """At most one message every ``LOG_EVERY`` seconds of trio's clock, counting the rest."""

    __slots__ = ("_next", "_suppressed")

    def __init__(self) -> None:
        self._next = float("-inf")
        self._suppressed = 0

    def allow(self) -> int | None:
        """The number suppressed since the last message when one may be logged now, else
        None (and one more is counted as suppressed)."""
        now = trio.current_time()
        if now < self._next:
            self._suppressed += 1
            return None
        self._next = now + LOG_EVERY
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed


class AccessLog:
    """The access log of one gateway process (see the module docstring).

    ``path`` is ``access_log_path`` (``""``: stdout), ``buffer`` the queue's capacity in lines.
    ``include_query`` may be changed at any time (a reload); ``dropped`` and ``written`` count
    lines. ``stream`` replaces stdout and ``opener`` replaces ``open(path, "ab")`` (tests).
    """

    __slots__ = (
        "_abandoned",
        "_accepted",
        "_atomic",
        "_close_grace",
        "_closed",
        "_drop_throttle",
        "_error_throttle",
        "_finished",
        "_handled",
        "_on_drop",
        "_open_throttle",
        "_opened",
        "_opener",
        "_owns_sink",
        "_path",
        "_progress",
        "_receive",
        "_reopen",
        "_reopen_asked",
        "_reopen_tried",
        "_scope",
        "_send",
        "_sink",
        "_started",
        "dropped",
        "include_query",
        "written",
    )

    #: The hot path's one check: ``if access_log.enabled: access_log.submit(record)``.
    enabled: Final = True

    def __init__(
        self,
        path: str,
        buffer: int,
        *,
        include_query: bool = False,
        on_drop: Callable[[int], object] | None = None,
        stream: LogSink | None = None,
        opener: Callable[[str], LogSink] = _open_append,
        close_grace: float = CLOSE_GRACE,
    ) -> None:
        if buffer < 1:
            raise ValueError(f"access log buffer must be at least 1 line, got {buffer}")
        self._path = path
        self.include_query = include_query
        self._on_drop = on_drop
        self._opener = opener
        self._close_grace = close_grace
        self._sink: LogSink = stream if stream is not None else _stdout()
        self._owns_sink = False
        self._atomic: int | None = None
        self._send, self._receive = trio.open_memory_channel[bytes](buffer)
        #: Lines written (the sink's ``write`` returned) and lines dropped, since creation.
        self.written = 0
        self.dropped = 0
        #: Lines queued by ``submit``, and lines the writer has written or dropped.
        self._accepted = 0
        self._handled = 0
        self._progress = trio.Event()
        self._finished = trio.Event()
        self._scope = trio.CancelScope()
        self._started = False
        self._closed = False
        self._opened = False
        #: A reopen is pending (retried before every write until one succeeds); ``reopen``
        #: calls so far, and how many of them the writer has acted on (for ``flush``).
        self._reopen = False
        self._reopen_asked = 0
        self._reopen_tried = 0
        self._abandoned = False
        self._drop_throttle = _Throttle()
        self._error_throttle = _Throttle()
        self._open_throttle = _Throttle()

    # --- the hot path ---------------------------------------------------------------------

    def submit(self, record: ExchangeRecord) -> None:
        """Queue ``record``'s line, or drop and count it when the queue is full or closed.

        Never blocks, never raises, not a checkpoint; call once per finished exchange.
        """
        try:
            self._send.send_nowait(encode_line(record, include_query=self.include_query))
        except trio.WouldBlock:
            self._drop(1)
            self._warn_full()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._drop(1)  # closed or shut down: the lines of the last exchanges only
        except Exception:  # encode_line never raises; a bug must still not reach the request
            self._drop(1)
            with contextlib.suppress(Exception):
                if self._error_throttle.allow() is not None:
                    log.exception("access log: could not queue a line")
        else:
            self._accepted += 1

    def _warn_full(self) -> None:
        with contextlib.suppress(Exception):  # outside trio.run (no clock): just counted
            suppressed = self._drop_throttle.allow()
            if suppressed is not None:
                log.warning(
                    "access log queue full: line dropped (%d more since the last warning)",
                    suppressed,
                )

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self._on_drop is not None:
            with contextlib.suppress(Exception):  # a metrics hook must not break the log
                self._on_drop(count)

    # --- control --------------------------------------------------------------------------

    def reopen(self) -> None:
        """Open ``path`` again before the next write (SIGHUP after logrotate renamed the file).

        No-op for stdout. Never blocks; the writer reopens even with no line pending.
        """
        if not self._path:
            return
        self._reopen = True
        self._reopen_asked += 1
        with contextlib.suppress(
            trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
        ):
            self._send.send_nowait(_WAKE)  # when full, the writer is busy and sees the flag

    async def flush(self) -> None:
        """Wait until every line submitted before this call has been written or dropped, and
        the writer has tried every ``reopen`` asked before it.

        Returns at once when the writer has ended. A checkpoint only when it waits.
        """
        lines, reopens = self._accepted, self._reopen_asked
        while (self._handled < lines or self._reopen_tried < reopens) and (
            not self._finished.is_set()
        ):
            await self._progress.wait()

    async def aclose(self) -> None:
        """Stop taking lines, let the writer write what is queued within ``close_grace``
        seconds, then cancel it (a write still running is abandoned, its lines counted as
        dropped) and close the file. Idempotent; a checkpoint."""
        if not self._closed:
            self._closed = True
            self._send.close()
        if not self._started:
            await trio.lowlevel.checkpoint()
            self._drop_queued()
            return
        with trio.move_on_after(self._close_grace):
            await self._finished.wait()
        if not self._finished.is_set():
            log.warning(
                "access log: not written within %.1f s of closing; dropping what is left",
                self._close_grace,
            )
            self._scope.cancel()
            await self._finished.wait()

    # --- the writer -----------------------------------------------------------------------

    async def open(self) -> None:
        """Open the file (in a thread; nothing to do for stdout). Raises ``OSError`` when it
        cannot be opened. Call it before starting the gateway's tasks to report that as a
        start error; ``run`` opens it otherwise. Idempotent; a checkpoint."""
        if self._opened or not self._path:
            await trio.lowlevel.checkpoint()
            return
        self._sink = await trio.to_thread.run_sync(self._opener, self._path)
        self._owns_sink = True
        self._opened = True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task; start it with ``nursery.start``, once.

        Opens the file first unless ``open`` did, raising ``OSError`` (before reporting
        started) if it cannot. Returns after ``aclose`` once the queue is written, or when
        cancelled (what is still queued then counts as dropped).
        """
        if self._started:
            raise RuntimeError("AccessLog.run may be started once")
        self._started = True
        limiter = trio.CapacityLimiter(1)
        try:
            await self.open()
            self._atomic = _atomic_limit(self._sink)
            with self._scope:
                task_status.started()
                async for first in self._receive:
                    batch = [first]
                    while True:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await self._write_batch(batch, limiter)
        finally:
            self._drop_queued()
            self._receive.close()
            if self._owns_sink and not self._abandoned:
                with contextlib.suppress(OSError, ValueError):
                    self._sink.close()
            self._finished.set()
            self._progress.set()

    async def _write_batch(self, batch: list[bytes], limiter: trio.CapacityLimiter) -> None:
        lines = [line for line in batch if line]  # without the ``_WAKE`` markers
        if self._reopen:
            await self._reopen_file(limiter)
        if lines:
            chunks = pipe_chunks(lines, self._atomic) if self._atomic else [b"".join(lines)]
            try:
                await self._in_thread(limiter, _write_chunks, self._sink, chunks)
            except trio.Cancelled:
                self._lost(len(lines))
                raise
            except (OSError, ValueError) as error:  # disk full, closed stream, EPIPE...
                self._lost(len(lines))
                suppressed = self._error_throttle.allow()
                if suppressed is not None:
                    log.error(
                        "access log write failed, %d line(s) dropped: %s "
                        "(%d similar message(s) suppressed)",
                        len(lines),
                        error,
                        suppressed,
                    )
            except Exception:  # a bug in a sink: logged with its traceback; the task goes on
                self._lost(len(lines))
                if self._error_throttle.allow() is not None:
                    log.exception("access log write failed, %d line(s) dropped", len(lines))
            else:
                self.written += len(lines)
                self._handled += len(lines)
        self._progress.set()
        self._progress = trio.Event()

    async def _reopen_file(self, limiter: trio.CapacityLimiter) -> None:
        asked = self._reopen_asked
        try:
            self._sink = await self._in_thread(limiter, _swap, self._opener, self._path, self._sink)
        except (OSError, ValueError) as error:
            self._reopen_tried = asked
            # Keep writing to the old (renamed) file rather than losing lines; retry next time.
            suppressed = self._open_throttle.allow()
            if suppressed is not None:
                log.error(
                    "access log: cannot reopen %s, still writing to the old file: %s "
                    "(%d similar message(s) suppressed)",
                    self._path,
                    error,
                    suppressed,
                )
            return
        self._reopen = False
        self._reopen_tried = asked
        self._atomic = _atomic_limit(self._sink)

    async def _in_thread(
        self, limiter: trio.CapacityLimiter, function: Callable[[*Args], T], *args: *Args
    ) -> T:
        """``function(*args)`` in the writer's thread. Cancellation abandons the thread (so
        ``aclose`` stays bounded when a disk hangs); the sink is then left to that thread
        rather than closed under it."""
        try:
            return await trio.to_thread.run_sync(
                function, *args, limiter=limiter, abandon_on_cancel=True
            )
        except trio.Cancelled:
            self._abandoned = True
            raise

    def _lost(self, count: int) -> None:
        self._drop(count)
        self._handled += count

    def _drop_queued(self) -> None:
        """Count what is still queued as dropped (the writer ended or never ran)."""
        left = 0
        while True:
            try:
                if self._receive.receive_nowait():
                    left += 1
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        if left:
            self._lost(left)


class DisabledAccessLog:
    """``access_log_enabled = false``: the interface of ``AccessLog``, doing nothing."""

    __slots__ = ("include_query",)

    enabled: Final = False
    dropped: Final = 0
    written: Final = 0

    def __init__(self) -> None:
        self.include_query = False

    def submit(self, record: ExchangeRecord) -> None:
        """Nothing; never raises."""

    def reopen(self) -> None:
        """Nothing."""

    async def open(self) -> None:
        """Nothing to open."""

    async def flush(self) -> None:
        """Nothing to wait for."""

    async def aclose(self) -> None:
        """Nothing to close; a checkpoint."""
        await trio.lowlevel.checkpoint()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reports started and returns."""
        task_status.started()


def access_log_for(
    observability: Observability, *, on_drop: Callable[[int], object] | None = None
) -> AccessLog | DisabledAccessLog:
    """The access log an ``observability {}`` block asks for (SPEC §3.14)."""
    if not observability.access_log_enabled:
        return DisabledAccessLog()
    return AccessLog(
        observability.access_log_path,
        observability.access_log_buffer,
        include_query=observability.access_log_include_query,
        on_drop=on_drop,
    )
