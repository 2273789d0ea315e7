"""The reload path (SPEC §10.1, §10.3): every source of a reload — the file watcher, SIGHUP,
``POST /reload`` — ends in ``Reloader.reload_now``.

Ring 1 (trio). ``Reloader.reload_now`` builds a candidate from the config file in a child
process (``providers/candidate.py``: parse, conf.d, checks; SPEC §3.1 keeps the parse off the
event loop), applies the command line's overrides (``prepare``: ``--listen``, a worker's
reserved ports), and hands a valid candidate to the target (``app.Gateway.reload``: compile,
bind new listeners, swap). A candidate with errors, a build that failed and a swap the target
refused (``GatewayError``, e.g. a bind failure) all keep the running config; every problem is
logged as ``reload rejected: …`` and the outcome says why. Reloads are serialised. Nothing is
logged or returned that quotes an interpolated value (SPEC §14.4): a candidate's problems come
redacted from the loader, and what the target says is redacted with the candidate's values.

Logged once (issue #13): an edit followed by a SIGHUP reaches ``reload_now`` twice
(the signal at once, the watcher after the debounce). A rejection whose files hold the same
bytes (``Candidate.digest``) and whose problems are the same as the previous rejection's is
not logged again, only noted in one line (``config still rejected``; the outcome, the
target's record and the metrics count it as usual); a new edit, even one with the same
problems, is reported in full, and any accepted reload starts afresh. A
candidate's warnings are logged once it is swapped in, not when it is skipped as unchanged or
refused; ``report_warnings=False`` (a worker of ``run --workers N``, whose supervisor has
already reported them) logs them at debug level only.

Debounce (SPEC §10.1): the watcher only pokes (``changed``); ``Debouncer`` runs one reload once
the pokes have been quiet for ``providers.file.debounce`` (trailing edge: a burst of writes is
one reload, and a write during a reload schedules another, so the last write is never missed),
or at the latest ten delays after a burst's first poke (a provider whose changes never stop
must not hold every reload back).
A debounced reload whose candidate equals the running config (``Config`` equality: the same
canonical tree, whatever the order of blocks in the files) is not swapped (``unchanged``). An
explicit request (SIGHUP, ``POST /reload``; ``force=True``) always swaps: it is how an operator
makes the gateway re-read what the config only names, such as certificate files.

Dynamic providers (SPEC §10.1, §10.4-10.6): ``hub`` (``providers/provider_hub.py``) runs the
DNS, discovery and Kubernetes providers the running config enables (``run`` starts it; every swap
re-applies the settings) and pokes ``changed`` when a snapshot changes, so their changes are
debounced with the file's. Every candidate is the static files merged with the latest
snapshots (``ProviderHub.merge``: static objects win, an invalid provider object is dropped
with a warning, pending references are left out), after ``prepare``. Warnings are logged when
they change, not at every swap: a DNS answer changing every few seconds must not repeat the
static config's warnings each time.

``run`` watches the file with ``providers/file.py`` when ``providers.file.watch`` is true,
re-targets the watcher when a reload changes ``providers.file.directory`` or ``watch``, and owns
the builder child's lifetime.

Nurseries: ``run`` owns one (the debouncer, the watcher, the builder's warm-up, the hub). Deadlines:
the builder's per-build bound. Must not: parse on the event loop, or swap configs itself.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol

import trio

from a3s_gateway.config.problems import Problem
from a3s_gateway.config.schema import FileProvider as FileSettings
from a3s_gateway.config.schema import redactor_of
from a3s_gateway.errors import ConfigError, GatewayError
from a3s_gateway.providers.candidate import BuildError, Candidate, CandidateBuilder
from a3s_gateway.providers.file import FileProvider, Source, WatchTargets
from a3s_gateway.providers.provider_hub import ProviderHub

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from a3s_gateway.config.schema import Config

__all__ = ["Builder", "Debouncer", "ReloadOutcome", "ReloadResult", "ReloadTarget", "Reloader"]

log: Final = logging.getLogger("a3s_gateway.reload")

ReloadResult = Literal["ok", "error", "unchanged"]
_DEFAULTS: Final = FileSettings()


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What one reload attempt did.

    ``result``: ``ok`` (swapped), ``unchanged`` (the candidate equals the running config; not
    swapped) or ``error`` (the running config stays). ``generation``: the generation serving
    afterwards. ``warnings``: the candidate's warnings. ``problems``: why it was rejected
    (config errors, or one problem naming the build or swap failure).
    """

    result: ReloadResult
    generation: int
    warnings: tuple[Problem, ...] = ()
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        """True unless the reload was rejected."""
        return self.result != "error"


