"""The file provider's watcher (SPEC §10.3): tells the reload aggregator that the main config
file or a ``*.hcl`` file of the conf.d directory may have changed.

Ring 1 (trio, the file system). What is watched: the main file *through its parent directory*
(not recursively), so that an editor's atomic rename (write ``x.tmp``, rename it over the file)
and a Kubernetes ConfigMap symlink swap (``..data`` re-pointed at a new timestamped directory)
are seen; and the conf.d directory recursively. Which events count (``WatchTargets.relevant``):
the main file itself, the entries of its directory that its symlink chain passes through, the
ConfigMap internals (names starting with ``..``), and under conf.d the ``*.hcl`` files, the
``..`` internals and directories; hidden names (``.x``) and other files (``notes.txt``,
``x.hcl.swp``, ``x.hcl~``) never trigger a reload.

Event sources: ``watchfiles`` (inotify through the Rust ``notify`` crate, driven by anyio,
which runs on trio) when it can be imported, else ``poll_source``, which compares a
fingerprint of every watched file (mtime, size, inode after following symlinks) every 2 s.
Either way a missing conf.d directory is polled for until it appears (SPEC §3.5), and a
directory that appears or disappears restarts the watchers. A source is any ``Source``: tests
inject their own.

Nurseries: ``FileProvider.run`` and the watchfiles source each own one (the watcher tasks),
cancelled with the provider. Deadlines: none. Must not: read or parse the config (the
aggregator builds candidates), or call the reload itself (``on_change`` is a synchronous poke
into the debouncer).
"""

from __future__ import annotations

import importlib
import logging
import os
import stat as stat_module
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, cast

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

__all__ = [
    "POLL_INTERVAL",
    "FileProvider",
    "Fingerprint",
    "Source",
    "WatchTargets",
    "default_source",
    "fingerprint",
    "poll_source",
    "watchfiles_available",
    "watchfiles_source",
]

log: Final = logging.getLogger("a3s_gateway.providers")

#: SPEC §10.3: the polling fallback's period (and how often a missing conf.d is looked for).
POLL_INTERVAL: Final = 2.0
#: watchfiles: how long a group of raw events may gather (ms) and the quiet step that ends a
#: group (ms). Our own debounce (``providers.file.debounce``) does the real coalescing.
_WATCHFILES_DEBOUNCE_MS: Final = 200
_WATCHFILES_STEP_MS: Final = 30
#: How long one wait of the watch thread may last (ms) before it checks in again.
_WATCHFILES_TIMEOUT_MS: Final = 1000
#: Symlink hops followed when working out which entries the main file depends on.
_MAX_LINK_HOPS: Final = 16


@dataclass(frozen=True, slots=True)
class WatchTargets:
    """What the provider watches: the main file and, when configured, the conf.d directory
    (both absolute, symlinks not resolved)."""

    main_file: Path
    directory: Path | None = None

    @staticmethod
    def of(main_file: str | os.PathLike[str], directory: str | None) -> WatchTargets:
        """The targets for a config file and its ``providers.file.directory`` (relative to the
        main file's directory, as the loader resolves it)."""
        main = Path(os.path.abspath(main_file))
        if directory is None or not directory:
            return WatchTargets(main)
        return WatchTargets(main, Path(os.path.abspath(main.parent / directory)))

    def relevant(self, changed: str) -> bool:
        """Whether a change of ``changed`` (an absolute path) may change the config."""
        path = Path(os.path.abspath(changed))
        main = self.main_file
        if path == main:
            return True
        directory = self.directory
        if directory is not None and (path == directory or _is_within(path, directory)):
            return path == directory or _relevant_in_conf_d(path, directory)
        if path.parent == main.parent:
            return path.name.startswith("..") or path.name in self.link_entries()
        return False

    def link_entries(self) -> frozenset[str]:
        """Names of the entries of the main file's directory that its symlink chain passes
        through (a symlink swap of any of them changes what the main file is)."""
        parent = self.main_file.parent
        names: set[str] = set()
        current = self.main_file
        for _ in range(_MAX_LINK_HOPS):
            for part in _parts_under(current, parent):
                names.add(part)
            try:
                target = os.readlink(current)
            except OSError:
                break
            current = Path(os.path.normpath(current.parent / target))
        try:
            resolved = Path(os.path.realpath(self.main_file))
        except OSError:
            return frozenset(names)
        names.update(_parts_under(resolved, parent))
        return frozenset(names)

    def watched_directories(self) -> tuple[Path, Path | None]:
        """The main file's directory (watched flat) and the conf.d directory (recursively)
        when it exists."""
        directory = self.directory
        return (
            self.main_file.parent,
            directory if directory is not None and directory.is_dir() else None,
        )


