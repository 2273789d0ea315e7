"""The provider hub (providers/provider_hub.py): starting, restarting and stopping providers as the
config changes, publishing into debounced reloads, restarting a provider that raised, the
counters, ``/providers`` documents and the provider certificate files; and the ``Reloader``
merging snapshots into what it swaps in (autojump clock, fake providers and builder)."""

from __future__ import annotations

import itertools
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import msgspec
import pytest
import trio
import trustme

from a3s_gateway.config.load import load_text
from a3s_gateway.config.schema import DiscoveryProvider
from a3s_gateway.providers import Candidate, Reloader
from a3s_gateway.providers.dynamic import (
    PemPair,
    ProviderStatus,
    Publish,
    Snapshot,
    build_router,
    build_service,
)
from a3s_gateway.providers.provider_hub import (
    MAX_RESTART_DELAY,
    RESTART_DELAY,
    CertificateFiles,
    ProviderHub,
)
from tests.providers.test_aggregator import FakeTarget

if TYPE_CHECKING:
    from a3s_gateway.config.schema import Config
    from a3s_gateway.providers.dynamic import DynamicProvider

BASE = (
    'entrypoints "web" {\n  address = "127.0.0.1:0"\n}\n'
    'services "app" {\n  load_balancer {\n    servers = [{ url = "http://127.0.0.1:9000" }]\n'
    '  }\n}\nrouters "app" {\n  rule = "PathPrefix(`/`)"\n  service = "app"\n}\n'
)


def discovery_config(seed: str = "http://127.0.0.1:9100") -> Config:
    text = BASE + f'providers {{\n  discovery {{\n    seeds = [{{ url = "{seed}" }}]\n  }}\n}}\n'
    result = load_text(text, filename="t.hcl", env={})
    assert result.config is not None, [p.format() for p in result.errors]
    return result.config


def snapshot_for(name: str) -> Snapshot:
    return Snapshot(
        routers={f"discovered-{name}": build_router({"rule": "Path(`/x`)", "service": name})},
        services={
            name: build_service({"load_balancer": {"servers": [{"url": "http://127.0.0.1:1"}]}})
        },
    )