class _Generation(Protocol):
    @property
    def config_generation(self) -> int: ...


class ReloadTarget(Protocol):
    """What a reload is applied to: ``app.Gateway``, or the multi-worker supervisor."""

    def config(self) -> Config:
        """The running config (overrides applied)."""

    async def reload(self, config: Config) -> int:
        """Swap in ``config``; the new generation. Raises ``GatewayError`` (nothing changed)."""

    def record_failed_reload(self, problem_count: int) -> None:
        """Note a candidate rejected before ``reload`` was called."""

    def health(self) -> _Generation:
        """Anything with the running ``config_generation``."""


class Builder(Protocol):
    """Builds candidates off the event loop: ``CandidateBuilder`` (tests pass fakes)."""

    async def build(self, path: str, *, workers: int = 1) -> Candidate:
        """Load and check ``path``. Raises ``BuildError``."""

    async def start(self) -> None:
        """Get ready for the first build (start a child process)."""

    async def aclose(self) -> None:
        """Release what ``start`` took. Idempotent."""


#: A burst of changes that never goes quiet (endpoints churning, short DNS TTLs) is applied
#: at the latest this many debounce delays after its first change, so it cannot hold every
#: reload back (SPEC §10.1's trailing edge, bounded).
MAX_WAIT_FACTOR: Final = 10


