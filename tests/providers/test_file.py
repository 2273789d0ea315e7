"""The file provider's watcher (SPEC §10.3): which paths count, and that editor-style atomic
renames, Kubernetes ConfigMap symlink swaps and conf.d additions and removals are seen while
other files are not.

Polling tests run on real files under trio's autojump clock (the poller only stats files, so
virtual time drives it exactly); the inotify tests (``watchfiles``) use the real clock and wait
for events, never for time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import trio
import trio.testing

from a3s_gateway.providers.file import (
    POLL_INTERVAL,
    FileProvider,
    Source,
    WatchTargets,
    changed_paths,
    fingerprint,
    poll_source,
    watchfiles_available,
    watchfiles_source,
)

CONFIG = 'entrypoints "web" {\n  address = "127.0.0.1:0"\n}\n'


def atomic_write(path: Path, text: str) -> None:
    """What editors do: write a temporary file next to it, then rename it over the file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def configmap(directory: Path, name: str, stamp: str, text: str) -> None:
    """Kubernetes' atomic writer: a timestamped directory, ``..data`` re-pointed at it through
    a temporary symlink renamed over the old one, and ``name`` → ``..data/name``."""
    (directory / stamp).mkdir()
    (directory / stamp / name).write_text(text, encoding="utf-8")
    temporary = directory / "..data_tmp"
    temporary.symlink_to(stamp)
    os.replace(temporary, directory / "..data")
    if not (directory / name).is_symlink():
        (directory / name).symlink_to(Path("..data") / name)