class FakeProvider:
    """Publishes what the test hands it; may raise once."""

    instances: ClassVar[list[FakeProvider]] = []

    def __init__(self, settings: object) -> None:
        self.settings = settings
        self.status = ProviderStatus("discovery")
        self.publish: Publish | None = None
        self.raise_once: Exception | None = None
        self.runs = 0
        self.cancelled = False
        FakeProvider.instances.append(self)

    async def run(
        self, publish: Publish, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.runs += 1
        self.publish = publish
        task_status.started()
        if self.raise_once is not None:
            error, self.raise_once = self.raise_once, None
            raise error
        try:
            await trio.sleep_forever()
        finally:
            self.cancelled = True


def fake(settings: object) -> DynamicProvider:
    return FakeProvider(settings)


def new_hub(tmp_path: Path) -> tuple[ProviderHub, list[int]]:
    FakeProvider.instances = []
    hub = ProviderHub(
        factories={"discovery": fake},
        certificates=CertificateFiles(str(tmp_path / "certs")),
        threaded=False,
    )
    pokes: list[int] = []
    hub.changed = lambda: pokes.append(1)
    return hub, pokes


async def test_a_published_change_pokes_once_and_merges(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub, pokes = new_hub(tmp_path)
    config = discovery_config()
    async with trio.open_nursery() as nursery:
        hub.apply(config)
        await nursery.start(hub.run)
        await trio.sleep(0.1)
        [provider] = FakeProvider.instances
        assert provider.publish is not None
        provider.publish(snapshot_for("users"))
        provider.publish(snapshot_for("users"))  # the same again: no poke
        assert pokes == [1]
        assert provider.status.changes == 1
        merged = hub.merge(config)
        assert "discovered-users" in merged.config.routers
        [document] = hub.documents()
        assert document["name"] == "discovery"
        assert document["changes"] == 1
        assert document["objects"] == {
            "routers": 1,
            "services": 1,
            "servers": 1,
            "certificates": 0,
            "skipped": 0,
        }
        nursery.cancel_scope.cancel()


async def test_changed_settings_restart_and_removed_ones_stop(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub, pokes = new_hub(tmp_path)
    async with trio.open_nursery() as nursery:
        hub.apply(discovery_config())
        await nursery.start(hub.run)
        await trio.sleep(0.1)
        first = FakeProvider.instances[0]
        assert first.publish is not None
        first.publish(snapshot_for("a"))
        hub.apply(discovery_config())  # the same settings: kept
        assert len(FakeProvider.instances) == 1
        hub.apply(discovery_config("http://127.0.0.1:9200"))
        await trio.sleep(0.1)
        assert first.cancelled
        second = FakeProvider.instances[1]
        assert isinstance(second.settings, DiscoveryProvider)
        assert str(second.settings.seeds[0].url) == "http://127.0.0.1:9200"
        # The restarted provider's objects stay until it publishes its own: no reload yet.
        assert pokes == [1]
        assert "discovered-a" in hub.merge(discovery_config()).config.routers
        first.publish(snapshot_for("late"))  # a stopped provider's late publish is ignored
        assert pokes == [1]
        assert "discovered-late" not in hub.merge(discovery_config()).config.routers
        assert second.publish is not None
        second.publish(snapshot_for("b"))
        assert pokes == [1, 1]
        assert hub.counters() == {"discovery": (2, 0)}
        hub.apply(load_config_without_providers())  # removed: its objects go, a reload
        await trio.sleep(0.1)
        assert second.cancelled
        assert pokes == [1, 1, 1]
        assert hub.documents() == []
        assert hub.counters() == {"discovery": (2, 0)}  # carried: totals never go back
        nursery.cancel_scope.cancel()


def load_config_without_providers() -> Config:
    result = load_text(BASE, filename="t.hcl", env={})
    assert result.config is not None
    return result.config


async def test_a_provider_that_raises_is_restarted_after_a_delay(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub, _ = new_hub(tmp_path)
    hub.apply(discovery_config())
    [provider] = FakeProvider.instances
    provider.raise_once = RuntimeError("bug")
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await trio.sleep(0.1)
        assert provider.runs == 1
        assert provider.status.state == "error"
        assert provider.status.last_error == "internal error: RuntimeError"
        await trio.sleep(RESTART_DELAY)
        assert provider.runs == 2
        nursery.cancel_scope.cancel()


def test_certificate_files_are_private_checked_and_cleaned(tmp_path: Path) -> None:
    authority = trustme.CA()
    leaf = authority.issue_cert("a.example")
    pem = PemPair("Secret default/a", leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes())
    other = authority.issue_cert("b.example")
    pem_b = PemPair(
        "Secret default/b", other.cert_chain_pems[0].bytes(), other.private_key_pem.bytes()
    )
    files = CertificateFiles(str(tmp_path / "certs"))
    placed = files.place(pem)
    assert not isinstance(placed, str)
    assert stat.S_IMODE(os.stat(tmp_path / "certs").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(placed.key_file).st_mode) == 0o600
    assert Path(placed.cert_file).read_bytes() == pem.cert_pem
    assert files.place(pem) == placed  # written once
    mismatched = PemPair("Secret default/c", pem.cert_pem, other.private_key_pem.bytes())
    assert files.place(mismatched) == ("the certificate or key does not load, or they do not match")
    files.keep()
    placed_b = files.place(pem_b)
    assert not isinstance(placed_b, str)
    files.keep()  # a used the merge before: kept one more merge
    assert Path(placed.cert_file).exists()
    files.place(pem_b)
    files.keep()
    assert not Path(placed.cert_file).exists()
    assert Path(placed_b.cert_file).exists()
    files.close()  # the directory was given: its files go, it stays
    assert list((tmp_path / "certs").iterdir()) == []


def test_a_hub_owned_directory_is_removed_on_close() -> None:
    files = CertificateFiles()
    authority = trustme.CA()
    leaf = authority.issue_cert("a.example")
    placed = files.place(
        PemPair("s", leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes())
    )
    assert not isinstance(placed, str)
    directory = Path(placed.cert_file).parent
    files.close()
    assert not directory.exists()


class SignallingTarget(FakeTarget):
    """A ``FakeTarget`` that says when it swapped."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.swapped = trio.Event()

    async def reload(self, config: Config) -> int:
        generation = await super().reload(config)
        self.swapped.set()
        return generation


class StaticBuilder:
    """Builds the same static config every time."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.builds = 0

    async def build(self, path: str, *, workers: int = 1) -> Candidate:
        await trio.lowlevel.checkpoint()
        self.builds += 1
        return Candidate(self.config, (), None)

    async def start(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_the_reloader_swaps_in_merged_snapshots_debounced(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub, _ = new_hub(tmp_path)
    config = discovery_config()
    target = SignallingTarget(config)
    builder = StaticBuilder(config)
    reloader = Reloader(target, "t.hcl", watch=False, warm=False, builder=builder, hub=hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(reloader.run)
        await trio.sleep(0.1)
        [provider] = FakeProvider.instances
        assert provider.publish is not None
        provider.publish(snapshot_for("a"))
        await trio.sleep(0.2)
        provider.publish(snapshot_for("b"))  # within the debounce: one reload for both
        await target.swapped.wait()
        await trio.sleep(1)
        assert builder.builds == 1
        [swapped] = target.reloads
        assert "discovered-b" in swapped.routers
        assert "discovered-a" not in swapped.routers
        outcome = await reloader.reload_now(force=False)  # nothing new: unchanged
        assert outcome.result == "unchanged"
        nursery.cancel_scope.cancel()


def test_a_config_with_a_pending_reference_is_still_equal_after_the_merge() -> None:
    config = discovery_config()
    hub = ProviderHub(factories={"discovery": fake})
    assert hub.merge(config).config == config
    with_pending = msgspec.structs.replace(
        config,
        routers={
            **config.routers,
            "users": build_router({"rule": "Path(`/u`)", "service": "users"}),
        },
    )
    merged = hub.merge(with_pending)
    assert "users" not in merged.config.routers
    assert hub.pending() == ('router "users" → service "users"',)


def pair_of(authority: trustme.CA, name: str) -> PemPair:
    leaf = authority.issue_cert(name)
    return PemPair(
        f"Secret default/{name}", leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()
    )


def test_a_rejected_candidate_never_removes_the_serving_files(tmp_path: Path) -> None:
    authority = trustme.CA()
    serving, rotated, other = (pair_of(authority, n) for n in ("a.example", "b.example", "c.x"))
    files = CertificateFiles(str(tmp_path / "certs"))
    placed = files.place(serving)
    assert not isinstance(placed, str)
    files.keep()  # generation 1 serves it
    files.place(rotated)
    files.discard()  # that candidate was refused
    files.place(other)
    files.discard()
    files.place(other)
    files.keep()  # a later candidate without the first pair serves: kept one generation more
    assert Path(placed.cert_file).exists()


def test_a_file_removed_from_outside_is_written_again(tmp_path: Path) -> None:
    files = CertificateFiles(str(tmp_path / "certs"))
    pem = pair_of(trustme.CA(), "a.example")
    placed = files.place(pem)
    assert not isinstance(placed, str)
    Path(placed.cert_file).unlink()
    assert files.place(pem) == placed
    assert Path(placed.cert_file).read_bytes() == pem.cert_pem


class AlwaysFailing:
    """A provider with a bug: it raises at once, every time."""

    def __init__(self) -> None:
        self.status = ProviderStatus("discovery")
        self.starts: list[float] = []

    async def run(
        self, publish: Publish, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.starts.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        raise RuntimeError("bug")


@pytest.mark.time_limit(600)  # virtual seconds under the autojump clock
async def test_a_provider_that_keeps_failing_is_restarted_with_backoff(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    failing = AlwaysFailing()
    hub = ProviderHub(
        factories={"discovery": lambda settings: failing},
        certificates=CertificateFiles(str(tmp_path / "certs")),
        threaded=False,
    )
    hub.apply(discovery_config())
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await trio.sleep(400)
        nursery.cancel_scope.cancel()
    gaps = [round(b - a) for a, b in itertools.pairwise(failing.starts)]
    assert gaps[:7] == [5, 10, 20, 40, 80, 80, 80]
    assert failing.status.errors == len(failing.starts)
    assert MAX_RESTART_DELAY == 80
