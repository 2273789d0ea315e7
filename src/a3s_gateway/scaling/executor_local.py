"""The ``local`` executor (SPEC §11.9): a development executor that keeps N child processes of
``local.command``, replica ``i`` on port ``base_port + i`` (``{port}`` in each argument, and the
``PORT`` environment variable; ``{python}`` is the gateway's own interpreter), whose URLs
``http://127.0.0.1:<port>`` are the service's backends.

Ring 1. Nursery: ``run`` owns one for the executor's life; every child's supervisor (waits for
its exit, logs its output) and every stopper (SIGKILL after ``stop_timeout``) runs in it, so the
children are owned by ``run``. ``scale`` does not touch processes itself: it hands an order to
``run`` over an unbuffered channel and waits for the answer, at most ``ANSWER_WAIT``. Deadlines:
``stop_timeout`` between SIGTERM and SIGKILL (scale-down, ``aclose`` and the end of ``run``),
then ``KILL_WAIT`` for the kill to be reaped; the end of ``run`` and ``aclose`` are shielded
and bounded by those two.

Theory of operation: replica slots are the indexes ``i``; starting takes the lowest free slot (a
stopping child keeps its slot, and its port, until it has exited); scaling down stops the
newest children first. A child that exits on its own is removed and logged at warning with its
exit code; the autoscaler loop sees the lower count at its next tick and scales up again.
Child output (stdout and stderr, one pipe) is logged at info through the executor's logger,
line by line, prefixed ``[<service>#<i> :<port>] ``, lines cut at ``MAX_LINE`` bytes,
undecodable bytes replaced.

Must not: let a child outlive ``run`` or ``aclose`` (every child is waited for, so none is left
a zombie either), start a child outside ``run``'s nursery, or block the loop while it waits.
Children stay in the gateway's process group, so a terminal's Ctrl-C reaches them too.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.scaling.executor_http import Current, ExecutorError, ScaleResult

if TYPE_CHECKING:
    import logging
    from collections.abc import Iterable, Mapping

    from a3s_gateway.config.schema_services import LocalExecutor as LocalSettings

__all__ = ["ANSWER_WAIT", "KILL_WAIT", "MAX_LINE", "LocalExecutor"]

#: How long ``scale`` waits for ``run`` to carry out its order.
ANSWER_WAIT: Final = 10.0
#: How long a SIGKILLed child may take to be reaped.
KILL_WAIT: Final = 5.0
#: Longest logged line of child output, in bytes; a longer one is logged in pieces.
MAX_LINE: Final = 4096
#: How long the output of an exited child is still read (a grandchild may hold the pipe).
_DRAIN_WAIT: Final = 1.0
_READ_SIZE: Final = 65536
_HOST: Final = "127.0.0.1"


@dataclass(eq=False)
class _Child:
    """One child process in replica slot ``slot``; ``serial`` orders children by start."""

    slot: int
    port: int
    serial: int
    process: trio.Process
    stopping: bool = False
    gone: bool = False


@dataclass(eq=False)
class _Order:
    """What ``scale`` asks ``run`` for, and the answer ``run`` fills in before ``done``."""

    desired: int
    done: trio.Event = field(default_factory=trio.Event)
    live: int = 0
    message: str = ""
    error: str | None = None


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class LocalExecutor:
    """Child processes as replicas of one service; see the module docstring."""

    name = "local"

    def __init__(
        self,
        service: str,
        settings: LocalSettings,
        *,
        environ: Mapping[str, str],
        log: logging.Logger,
        slots: int = 65535,
    ) -> None:
        self.service = service
        self._settings = settings
        #: ``max_replicas``: replica ``i`` uses port ``base_port + i`` only for ``i < slots``
        #: (the service's backends are those ports and no others).
        self._slots = slots
        self._environ = dict(environ)
        self._log = log
        self._children: dict[int, _Child] = {}
        self._serials = itertools.count()
        self._to_run, self._orders = trio.open_memory_channel[_Order](0)
        self._running = False
        self._closed = False

    # -- the interface ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Carry out ``scale`` orders and supervise the children until cancelled; then stop
        every child (SIGTERM, SIGKILL after ``stop_timeout``) and wait for it, shielded."""
        try:
            async with trio.open_nursery() as nursery:
                self._running = True
                task_status.started()
                async for order in self._orders:
                    await self._carry_out(nursery, order)
        finally:
            self._running = False
            with trio.CancelScope(shield=True):
                await self._terminate(list(self._children.values()), close_output=True)

    async def scale(self, service: str, desired: int, reason: str, *, current: int) -> ScaleResult:
        """Start or stop children until ``desired`` (negative counts as 0) are live; stops
        are signalled, not awaited. ``actual_replicas`` is the live count afterwards. Raises
        ``ExecutorError`` when ``run`` is not running, the executor is closed, or a child
        could not be started (those started before it stay)."""
        self._check(service)
        if self._closed or not self._running:
            state = "closed" if self._closed else "not running"
            raise ExecutorError(f"local executor of service {service} is {state}")
        self._log.debug(
            "local executor of service %s: %d -> %d replicas (%s)",
            service,
            current,
            max(0, desired),
            reason,
        )
        order = _Order(max(0, desired))
        with trio.move_on_after(ANSWER_WAIT):
            await self._to_run.send(order)
            await order.done.wait()
        if not order.done.is_set():
            message = f"local executor of service {service}: no answer within {ANSWER_WAIT:g} s"
            raise ExecutorError(message)
        if order.error is not None:
            raise ExecutorError(order.error)
        return ScaleResult(True, order.live, order.message)

    async def current(self, service: str) -> Current:
        """The live children (not stopping, not exited) and their URLs, sorted by port."""
        self._check(service)
        await trio.lowlevel.checkpoint()
        live = sorted(self._live(), key=lambda child: child.port)
        return Current(len(live), tuple(f"http://{_HOST}:{child.port}" for child in live))

    async def aclose(self) -> None:
        """Stop every child (SIGTERM, SIGKILL after ``stop_timeout``) and wait for it;
        shielded and bounded. Later ``scale`` calls raise ``ExecutorError``."""
        self._closed = True
        with trio.CancelScope(shield=True):
            await self._terminate(list(self._children.values()), close_output=False)

    # -- inside run -------------------------------------------------------------------------

    async def _carry_out(self, nursery: trio.Nursery, order: _Order) -> None:
        try:
            live = self._live()
            if self._closed:  # (``aclose`` ran while this order waited)
                order.error = f"local executor of service {self.service} is closed"
            elif order.desired > len(live):
                started = await self._start(nursery, order.desired - len(live), order)
                order.message = f"started {started}"
            elif order.desired < len(live):
                newest = sorted(live, key=lambda child: child.serial, reverse=True)
                for child in newest[: len(live) - order.desired]:
                    self._stop(nursery, child)
                order.message = f"stopping {len(live) - order.desired}"
            else:
                order.message = "no change"
            order.live = len(self._live())
        finally:
            order.done.set()

    async def _start(self, nursery: trio.Nursery, count: int, order: _Order) -> int:
        """Start ``count`` children in the lowest free slots; the number started. A failure
        is put in ``order.error`` and ends the round."""
        settings = self._settings
        for started in range(count):
            slot = next(i for i in itertools.count() if i not in self._children)
            port = settings.base_port + slot
            if port > 65535:
                order.error = f"local executor of {self.service}: no port for replica {slot}"
                return started
            if slot >= self._slots:
                # Every slot is taken, some by children still stopping: the next tick retries
                # once they have exited (a port outside the service's backends is never used).
                return started
            # ``{python}``: the gateway's own interpreter (its virtual environment's packages).
            argv = [
                part.replace("{port}", str(port)).replace("{python}", sys.executable)
                for part in settings.command
            ]
            env = {**self._environ, **settings.env, "PORT": str(port)}
            try:
                process = await trio.lowlevel.open_process(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=settings.cwd,
                )
            except OSError as error:
                # (``filename`` is the command or ``cwd``; the arguments may hold secrets)
                reason = error.strerror or type(error).__name__
                where = "" if error.filename is None else f" ({error.filename})"
                order.error = f"local executor: cannot start {argv[0]!r}: {reason}{where}"
                return started
            child = _Child(slot, port, next(self._serials), process)
            self._children[slot] = child
            self._log.info("%s: started", self._name(child))
            nursery.start_soon(self._supervise, child)
        return count

    def _stop(self, nursery: trio.Nursery, child: _Child) -> None:
        child.stopping = True
        self._log.info("%s: stopping (SIGTERM)", self._name(child))
        child.process.terminate()
        nursery.start_soon(self._kill_late, child)

    async def _kill_late(self, child: _Child) -> None:
        """SIGKILL ``child`` if it has not exited ``stop_timeout`` after its SIGTERM."""
        seconds = self._settings.stop_timeout.seconds
        with trio.move_on_after(seconds):
            await child.process.wait()
        if child.process.returncode is None:
            self._log.warning(
                "%s: still running %g s after SIGTERM; killing it", self._name(child), seconds
            )
            child.process.kill()

    async def _supervise(self, child: _Child) -> None:
        """Log ``child``'s output and forget it once it has exited."""
        async with trio.open_nursery() as output:
            output.start_soon(self._pump, child)
            await child.process.wait()
            self._forget(child)
            output.cancel_scope.deadline = trio.current_time() + _DRAIN_WAIT

    async def _pump(self, child: _Child) -> None:
        stream = child.process.stdout
        assert stream is not None  # (stdout=PIPE)
        prefix = self._prefix(child)
        pending = bytearray()
        try:
            while chunk := await stream.receive_some(_READ_SIZE):
                pending += chunk
                self._log_lines(prefix, pending, final=False)
            self._log_lines(prefix, pending, final=True)
        finally:
            await stream.aclose()

    def _log_lines(self, prefix: str, pending: bytearray, *, final: bool) -> None:
        """Log and remove the complete lines in ``pending`` (and pieces of ``MAX_LINE``
        bytes of a longer one); with ``final`` the rest too."""
        while pending:
            end = pending.find(b"\n", 0, MAX_LINE + 1)
            if end >= 0:
                line, taken = pending[:end], end + 1
            elif len(pending) >= MAX_LINE or final:
                line, taken = pending[:MAX_LINE], min(MAX_LINE, len(pending))
            else:
                return
            del pending[:taken]
            text = line.decode("utf-8", "replace").rstrip("\r")
            self._log.info("%s%s", prefix, text)

    # -- bookkeeping ------------------------------------------------------------------------

    async def _terminate(self, children: Iterable[_Child], *, close_output: bool) -> None:
        """SIGTERM every child, wait ``stop_timeout`` in all, SIGKILL the rest, wait for them
        (at most ``KILL_WAIT``), and forget them. ``close_output`` closes their output pipes
        (only once no supervisor reads them: at the end of ``run``). The caller shields."""
        children = list(children)
        for child in children:
            if not child.stopping and child.process.returncode is None:
                self._log.info("%s: stopping (SIGTERM)", self._name(child))
            child.stopping = True
            child.process.terminate()
        seconds = self._settings.stop_timeout.seconds
        with trio.move_on_after(seconds):
            for child in children:
                await child.process.wait()
        stubborn = [child for child in children if child.process.returncode is None]
        for child in stubborn:
            self._log.warning(
                "%s: still running %g s after SIGTERM; killing it", self._name(child), seconds
            )
            child.process.kill()
        with trio.move_on_after(KILL_WAIT):
            for child in stubborn:
                await child.process.wait()
        for child in children:
            if child.process.returncode is not None:
                self._forget(child)
            if close_output and child.process.stdout is not None:
                await child.process.stdout.aclose()

    def _forget(self, child: _Child) -> None:
        """Remove an exited child and log how it ended (once)."""
        if child.gone:
            return
        child.gone = True
        if self._children.get(child.slot) is child:
            del self._children[child.slot]
        ended = _exit_text(child.process.returncode)
        if child.stopping:
            self._log.info("%s: stopped (%s)", self._name(child), ended)
        else:
            self._log.warning("%s: exited unexpectedly (%s)", self._name(child), ended)

    def _live(self) -> list[_Child]:
        return [c for c in self._children.values() if not c.stopping and not c.gone]

    def _name(self, child: _Child) -> str:
        """How the executor's own log lines name a child."""
        pid = child.process.pid
        return f"local executor: replica {self.service}#{child.slot} (port {child.port}, pid {pid})"

    def _prefix(self, child: _Child) -> str:
        """The prefix of the child's own output lines."""
        return f"[{self.service}#{child.slot} :{child.port}] "

    def _check(self, service: str) -> None:
        if service != self.service:
            message = f"the local executor of service {self.service} was asked about {service}"
            raise ExecutorError(message)