def _is_within(path: Path, directory: Path) -> bool:
    try:
        path.relative_to(directory)
    except ValueError:
        return False
    return True


def _parts_under(path: Path, parent: Path) -> list[str]:
    """The first component of ``path`` below ``parent`` (a one-element list), or nothing."""
    try:
        relative = path.relative_to(parent)
    except ValueError:
        return []
    return [relative.parts[0]] if relative.parts else []


def _relevant_in_conf_d(path: Path, directory: Path) -> bool:
    parts = path.relative_to(directory).parts
    for part in parts:
        # Hidden names are not configuration (SPEC §3.5); ConfigMap internals ("..data",
        # "..2024_01_01_00_00_00.123") are how a ConfigMap-mounted conf.d changes.
        if part.startswith(".") and not part.startswith(".."):
            return False
    name = parts[-1]
    if name.endswith(".hcl") or name.startswith(".."):
        return True
    # A directory moved in or out holds *.hcl files we get no event for.
    if path.is_dir():
        return True
    return not path.exists() and not Path(name).suffix


# ----------------------------------------------------------------------------- fingerprints


#: path → (device, inode, size, mtime in ns), after following symlinks; absent = missing.
Fingerprint = dict[str, tuple[int, int, int, int]]


def fingerprint(targets: WatchTargets) -> Fingerprint:
    """The polling state of every watched file: the main file and each ``*.hcl`` file under
    conf.d (hidden names skipped, symlinks followed, as the loader reads them), plus the
    conf.d directory's presence (under its own path, with zeros)."""
    result: Fingerprint = {}
    _stat_into(result, targets.main_file)
    directory = targets.directory
    if directory is not None and directory.is_dir():
        result[str(directory)] = (0, 0, 0, 0)
        for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.endswith(".hcl") and not name.startswith("."):
                    _stat_into(result, Path(dirpath) / name)
    return result


def _stat_into(result: Fingerprint, path: Path) -> None:
    try:
        info = os.stat(path)
    except OSError:
        return
    if stat_module.S_ISREG(info.st_mode):
        result[str(path)] = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def changed_paths(before: Fingerprint, after: Fingerprint) -> set[str]:
    """The paths whose entries differ (added, removed or changed)."""
    return {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}


# ----------------------------------------------------------------------------- sources


class Source(Protocol):
    """Watches ``targets`` until cancelled, calling ``emit`` with the paths of each batch of
    raw changes (not yet filtered); ``task_status.started()`` once watching."""

    async def __call__(
        self,
        targets: WatchTargets,
        emit: Callable[[Iterable[str]], None],
        *,
        task_status: trio.TaskStatus[None] = ...,
    ) -> None: ...


