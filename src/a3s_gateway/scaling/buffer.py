"""The scale-from-zero request buffer of one service in one process (SPEC §11.5, the activator
role): a bounded FIFO of requests that found no backend (none available, or all at capacity,
§7.9 step 5), released when a backend becomes available or capacity frees.

Ring 1 (trio). Nurseries: none; each waiter waits in its own request's task. Deadlines: one per
ticket, ``buffer_timeout_secs`` after it was taken (``Ticket.deadline``), applied by a
``trio.move_on_at`` around each ``Ticket.wait``; this is the only place that timeout lives, and
a requeue keeps it. Time comes from trio's clock only.

Must not: choose backends, poke the autoscaler, answer HTTP, read the request body, log or
count metrics itself: ``on_result`` reports how each ticket ended (the caller counts
``a3s_scale_buffer_results_total`` and maps the exceptions to 503/504), ``on_change``
reports the depth (``a3s_scale_buffer_queued``, SPEC §9.1; and the concurrency, §11.2).

Theory of operation
-------------------
A request takes a ``Ticket`` (``ScaleBuffer.ticket``), which puts it at the tail of the queue,
and enters it as an async context manager; ``wait`` returns once the ticket is released. Each
ticket is in one of three phases::

    WAITING ──(release reaches it at the head)──────────────────────▶ RELEASED
    RELEASED ──(requeue: the selection found nothing)──────────────▶ WAITING (back at the head)
    WAITING ──(deadline, close, or leaving the context)────────────▶ ENDED
    RELEASED ──(leaving the context)───────────────────────────────▶ ENDED

and ends with exactly one ``BufferResult``: ``timeout`` (``wait`` raised ``BufferTimeout``),
``shutdown`` (``close``; ``wait`` raises ``BufferClosed``), ``cancelled`` (left the context
while waiting, e.g. the client went away) or ``released`` (left the context after ``wait``
returned). Refused tickets count too: ``overflow`` (``BufferFull``) and ``shutdown``
(``BufferClosed`` from ``ticket`` on a closed buffer).

The queue stays ordered by arrival: a requeued ticket goes back in front of every ticket that
arrived after it — the head, unless a ticket released with it and older than it went back
first, which then stays ahead. So ``release(n)`` always wakes the ``n`` oldest waiters.

Races, each resolved so no release is lost: a ticket released at its deadline was released
(``wait`` returns); a ticket released after its task was cancelled but before the task saw
it (the release never reached ``wait``) ends ``cancelled`` and hands the release to the next
waiter. The depth is the number of waiting tickets; a released ticket is not waiting, so a
requeue may take the depth past ``size`` for a moment (it was admitted already and is never
refused).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import TYPE_CHECKING, Final, assert_never

import trio

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

#: ``BufferClosed.reason`` when the gateway drains (SPEC §11.5).
SHUTTING_DOWN: Final = "shutting down"
#: ``BufferClosed.reason`` when a reload removed the service (SPEC §11.5).
NO_AVAILABLE_BACKEND: Final = "no available backend"


class BufferResult(enum.Enum):
    """How a request's stay in the buffer ended (the ``result`` label)."""

    RELEASED = "released"
    TIMEOUT = "timeout"
    OVERFLOW = "overflow"
    SHUTDOWN = "shutdown"
    CANCELLED = "cancelled"


class BufferFull(Exception):  # noqa: N818 -- an outcome (503), name fixed by the scaling contract
    """The queue already holds ``size`` waiters (503 ``request buffer full``)."""


class BufferTimeout(Exception):  # noqa: N818 -- an outcome (504), name fixed by the scaling contract
    """``buffer_timeout_secs`` passed before a backend was found (504)."""