class Changes:
    """An ``on_change`` that counts and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.count = 0
        self._event = trio.Event()

    def __call__(self) -> None:
        self.count += 1
        self._event.set()

    async def next(self) -> None:
        """Wait for a change reported after this call."""
        target = self.count + 1
        while self.count < target:
            await self._event.wait()
            self._event = trio.Event()


# ----------------------------------------------------------------------------- relevance


def test_relevant_paths_are_the_main_file_configmap_internals_and_conf_d_hcl_files(
    tmp_path: Path,
) -> None:
    conf_d = tmp_path / "conf.d"
    (conf_d / "sub").mkdir(parents=True)
    targets = WatchTargets.of(tmp_path / "gateway.hcl", "conf.d")
    assert targets.directory == conf_d
    relevant = [
        tmp_path / "gateway.hcl",
        tmp_path / "..data",
        tmp_path / "..2024_01_01_00_00_00.1",
        conf_d,
        conf_d / "routes.hcl",
        conf_d / "sub" / "more.hcl",
        conf_d / "sub",  # a directory moved in
        conf_d / "gone",  # a directory moved out (no suffix, no longer there)
        conf_d / "..data",
        conf_d / "..2024_01_01" / "routes.hcl",
    ]
    ignored = [
        tmp_path / "gateway.hcl.tmp",
        tmp_path / ".gateway.hcl.swp",
        tmp_path / "gateway.hcl~",
        tmp_path / "4913",  # vim's probe file
        tmp_path / "other.hcl",  # not the main file, not under conf.d
        conf_d / "notes.txt",
        conf_d / "routes.hcl.swp",
        conf_d / ".hidden.hcl",
        conf_d / ".git" / "config.hcl",
        tmp_path.parent / "elsewhere.hcl",
    ]
    assert [p for p in relevant if not targets.relevant(str(p))] == []
    assert [p for p in ignored if targets.relevant(str(p))] == []


def test_entries_of_the_main_files_symlink_chain_are_relevant(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "gateway.hcl").write_text(CONFIG)
    (tmp_path / "current").symlink_to("v1")
    (tmp_path / "gateway.hcl").symlink_to(Path("current") / "gateway.hcl")
    targets = WatchTargets.of(tmp_path / "gateway.hcl", None)
    assert {"gateway.hcl", "current", "v1"} <= targets.link_entries()
    assert targets.relevant(str(tmp_path / "current"))
    assert not targets.relevant(str(tmp_path / "unrelated"))


def test_fingerprint_follows_symlinks_and_skips_hidden_and_other_files(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (tmp_path / "gateway.hcl").write_text(CONFIG)
    (conf_d / "a.hcl").write_text("")
    (conf_d / ".b.hcl").write_text("")
    (conf_d / "c.txt").write_text("")
    targets = WatchTargets.of(tmp_path / "gateway.hcl", "conf.d")
    before = fingerprint(targets)
    assert set(before) == {str(tmp_path / "gateway.hcl"), str(conf_d), str(conf_d / "a.hcl")}
    (conf_d / "c.txt").write_text("changed")
    (conf_d / ".b.hcl").write_text("changed")
    assert changed_paths(before, fingerprint(targets)) == set()
    atomic_write(tmp_path / "gateway.hcl", CONFIG)  # same size, same second: a new inode
    assert changed_paths(before, fingerprint(targets)) == {str(tmp_path / "gateway.hcl")}


# ----------------------------------------------------------------------------- polling


async def watch(
    nursery: trio.Nursery, targets: WatchTargets, source: Source = poll_source
) -> tuple[FileProvider, Changes]:
    changes = Changes()
    provider = FileProvider(targets, changes, source=source)
    await nursery.start(provider.run)
    return provider, changes


async def test_polling_sees_an_editors_atomic_rename_within_one_interval(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    main = tmp_path / "gateway.hcl"
    main.write_text(CONFIG)
    async with trio.open_nursery() as nursery:
        _, changes = await watch(nursery, WatchTargets.of(main, None))
        written_at = trio.current_time()
        atomic_write(main, CONFIG.replace("0", "1"))
        await changes.next()
        assert trio.current_time() - written_at <= POLL_INTERVAL
        nursery.cancel_scope.cancel()


async def test_polling_sees_a_configmap_symlink_swap(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    configmap(tmp_path, "gateway.hcl", "..2024_a", CONFIG)
    async with trio.open_nursery() as nursery:
        _, changes = await watch(nursery, WatchTargets.of(tmp_path / "gateway.hcl", None))
        configmap(tmp_path, "gateway.hcl", "..2024_b", CONFIG)  # same size: a new inode
        await changes.next()
        assert changes.count == 1
        nursery.cancel_scope.cancel()


async def test_polling_sees_conf_d_files_added_and_removed_and_ignores_other_files(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    main = tmp_path / "gateway.hcl"
    main.write_text(CONFIG)
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    async with trio.open_nursery() as nursery:
        _, changes = await watch(nursery, WatchTargets.of(main, "conf.d"))
        (conf_d / "notes.txt").write_text("not config")
        (conf_d / ".hidden.hcl").write_text("")
        (tmp_path / "gateway.hcl.swp").write_text("")
        await trio.sleep(3 * POLL_INTERVAL)
        assert changes.count == 0
        (conf_d / "routes.hcl").write_text("")
        await changes.next()
        (conf_d / "routes.hcl").unlink()
        await changes.next()
        assert changes.count == 2
        nursery.cancel_scope.cancel()


async def test_a_conf_d_directory_that_appears_later_is_seen_and_then_watched(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    main = tmp_path / "gateway.hcl"
    main.write_text(CONFIG)
    conf_d = tmp_path / "conf.d"
    async with trio.open_nursery() as nursery:
        _, changes = await watch(nursery, WatchTargets.of(main, "conf.d"))
        conf_d.mkdir()
        (conf_d / "a.hcl").write_text("")
        await changes.next()
        await trio.sleep(3 * POLL_INTERVAL)  # (the poller may report the same change too)
        seen = changes.count
        (conf_d / "b.hcl").write_text("")
        await changes.next()
        assert changes.count == seen + 1  # the restarted watcher covers the new directory
        nursery.cancel_scope.cancel()


async def test_a_failing_watcher_falls_back_to_polling(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    main = tmp_path / "gateway.hcl"
    main.write_text(CONFIG)

    async def broken(
        targets: WatchTargets,
        emit: Callable[[Iterable[str]], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        raise OSError(28, "inotify watch limit reached")

    async with trio.open_nursery() as nursery:
        _, changes = await watch(nursery, WatchTargets.of(main, None), broken)
        await trio.sleep(POLL_INTERVAL / 2)  # the fallback poller takes its first look
        atomic_write(main, CONFIG + "\n")
        await changes.next()
        nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------------- inotify

needs_watchfiles = pytest.mark.skipif(
    not watchfiles_available(),
    reason="watchfiles is not installed (optional; the polling fallback is tested above)",
)
#: Bound on an inotify event reaching us (it takes milliseconds; generous for loaded CI).
EVENT_WAIT = 10.0


class Recording:
    """A watchfiles source that also records every raw path it saw."""

    def __init__(self) -> None:
        self.raw: list[str] = []
        self._event = trio.Event()

    async def __call__(
        self,
        targets: WatchTargets,
        emit: Callable[[Iterable[str]], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        def record(paths: Iterable[str]) -> None:
            batch = list(paths)
            self.raw.extend(batch)
            self._event.set()
            emit(batch)

        await watchfiles_source(targets, record, task_status=task_status)

    async def saw(self, path: Path) -> None:
        while str(path) not in self.raw:
            await self._event.wait()
            self._event = trio.Event()


@needs_watchfiles
async def test_inotify_sees_an_atomic_rename_and_a_symlink_swap(tmp_path: Path) -> None:
    configmap(tmp_path, "gateway.hcl", "..2024_a", CONFIG)
    async with trio.open_nursery() as nursery:
        _, changes = await watch(
            nursery, WatchTargets.of(tmp_path / "gateway.hcl", None), watchfiles_source
        )
        with trio.fail_after(EVENT_WAIT):
            configmap(tmp_path, "gateway.hcl", "..2024_b", CONFIG)
            await changes.next()
        plain = tmp_path / "plain"
        plain.mkdir()
        (plain / "gateway.hcl").write_text(CONFIG)
        _, renamed = await watch(
            nursery, WatchTargets.of(plain / "gateway.hcl", None), watchfiles_source
        )
        with trio.fail_after(EVENT_WAIT):
            atomic_write(plain / "gateway.hcl", CONFIG + "\n")
            await renamed.next()
        nursery.cancel_scope.cancel()


@needs_watchfiles
async def test_inotify_sees_conf_d_changes_and_ignores_files_that_are_not_config(
    tmp_path: Path,
) -> None:
    main = tmp_path / "gateway.hcl"
    main.write_text(CONFIG)
    conf_d = tmp_path / "conf.d"
    (conf_d / "sub").mkdir(parents=True)
    recording = Recording()
    async with trio.open_nursery() as nursery:
        _, changes = await watch(nursery, WatchTargets.of(main, "conf.d"), recording)
        with trio.fail_after(EVENT_WAIT):
            (conf_d / "notes.txt").write_text("not config")
            (tmp_path / "gateway.hcl.swp").write_text("")
            await recording.saw(conf_d / "notes.txt")
            await recording.saw(tmp_path / "gateway.hcl.swp")
            assert changes.count == 0  # seen, and ignored
            (conf_d / "sub" / "routes.hcl").write_text("")
            await changes.next()
            (conf_d / "sub" / "routes.hcl").unlink()
            await changes.next()
        nursery.cancel_scope.cancel()


@needs_watchfiles
async def test_cancelling_the_inotify_watcher_is_prompt(tmp_path: Path) -> None:
    main = tmp_path / "gateway.hcl"
    main.write_text(CONFIG)
    async with trio.open_nursery() as nursery:
        await watch(nursery, WatchTargets.of(main, None), watchfiles_source)
        cancelled_at = trio.current_time()
        nursery.cancel_scope.cancel()
    # The watch thread's own timeout is 1 s; the stop event ends it within a step.
    assert trio.current_time() - cancelled_at < 0.9
