"""The provider hub's ``acme`` kind (providers/provider_hub.py, SPEC §12.5): the ACME manager
runs when an entrypoint has ``tls { acme = true }`` and a builder was handed to the hub, its
stored certificates are in the first merge at once (``initial_snapshot``, written as files by
``CertificateFiles``), a routers change that adds a domain restarts it (or updates one that
takes new settings) without losing its certificates, removing ACME stops it, and the API and
metrics reach it (``acme_check``, ``acme_totals``). Fake managers with trustme certificates,
under the autojump clock."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Final

import trio
import trustme

from a3s_gateway.acme.order_plan import AcmeEntry
from a3s_gateway.config.load import load_text
from a3s_gateway.config.schema_entrypoints import CertificatePair
from a3s_gateway.providers.dynamic import PemPair, ProviderStatus, Publish, Snapshot
from a3s_gateway.providers.merge import dynamic_kinds
from a3s_gateway.providers.provider_hub import CertificateFiles, ProviderHub

if TYPE_CHECKING:
    from a3s_gateway.config.schema import Config
    from a3s_gateway.providers.dynamic import DynamicProvider

SHOP: Final = "shop.example.test"
BLOG: Final = "blog.example.test"
AUTHORITY: Final = trustme.CA()


def acme_config(storage: Path, *hosts: str, discovery: bool = False) -> Config:
    """``web`` (plain) and ``websecure`` (``acme = true``), a router per host on both."""
    text = (
        'entrypoints "web" {\n  address = "127.0.0.1:8080"\n}\n'
        'entrypoints "websecure" {\n  address = "127.0.0.1:8443"\n  tls {\n'
        '    acme = true\n    acme_email = "ops@example.test"\n'
        f'    acme_storage_path = "{storage}"\n  }}\n}}\n'
        'services "app" {\n  load_balancer {\n'
        '    servers = [{ url = "http://127.0.0.1:9000" }]\n  }\n}\n'
    )
    for index, host in enumerate(hosts):
        text += f'routers "r{index}" {{\n  rule = "Host(`{host}`)"\n  service = "app"\n}}\n'
    if discovery:
        text += 'providers {\n  discovery {\n    seeds = [{ url = "http://127.0.0.1:9100" }]\n'
        text += "  }\n}\n"
    return loaded(text)


def plain_config() -> Config:
    return loaded(
        'entrypoints "web" {\n  address = "127.0.0.1:8080"\n}\n'
        'services "app" {\n  load_balancer {\n'
        '    servers = [{ url = "http://127.0.0.1:9000" }]\n  }\n}\n'
        'routers "app" {\n  rule = "Host(`shop.example.test`)"\n  service = "app"\n}\n'
    )


def loaded(text: str) -> Config:
    result = load_text(text, filename="acme.hcl", env={})
    assert result.config is not None, [problem.format() for problem in result.errors]
    return result.config


def stored(domain: str) -> PemPair:
    """What the manager's snapshot holds for a stored certificate of ``domain``."""
    leaf = AUTHORITY.issue_cert(domain)
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return PemPair(
        f"ACME certificate {domain}", chain, leaf.private_key_pem.bytes(), ("websecure",)
    )