async def poll_source(
    targets: WatchTargets,
    emit: Callable[[Iterable[str]], None],
    *,
    interval: float = POLL_INTERVAL,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The polling fallback (SPEC §10.3): compare ``fingerprint`` every ``interval`` seconds.

    The stat calls run on the event loop: a few per file, microseconds each.
    """
    previous = fingerprint(targets)
    task_status.started()
    while True:
        await trio.sleep(interval)
        current = fingerprint(targets)
        changes = changed_paths(previous, current)
        previous = current
        if changes:
            emit(changes)


class _Stop(Protocol):
    def is_set(self) -> bool: ...


class _AWatch(Protocol):
    """The part of ``watchfiles.awatch`` this module uses."""

    def __call__(
        self,
        *paths: str,
        watch_filter: None,
        debounce: int,
        step: int,
        stop_event: _Stop,
        rust_timeout: int,
        recursive: bool,
    ) -> AsyncIterator[set[tuple[object, str]]]: ...


def _load_awatch() -> _AWatch | None:
    try:
        module = importlib.import_module("watchfiles")
    except ImportError:
        return None
    return cast("_AWatch", module.awatch)


def watchfiles_available() -> bool:
    """Whether the optional ``watchfiles`` package can be imported."""
    return _load_awatch() is not None


async def watchfiles_source(
    targets: WatchTargets,
    emit: Callable[[Iterable[str]], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """inotify through ``watchfiles``: the main file's directory flat, conf.d recursively.

    Raises ``RuntimeError`` if ``watchfiles`` cannot be imported.
    """
    awatch = _load_awatch()
    if awatch is None:
        raise RuntimeError("watchfiles is not installed")
    parent, directory = targets.watched_directories()
    async with trio.open_nursery() as nursery:
        await nursery.start(_awatch_loop, awatch, parent, False, emit)
        if directory is not None:
            await nursery.start(_awatch_loop, awatch, directory, True, emit)
        task_status.started()


async def _awatch_loop(
    awatch: _AWatch,
    path: Path,
    recursive: bool,
    emit: Callable[[Iterable[str]], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """One ``awatch`` until cancelled.

    ``awatch`` waits in a worker thread that a trio cancellation cannot interrupt, so a
    sibling task sets the thread's stop event the moment the loop is cancelled; the thread
    then returns within one step (30 ms) instead of at its next timeout.
    """
    stop = threading.Event()

    async def stopper() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stopper)
        changes = awatch(
            str(path),
            watch_filter=None,
            debounce=_WATCHFILES_DEBOUNCE_MS,
            step=_WATCHFILES_STEP_MS,
            stop_event=stop,
            rust_timeout=_WATCHFILES_TIMEOUT_MS,
            recursive=recursive,
        )
        # The watcher thread is running once the generator has been entered: the first
        # __anext__ creates it. Report "started" right away; events from now on are seen.
        task_status.started()
        async for batch in changes:
            emit(changed for _, changed in batch)
        nursery.cancel_scope.cancel()


def default_source() -> Source:
    """``watchfiles_source`` when ``watchfiles`` can be imported, else ``poll_source``."""
    return watchfiles_source if watchfiles_available() else poll_source


# ----------------------------------------------------------------------------- the provider


class FileProvider:
    """Watches ``targets`` with ``source`` and calls ``on_change`` for every batch of raw
    changes that holds a relevant path (module docstring)."""

    def __init__(
        self,
        targets: WatchTargets,
        on_change: Callable[[], None],
        *,
        source: Source | None = None,
        presence_interval: float = POLL_INTERVAL,
    ) -> None:
        self.targets = targets
        self._on_change = on_change
        self._source = source if source is not None else default_source()
        self._presence_interval = presence_interval
        #: Batches that held a relevant path (for logs and tests).
        self.changes = 0

    def _emit(self, paths: Iterable[str]) -> None:
        relevant = [path for path in paths if self.targets.relevant(path)]
        if relevant:
            self.changes += 1
            log.debug("config change seen: %s", ", ".join(sorted(relevant)))
            self._on_change()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled; ``started()`` once the first watchers are in place.

        A conf.d directory that appears or disappears restarts the source (an inotify watch
        on a directory that is gone sees nothing), and counts as a change. A source that ends
        by itself is restarted after ``presence_interval``.
        """
        directory = self.targets.directory
        flipped: list[bool] = []
        while True:
            present = directory is not None and directory.is_dir()
            came_or_went, flipped = bool(flipped), []
            failed: list[bool] = []
            async with trio.open_nursery() as nursery:
                await nursery.start(self._run_source, nursery.cancel_scope, failed)
                if came_or_went:
                    # Reported once the new round watches: a write after this point is seen
                    # by it, one before it is read by the reload this change leads to.
                    assert directory is not None
                    self._emit([str(directory)])
                if directory is not None:
                    nursery.start_soon(
                        self._presence, directory, present, nursery.cancel_scope, flipped
                    )
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED
            if not flipped and not failed:
                log.warning("file watcher ended unexpectedly; restarting it")
                await trio.sleep(self._presence_interval)

    async def _run_source(
        self,
        scope: trio.CancelScope,
        failed: list[bool],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """One round of the source; it ending (or failing) ends the round. A failing source
        (an inotify limit, a directory that vanished) is replaced by polling: a watcher
        problem must never take the gateway down."""
        status = _Once(task_status)
        try:
            await self._source(self.targets, self._emit, task_status=status)
        except Exception as error:
            if self._source is poll_source:
                log.warning("config polling failed: %s; retrying", error)
                await trio.sleep(self._presence_interval)
            else:
                log.warning(
                    "file watcher failed: %s; polling every %gs instead", error, POLL_INTERVAL
                )
                self._source = poll_source
            failed.append(True)
            status.started()
        scope.cancel()

    async def _presence(
        self, directory: Path, present: bool, scope: trio.CancelScope, flipped: list[bool]
    ) -> None:
        # Polling on purpose: nothing can be watched for a directory that does not exist yet.
        while True:
            await trio.sleep(self._presence_interval)
            if directory.is_dir() != present:  # noqa: ASYNC240 -- one stat every 2 s
                break
        log.info("conf.d directory %s %s", directory, "disappeared" if present else "appeared")
        flipped.append(True)
        scope.cancel()


class _Once:
    """A ``TaskStatus`` that passes on the first ``started()`` and ignores the others."""

    def __init__(self, status: trio.TaskStatus[None]) -> None:
        self._status: trio.TaskStatus[None] | None = status

    def started(self, value: None = None) -> None:
        status, self._status = self._status, None
        if status is not None:
            status.started()