class Debouncer:
    """Trailing-edge debounce: ``poke()`` marks a change; ``run(action)`` calls ``action`` once
    no poke came for ``delay`` seconds, or ``MAX_WAIT_FACTOR`` delays after the first poke of a
    burst that never goes quiet. A poke while ``action`` runs leads to one more call."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._last = -math.inf
        #: When the first poke of the current burst came (``inf``: no burst).
        self._first = math.inf
        self._poked = trio.Event()
        #: Actions started so far.
        self.fired = 0

    def poke(self) -> None:
        """A change happened now (call from inside trio)."""
        self._last = trio.current_time()
        self._first = min(self._first, self._last)
        self._poked.set()

    async def run(self, action: Callable[[], Awaitable[object]]) -> None:
        """Call ``action`` after every quiet period that follows pokes, until cancelled."""
        while True:
            await self._poked.wait()
            # Sleep until the last poke is ``delay`` old; a poke meanwhile moves the goal, but
            # never past ``MAX_WAIT_FACTOR`` delays after the burst's first poke.
            while True:
                due = min(self._last + self.delay, self._first + self.delay * MAX_WAIT_FACTOR)
                if due <= trio.current_time():
                    break
                await trio.sleep_until(due)
            self._poked = trio.Event()
            self._first = math.inf
            self.fired += 1
            await action()


@dataclass(frozen=True, slots=True)
class _WatchSettings:
    watch: bool
    directory: str | None


def _formatted(problems: tuple[Problem, ...]) -> tuple[str, ...]:
    return tuple(problem.format() for problem in problems)


def _file_settings(config: Config) -> FileSettings:
    providers = config.providers
    if providers is None or providers.file is None:
        return _DEFAULTS
    return providers.file


class Reloader:
    """The one reload path of a gateway (module docstring).

    ``target``: what reloads are applied to. ``path``: the config file, as given on the command
    line (problems name it that way). ``workers``: for the checks that depend on it.
    ``prepare``: applied to every candidate (``--listen``, reserved ports). ``watch``: whether
    ``run`` may watch the file at all (the config's ``providers.file.watch`` decides next).
    ``warm``: start the builder child when ``run`` starts (and have it load the file once)
    rather than at the first reload. ``report_warnings``: log a swapped candidate's warnings
    (False: at debug level only; module docstring). ``hub``: the dynamic providers (a new
    ``ProviderHub`` when not given; the caller passes its own when it merged the first config
    with it).
    ``builder`` and ``source`` are for tests.
    """

    def __init__(
        self,
        target: ReloadTarget,
        path: str,
        *,
        workers: int = 1,
        prepare: Callable[[Config], Config] | None = None,
        watch: bool = True,
        warm: bool = True,
        report_warnings: bool = True,
        builder: Builder | None = None,
        source: Source | None = None,
        hub: ProviderHub | None = None,
    ) -> None:
        self._target = target
        self._path = path
        self._main_file = os.path.abspath(path)
        self._workers = workers
        self._prepare = prepare
        self._watch = watch
        self._warm = warm
        self._warning_level = logging.WARNING if report_warnings else logging.DEBUG
        #: The last rejection's digest and problems, while no reload has succeeded since.
        self._rejected: tuple[bytes, tuple[str, ...]] | None = None
        self._builder: Builder = builder if builder is not None else CandidateBuilder()
        self._source = source
        self._lock = trio.Lock()
        settings = _file_settings(target.config())
        self._debouncer = Debouncer(settings.debounce.seconds)
        self._watching = _WatchSettings(settings.watch, settings.directory)
        self._watch_scope: trio.CancelScope | None = None
        #: The file watcher while one runs (for tests and the management API).
        self.provider: FileProvider | None = None
        #: The dynamic providers; their changes poke the debounced reload.
        self.hub = hub if hub is not None else ProviderHub()
        self.hub.changed = self.changed
        #: The warnings logged last (module docstring: logged again only when they change).
        self._logged: tuple[Problem, ...] = ()
        #: The last outcome, and how many reloads ended in each result.
        self.last: ReloadOutcome | None = None
        self.counts: dict[ReloadResult, int] = {"ok": 0, "error": 0, "unchanged": 0}

    @property
    def path(self) -> str:
        """The config file reloads read."""
        return self._path

    @property
    def debouncer(self) -> Debouncer:
        """The debouncer the watcher pokes."""
        return self._debouncer

    def changed(self) -> None:
        """A source saw the config change: a debounced ``reload_now(force=False)``."""
        self._debouncer.poke()

    async def reload_now(self, *, force: bool = True) -> ReloadOutcome:
        """Build a candidate from the file and swap it in; see the module docstring.

        ``force=False`` skips a candidate equal to the running config. Never raises for a bad
        config or a failed swap: the outcome says what happened (and it is logged).
        """
        async with self._lock:
            outcome = await self._reload(force=force)
        self.last = outcome
        self.counts[outcome.result] += 1
        return outcome

    async def _reload(self, *, force: bool) -> ReloadOutcome:
        target = self._target
        try:
            candidate = await self._builder.build(self._path, workers=self._workers)
        except (BuildError, OSError) as error:
            self._report_rejection(None, (str(error),))
            target.record_failed_reload(1)
            return self._failed(str(error))
        if candidate.config is None:
            self._report_rejection(candidate.digest, _formatted(candidate.problems))
            target.record_failed_reload(len(candidate.errors))
            generation = target.health().config_generation
            return ReloadOutcome("error", generation, candidate.warnings, candidate.errors)
        config = candidate.config
        if self._prepare is not None:
            config = self._prepare(config)
        merged = await self.hub.merge_candidate(
            config, workers=self._workers, default_file=self._path
        )
        config = merged.config
        warnings = (*candidate.warnings, *merged.warnings)
        if not force and config == target.config():
            self._rejected = None
            self.hub.committed(merged)
            generation = target.health().config_generation
            log.info("config unchanged: generation %d kept", generation)
            return ReloadOutcome("unchanged", generation, warnings)
        try:
            generation = await target.reload(config)
        except ConfigError as error:
            self.hub.rejected()
            # What the target says may quote the candidate's values (SPEC §14.4).
            problems = redactor_of(config).problems(error.problems)
            self._report_rejection(candidate.digest, _formatted(problems))
            return ReloadOutcome("error", target.health().config_generation, warnings, problems)
        except GatewayError as error:
            self.hub.rejected()
            message = redactor_of(config).text(str(error), message=True)
            self._report_rejection(candidate.digest, (message,))
            return self._failed(message, warnings)
        self.hub.committed(merged)
        self._rejected = None
        # Once it is in: a candidate skipped as unchanged or refused says nothing of them.
        self._log_warnings(warnings)
        self._follow(config)
        return ReloadOutcome("ok", generation, warnings)

    def _log_warnings(self, warnings: tuple[Problem, ...]) -> None:
        """Log the warnings of a swapped config unless they are those logged last."""
        if warnings == self._logged:
            return
        self._logged = warnings
        for problem in warnings:
            log.log(self._warning_level, "%s", problem.format())

    def _report_rejection(self, digest: bytes | None, problems: tuple[str, ...]) -> None:
        """Log every problem as ``reload rejected: …`` — unless the files and the problems are
        those of the last rejection (module docstring). ``digest=None``: not known, logged."""
        rejected = None if digest is None else (digest, problems)
        if rejected is not None and rejected == self._rejected:
            log.info(
                "config still rejected: the files are unchanged since the last rejected reload "
                "(its %d problem(s) are logged above)",
                len(problems),
            )
            return
        self._rejected = rejected
        for problem in problems:
            log.error("reload rejected: %s", problem)

    def _failed(self, message: str, warnings: tuple[Problem, ...] = ()) -> ReloadOutcome:
        problem = Problem(
            severity="error", file=self._path, line=None, column=None, path="", message=message
        )
        return ReloadOutcome("error", self._target.health().config_generation, warnings, (problem,))

    def _follow(self, config: Config) -> None:
        """Apply a swapped config's ``providers.file`` settings to the watcher."""
        self.hub.apply(config)
        settings = _file_settings(config)
        self._debouncer.delay = settings.debounce.seconds
        watching = _WatchSettings(settings.watch, settings.directory)
        if watching != self._watching:
            self._watching = watching
            if self._watch_scope is not None:
                self._watch_scope.cancel()

    async def _debounced(self) -> None:
        await self.reload_now(force=False)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch (when enabled) and run debounced reloads until cancelled; stops the builder
        child on the way out. ``started()`` once the watcher is in place."""
        try:
            async with trio.open_nursery() as nursery:
                if self._warm:
                    nursery.start_soon(self._warm_up)
                self.hub.apply(self._target.config())
                await nursery.start(self.hub.run)
                nursery.start_soon(self._debouncer.run, self._debounced)
                await nursery.start(self._watch_loop)
                task_status.started()
        finally:
            await self._builder.aclose()

    async def aclose(self) -> None:
        """Stop the builder child (for users of ``reload_now`` that never ran ``run``)."""
        await self._builder.aclose()

    async def _warm_up(self) -> None:
        """Start the builder child and have it load the file once (its result unused): the
        child's imports, lazy ones included, then cost nothing at the first reload."""
        try:
            await self._builder.start()
            await self._builder.build(self._path, workers=self._workers)
        except (OSError, BuildError) as error:
            log.warning("cannot start the config build process: %s", error)
            return
        log.info("config build process ready")

    async def _watch_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        while True:
            watching = self._watching
            with trio.CancelScope() as scope:
                self._watch_scope = scope
                if self._watch and watching.watch:
                    targets = WatchTargets.of(self._main_file, watching.directory)
                    provider = FileProvider(targets, self.changed, source=self._source)
                    self.provider = provider
                    log.info(
                        "watching %s%s for changes",
                        targets.main_file,
                        f" and {targets.directory}" if targets.directory is not None else "",
                    )
                    await provider.run(task_status=task_status)
                else:
                    self.provider = None
                    task_status.started()
                    await trio.sleep_forever()
            task_status = trio.TASK_STATUS_IGNORED