class FakeAcme:
    """An ACME manager's shape as the hub sees it: seeded, ordering, checkable."""

    instances: ClassVar[list[FakeAcme]] = []
    #: What ``initial_snapshot`` returns (the storage's certificates).
    seed: ClassVar[Snapshot] = Snapshot()

    def __init__(self, settings: object) -> None:
        assert isinstance(settings, tuple)
        assert all(isinstance(entry, AcmeEntry) for entry in settings)
        self.settings: tuple[AcmeEntry, ...] = settings
        self.status = ProviderStatus("acme")
        self.orders: dict[str, int] = {}
        self.expiry: dict[str, float] = {}
        self.checks: list[bool] = []
        self.seeded = 0
        self.runs = 0
        self.cancelled = False
        self.publish: Publish | None = None
        type(self).instances.append(self)

    def initial_snapshot(self) -> Snapshot:
        self.seeded += 1
        return self.seed

    def not_after(self) -> dict[str, float]:
        return dict(self.expiry)

    def check_now(self, *, force: bool = False) -> None:
        self.checks.append(force)

    async def run(
        self, publish: Publish, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.runs += 1
        self.publish = publish
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.cancelled = True


class UpdatableAcme(FakeAcme):
    """As the real manager: new settings are taken without a restart."""

    instances: ClassVar[list[FakeAcme]] = []

    def __init__(self, settings: object) -> None:
        super().__init__(settings)
        self.updates: list[tuple[AcmeEntry, ...]] = []

    def update(self, settings: object) -> None:
        assert isinstance(settings, tuple)
        self.settings = settings
        self.updates.append(settings)


def new_hub(
    tmp_path: Path, kind: type[FakeAcme] = FakeAcme, *, seed: Snapshot | None = None
) -> tuple[ProviderHub, list[int]]:
    kind.instances = []
    FakeAcme.seed = seed if seed is not None else Snapshot(certificates=(stored(SHOP),))

    def build(settings: object) -> DynamicProvider:
        return kind(settings)

    hub = ProviderHub(
        factories={},
        certificates=CertificateFiles(str(tmp_path / "certs")),
        threaded=False,
        acme=build,
    )
    pokes: list[int] = []
    hub.changed = lambda: pokes.append(1)
    return hub, pokes


def certificates_of(config: Config, entrypoint: str = "websecure") -> tuple[CertificatePair, ...]:
    tls = config.entrypoints[entrypoint].tls
    assert tls is not None
    return tls.certificates


def contents(pair: CertificatePair) -> tuple[bytes, bytes]:
    """The certificate and key files the merge wrote (small files, read at once)."""
    return Path(pair.cert_file).read_bytes(), Path(pair.key_file).read_bytes()


def domains(provider: FakeAcme) -> tuple[str, ...]:
    (entry,) = provider.settings
    assert entry.entrypoint == "websecure"
    return entry.domains


async def test_the_stored_certificates_are_in_the_first_merge(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub, pokes = new_hub(tmp_path)
    config = acme_config(tmp_path / "acme", SHOP)
    hub.apply(config)  # before the gateway starts: seeded at once
    [provider] = FakeAcme.instances
    assert provider.seeded == 1
    assert domains(provider) == (SHOP,)
    merged = hub.merge(config).config
    [pair] = certificates_of(merged)
    seeded = FakeAcme.seed.certificates[0]
    assert contents(pair) == (seeded.cert_pem, seeded.key_pem)
    assert Path(pair.cert_file).parent == tmp_path / "certs"
    assert merged.entrypoints["web"].tls is None
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        hub.apply(config)  # the same settings: kept, not seeded again
        await trio.sleep(0.1)
        assert len(FakeAcme.instances) == 1
        assert (provider.runs, provider.seeded) == (1, 1)
        [document] = hub.documents()
        assert document["name"] == "acme"
        assert document["objects"] == {
            "routers": 0,
            "services": 0,
            "servers": 0,
            "certificates": 1,
            "skipped": 0,
        }
        nursery.cancel_scope.cancel()
    assert pokes == [1]  # seeded with certificates: a reload would serve them


async def test_a_new_domain_restarts_it_and_the_certificates_stay(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub, pokes = new_hub(tmp_path)
    storage = tmp_path / "acme"
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        hub.apply(acme_config(storage, SHOP))
        await trio.sleep(0.1)
        [first] = FakeAcme.instances
        first.orders = {"success": 2, "ca_error": 1}
        assert first.publish is not None
        issued = Snapshot(certificates=(stored(SHOP),))
        first.publish(issued)
        assert pokes == [1, 1]
        bigger = acme_config(storage, SHOP, BLOG)
        hub.apply(bigger)  # a router adds a domain: other settings, a new manager
        await trio.sleep(0.1)
        assert first.cancelled
        [_, second] = FakeAcme.instances
        assert domains(second) == (BLOG, SHOP)
        assert second.runs == 1
        assert second.seeded == 0  # the first one's snapshot carries on instead
        assert pokes == [1, 1]  # nothing to reload until it publishes
        [pair] = certificates_of(hub.merge(bigger).config)
        assert contents(pair)[0] == issued.certificates[0].cert_pem
        first.publish(Snapshot())  # a stopped manager's late publish is ignored
        assert len(certificates_of(hub.merge(bigger).config)) == 1
        # The order totals carry across the restart; the expiry is the running one's.
        second.orders = {"success": 1, "rejected": 1}
        second.expiry = {SHOP: 2_000_000_000.0, BLOG: 2_000_000_500.0}
        assert hub.acme_totals() == (
            {"success": 3, "ca_error": 1, "rejected": 1},
            {SHOP: 2_000_000_000.0, BLOG: 2_000_000_500.0},
        )
        assert hub.counters()["acme"] == (1, 0)
        nursery.cancel_scope.cancel()


async def test_a_manager_that_takes_new_settings_is_updated_in_place(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub, pokes = new_hub(tmp_path, UpdatableAcme)
    storage = tmp_path / "acme"
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        hub.apply(acme_config(storage, SHOP))
        await trio.sleep(0.1)
        hub.apply(acme_config(storage, SHOP, BLOG))
        hub.apply(acme_config(storage, SHOP, BLOG))  # the same again: nothing
        await trio.sleep(0.1)
        [manager] = UpdatableAcme.instances
        assert isinstance(manager, UpdatableAcme)
        assert not manager.cancelled
        assert manager.runs == 1
        assert [entries[0].domains for entries in manager.updates] == [(BLOG, SHOP)]
        assert len(certificates_of(hub.merge(acme_config(storage, SHOP, BLOG)).config)) == 1
        assert hub.acme_check(force=False)
        assert manager.checks == [False]
        nursery.cancel_scope.cancel()
    assert pokes == [1]


async def test_removing_acme_stops_it_and_asks_for_a_reload(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub, pokes = new_hub(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        hub.apply(acme_config(tmp_path / "acme", SHOP))
        await trio.sleep(0.1)
        [provider] = FakeAcme.instances
        provider.orders = {"success": 1}
        provider.expiry = {SHOP: 2_000_000_000.0}
        assert pokes == [1]
        hub.apply(plain_config())
        await trio.sleep(0.1)
        assert provider.cancelled
        assert pokes == [1, 1]  # its certificates leave with the next reload
        assert hub.documents() == []
        assert not hub.acme_check(force=True)
        assert provider.checks == []
        assert hub.acme_totals() == ({"success": 1}, {})  # orders carried, no expiry
        # Turned on again: a new manager, seeded, and the totals still add up.
        hub.apply(acme_config(tmp_path / "acme", SHOP))
        await trio.sleep(0.1)
        [_, again] = FakeAcme.instances
        assert again.seeded == 1
        again.orders = {"success": 1}
        assert hub.acme_totals() == ({"success": 2}, {})
        nursery.cancel_scope.cancel()


async def test_acme_check_reaches_the_manager(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub, _ = new_hub(tmp_path)
    assert not hub.acme_check(force=False)  # nothing applied yet
    hub.apply(acme_config(tmp_path / "acme", SHOP))
    [provider] = FakeAcme.instances
    assert hub.acme_check(force=False)
    assert hub.acme_check(force=True)
    assert hub.acme_check()
    assert provider.checks == [False, True, False]


def test_without_an_acme_builder_nothing_starts(tmp_path: Path) -> None:
    FakeAcme.instances = []
    hub = ProviderHub(factories={}, certificates=CertificateFiles(str(tmp_path / "certs")))
    config = acme_config(tmp_path / "acme", SHOP)
    hub.apply(config)
    assert FakeAcme.instances == []
    assert hub.documents() == []
    assert not hub.acme_check(force=True)
    assert hub.acme_totals() == ({}, {})
    merged = hub.merge(config).config
    assert certificates_of(merged) == ()


def test_a_seed_without_certificates_asks_for_no_reload(tmp_path: Path) -> None:
    hub, pokes = new_hub(tmp_path, seed=Snapshot())
    config = acme_config(tmp_path / "acme", SHOP)
    hub.apply(config)
    [provider] = FakeAcme.instances
    assert provider.seeded == 1
    assert pokes == []
    assert certificates_of(hub.merge(config).config) == ()


def test_dynamic_kinds_include_acme(tmp_path: Path) -> None:
    storage = tmp_path / "acme"
    assert dynamic_kinds(acme_config(storage, SHOP)) == ("acme",)
    assert dynamic_kinds(acme_config(storage)) == ("acme",)  # no domain yet: still on
    assert dynamic_kinds(acme_config(storage, SHOP, discovery=True)) == ("discovery", "acme")
    assert dynamic_kinds(plain_config()) == ()


def test_a_certificate_per_domain_reaches_its_entrypoints(tmp_path: Path) -> None:
    seed = Snapshot(certificates=(stored(BLOG), stored(SHOP)))
    hub, _ = new_hub(tmp_path, seed=seed)
    config = acme_config(tmp_path / "acme", SHOP, BLOG)
    hub.apply(config)
    pairs = certificates_of(hub.merge(config).config)
    assert len(pairs) == 2
    written = {Path(pair.cert_file).read_bytes() for pair in pairs}
    assert written == {pem.cert_pem for pem in seed.certificates}
    files = list(itertools.chain.from_iterable((p.cert_file, p.key_file) for p in pairs))
    assert len(set(files)) == 4