class BufferClosed(Exception):  # noqa: N818 -- a state of the buffer, like trio.ClosedResourceError
    """The buffer was closed; ``reason`` is the 503's error text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Phase(enum.Enum):
    WAITING = "waiting"
    RELEASED = "released"
    ENDED = "ended"


def _ignore_result(result: BufferResult) -> None:
    """The default ``on_result``: nothing counts."""


def _ignore_depth(depth: int) -> None:
    """The default ``on_change``: nothing watches the depth."""


class Ticket:
    """One request's place in a ``ScaleBuffer``; use as ``async with buffer.ticket() as t``.

    ``deadline`` is when ``wait`` gives up (trio's clock); ``serial`` orders tickets by arrival;
    ``result`` is ``None`` until the ticket ended.
    """

    __slots__ = ("_buffer", "_delivered", "_event", "_phase", "_result", "deadline", "serial")

    def __init__(self, buffer: ScaleBuffer, serial: int, deadline: float) -> None:
        self._buffer = buffer
        self.serial = serial
        self.deadline = deadline
        self._phase = _Phase.WAITING
        self._event = trio.Event()
        #: ``wait`` returned since the last release: the request has it.
        self._delivered = False
        self._result: BufferResult | None = None

    @property
    def result(self) -> BufferResult | None:
        """How the ticket ended, once it has."""
        return self._result

    @property
    def waiting(self) -> bool:
        """In the queue: neither released (since the last requeue) nor ended."""
        return self._phase is _Phase.WAITING

    async def __aenter__(self) -> Ticket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._buffer._leave(self)

    async def wait(self) -> None:
        """Return once released (at once if released already). A checkpoint.

        Raises ``BufferTimeout`` once the deadline has passed while waiting, ``BufferClosed``
        when the buffer is closed; ``trio.Cancelled`` passes through (leaving the context then
        counts the ticket ``cancelled``).
        """
        with trio.move_on_at(self.deadline):
            await self._event.wait()
        match self._phase:
            case _Phase.RELEASED:
                self._delivered = True
            case _Phase.WAITING:  # only the deadline ends the wait without an event
                self._buffer._time_out(self)
                raise BufferTimeout
            case _Phase.ENDED:
                raise self._ended_error()
            case _:
                assert_never(self._phase)

    def requeue(self) -> None:
        """Back to the queue, ahead of every later arrival, keeping the deadline: the released
        request found no backend. On a closed buffer the ticket ends ``shutdown`` instead (the
        next ``wait`` raises ``BufferClosed``).

        Raises ``RuntimeError`` unless the ticket is released.
        """
        if self._phase is not _Phase.RELEASED:
            raise RuntimeError(
                f"only a released ticket can be requeued, not a {self._phase.value} one"
            )
        self._phase = _Phase.WAITING
        self._delivered = False
        self._event = trio.Event()
        self._buffer._requeue(self)

    def _release(self) -> None:
        self._phase = _Phase.RELEASED
        self._event.set()

    def _finish(self, result: BufferResult) -> None:
        self._phase = _Phase.ENDED
        self._result = result
        self._event.set()

    def _ended_error(self) -> Exception:
        match self._result:
            case BufferResult.TIMEOUT:
                return BufferTimeout()
            case BufferResult.SHUTDOWN:
                return BufferClosed(self._buffer.closed or SHUTTING_DOWN)
            case _:
                return RuntimeError("the ticket has left the buffer")


class ScaleBuffer:
    """The FIFO of one service's waiting requests in this process (see the module docstring).

    ``size`` and ``timeout`` apply to tickets taken from then on (a reload may assign them).
    ``on_result`` is called once per ticket (and per refusal) with how it ended; ``on_change``
    with the new depth whenever the depth changes. Both are called synchronously from whichever
    task made the change.
    """

    __slots__ = (
        "_closed",
        "_on_change",
        "_on_result",
        "_queue",
        "_reported",
        "_serial",
        "size",
        "timeout",
    )

    def __init__(
        self,
        *,
        size: int,
        timeout: float,
        on_result: Callable[[BufferResult], None] = _ignore_result,
        on_change: Callable[[int], None] = _ignore_depth,
    ) -> None:
        self.size = size
        self.timeout = timeout
        self._on_result = on_result
        self._on_change = on_change
        self._queue: deque[Ticket] = deque()
        self._serial = 0
        self._closed: str | None = None
        self._reported = 0

    @property
    def depth(self) -> int:
        """The number of waiting tickets."""
        return len(self._queue)

    @property
    def closed(self) -> str | None:
        """The reason given to ``close``; ``None`` while open."""
        return self._closed

    def ticket(self) -> Ticket:
        """A new ticket at the tail of the queue; its deadline is now + ``timeout``.

        Raises ``BufferFull`` (counted ``overflow``) when ``size`` tickets wait already, and
        ``BufferClosed`` (counted ``shutdown``) once the buffer is closed. Not a checkpoint.
        """
        if self._closed is not None:
            self._on_result(BufferResult.SHUTDOWN)
            raise BufferClosed(self._closed)
        if len(self._queue) >= self.size:
            self._on_result(BufferResult.OVERFLOW)
            raise BufferFull
        self._serial += 1
        ticket = Ticket(self, self._serial, trio.current_time() + self.timeout)
        self._queue.append(ticket)
        self._changed()
        return ticket

    def release(self, count: int | None = None) -> None:
        """Wake the ``count`` oldest waiters (all when ``None``), in FIFO order. Not a
        checkpoint; callable from any task of the run."""
        wake = len(self._queue) if count is None else min(count, len(self._queue))
        for _ in range(wake):
            self._queue.popleft()._release()
        self._changed()

    def close(self, reason: str) -> None:
        """End every waiter with ``BufferClosed(reason)`` (counted ``shutdown``), and refuse
        later tickets so. Released tickets keep their backend; one that requeues ends
        ``shutdown``. A second close changes nothing."""
        if self._closed is not None:
            return
        self._closed = reason
        while self._queue:
            self._end(self._queue.popleft(), BufferResult.SHUTDOWN)
        self._changed()

    def _requeue(self, ticket: Ticket) -> None:
        if self._closed is not None:
            self._end(ticket, BufferResult.SHUTDOWN)
            return
        # Ahead of every later arrival: the queue stays ordered by serial.
        index = next(
            (at for at, waiting in enumerate(self._queue) if waiting.serial > ticket.serial),
            len(self._queue),
        )
        self._queue.insert(index, ticket)
        self._changed()

    def _time_out(self, ticket: Ticket) -> None:
        self._queue.remove(ticket)
        self._end(ticket, BufferResult.TIMEOUT)
        self._changed()

    def _leave(self, ticket: Ticket) -> None:
        """``ticket``'s context is left: it ends now unless it has already."""
        match ticket._phase:
            case _Phase.WAITING:
                self._queue.remove(ticket)
                self._end(ticket, BufferResult.CANCELLED)
                self._changed()
            case _Phase.RELEASED if ticket._delivered:
                self._end(ticket, BufferResult.RELEASED)
            case _Phase.RELEASED:
                # Released after its task was cancelled (or while it never waited): the
                # release never reached the request, so the next waiter gets it.
                self._end(ticket, BufferResult.CANCELLED)
                self.release(1)
            case _Phase.ENDED:
                pass
            case _:
                assert_never(ticket._phase)

    def _end(self, ticket: Ticket, result: BufferResult) -> None:
        ticket._finish(result)
        self._on_result(result)

    def _changed(self) -> None:
        depth = len(self._queue)
        if depth != self._reported:
            self._reported = depth
            self._on_change(depth)
