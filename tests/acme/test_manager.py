"""The ACME manager's schedule (acme/manager.py), with a fake issuer under the autojump clock.

The storage is real (a temporary directory); the issuer is a fake that records when it was
asked and answers with a trustme certificate or an ``AcmeError``. The wall clock follows trio's
virtual clock, so "days left" and the retry schedule are checked without waiting.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import time
from typing import TYPE_CHECKING

import pytest
import trio
import trustme

from a3s_gateway.acme.board import ChallengeBoard
from a3s_gateway.acme.issuer import AcmeError, AcmeResult, Issued
from a3s_gateway.acme.manager import (
    CHECK_INTERVAL,
    CHECK_JITTER,
    FIRST_RETRY,
    LOCK_RETRY,
    MAX_RETRY,
    AcmeManager,
)
from a3s_gateway.acme.order_plan import AcmeEntry
from a3s_gateway.acme.storage import AcmeStorage
from tests.providers.test_dns_provider import Published as Snapshots

if TYPE_CHECKING:
    from pathlib import Path

    from a3s_gateway.acme.issuer import Solver

DAY = 86400.0
#: The wall clock at virtual time 0.
EPOCH = time.time()


def _wall() -> float:
    return EPOCH + trio.current_time()


def _pair(domain: str, days: float) -> tuple[bytes, bytes]:
    """A chain and key for ``domain`` valid from now for ``days`` days (trustme)."""
    ca = trustme.CA()
    now = datetime.datetime.fromtimestamp(EPOCH, datetime.UTC)
    leaf = ca.issue_cert(
        domain,
        not_before=now - datetime.timedelta(hours=1),
        not_after=now + datetime.timedelta(days=days),
    )
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return chain, leaf.private_key_pem.bytes()


def _entry(storage: Path, *domains: str, renewal_days: int = 30) -> AcmeEntry:
    return AcmeEntry(
        entrypoint="websecure",
        email="ops@example.com",
        directory_url="https://ca.test/directory",
        ca_file=None,
        storage_path=str(storage),
        challenge="http-01",
        renewal_days=renewal_days,
        key_type="ec256",
        dns=None,
        domains=domains,
    )


class FakeIssuer:
    """Answers each ``issue`` with the next outcome (the last one repeats)."""

    def __init__(self, *outcomes: Issued | AcmeError) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, float]] = []

    def issue(self, domain: str, key_type: str, solver: Solver, *, deadline: float) -> Issued:
        self.calls.append((domain, trio.current_time()))
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, AcmeError):
            raise outcome
        return outcome


def _issued(domain: str, days: float = 90) -> Issued:
    chain, key = _pair(domain, days)
    return Issued(chain_pem=chain, key_pem=key)


def _error(result: AcmeResult) -> AcmeError:
    return AcmeError("the CA said no", result=result)


class Published(Snapshots):
    """The snapshots the manager published, newest last."""

    @property
    def names(self) -> list[str]:
        return [pair.origin for pair in self.last.certificates]


async def run_for(
    manager: AcmeManager, seconds: float, published: Published | None = None
) -> Published:
    """Run ``manager`` for ``seconds`` of virtual time; what it published."""
    published = published if published is not None else Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run, published)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return published


def _manager(entry: AcmeEntry, issuer: FakeIssuer, seed: int = 1) -> AcmeManager:
    import random

    return AcmeManager(
        (entry,),
        ChallengeBoard(),
        issuers=lambda storage, entry: issuer,
        threaded=False,
        rng=random.Random(seed),
        wall=_wall,
    )


async def test_a_missing_certificate_is_ordered_at_start_and_published(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    issuer = FakeIssuer(_issued("a.test"))
    manager = _manager(_entry(tmp_path, "a.test"), issuer)
    published = Published()
    await run_for(manager, 1, published)
    assert [domain for domain, _ in issuer.calls] == ["a.test"]
    assert published.names == ["ACME certificate a.test"]
    assert published.snapshots[-1].certificates[0].entrypoints == ("websecure",)
    assert manager.orders == {"success": 1}
    stored = AcmeStorage(str(tmp_path)).certificate("a.test")
    assert stored is not None
    assert manager.not_after() == {"a.test": stored.not_after}


@pytest.mark.time_limit(100 * DAY)
async def test_a_fresh_stored_certificate_is_served_without_an_order(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    chain, key = _pair("a.test", 80)
    AcmeStorage(str(tmp_path)).save_certificate(
        "a.test", chain, key, directory="https://ca.test/directory", issued_at=EPOCH
    )
    issuer = FakeIssuer(_issued("a.test"))
    manager = _manager(_entry(tmp_path, "a.test"), issuer)
    first = manager.initial_snapshot()
    assert [pair.cert_pem for pair in first.certificates] == [chain]
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run, published)
        # Checks at start and every 12 h (±1 h): 49 days later the certificate has 31 days
        # left; the first check after day 50 (30 days to go) renews it.
        await trio.sleep(49 * DAY)
        assert issuer.calls == []
        await trio.sleep(DAY + CHECK_INTERVAL + CHECK_JITTER)
        nursery.cancel_scope.cancel()
    [(_, when)] = issuer.calls
    assert 50 * DAY <= when <= 50 * DAY + CHECK_INTERVAL + CHECK_JITTER
    assert published.snapshots[-1].certificates[0].cert_pem != chain


@pytest.mark.time_limit(100 * DAY)
async def test_a_ca_that_fails_is_retried_with_backoff_while_the_old_certificate_serves(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    chain, key = _pair("a.test", 10)  # within the 30-day renewal window
    AcmeStorage(str(tmp_path)).save_certificate(
        "a.test", chain, key, directory="https://ca.test/directory", issued_at=EPOCH
    )
    issuer = FakeIssuer(*[_error("ca_error")] * 12, _issued("a.test"))
    manager = _manager(_entry(tmp_path, "a.test"), issuer)
    published = Published()
    await run_for(manager, 2 * DAY, published)
    times = [when for _, when in issuer.calls]
    gaps = [round(later - earlier) for earlier, later in itertools.pairwise(times)]
    # 1 min doubling (the 12-hour checks may come sooner than a long retry), capped at 12 h.
    expected = [min(FIRST_RETRY * 2**n, MAX_RETRY) for n in range(10)]
    assert gaps[:10] == expected
    assert manager.orders["ca_error"] == 12
    assert manager.orders["success"] == 1
    # Until the success, the old certificate stayed in every snapshot.
    before = [s for s in published.snapshots if s.certificates[0].cert_pem == chain]
    assert len(before) >= 12
    assert manager.status.errors == 12


@pytest.mark.time_limit(100 * DAY)
async def test_a_rejected_order_counts_by_result(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    issuer = FakeIssuer(_error("rejected"), _issued("a.test"))
    manager = _manager(_entry(tmp_path, "a.test"), issuer)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run, published)
        await trio.sleep(FIRST_RETRY - 1)
        assert published.snapshots[-1].certificates == ()
        assert manager.status.state == "error"
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert manager.orders == {"rejected": 1, "success": 1}
    assert published.names == ["ACME certificate a.test"]


async def test_a_taken_lock_waits_and_loads_the_other_gateways_certificate(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    storage = AcmeStorage(str(tmp_path))
    storage.ensure()
    assert storage.try_lock("other-gateway", _wall_at_zero())
    issuer = FakeIssuer(_issued("a.test"))
    manager = _manager(_entry(tmp_path, "a.test"), issuer)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run, published)
        await trio.sleep(3 * LOCK_RETRY)
        assert issuer.calls == []
        chain, key = _pair("a.test", 90)  # the other gateway's order lands, then it unlocks
        storage.save_certificate(
            "a.test", chain, key, directory="https://ca.test/directory", issued_at=EPOCH
        )
        storage.unlock("other-gateway")
        await trio.sleep(2 * LOCK_RETRY)
        nursery.cancel_scope.cancel()
    assert issuer.calls == []
    assert manager.orders == {}
    assert published.snapshots[-1].certificates[0].cert_pem == chain


def _wall_at_zero() -> float:
    return EPOCH


async def test_check_now_with_force_renews_a_fresh_certificate(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    issuer = FakeIssuer(_issued("a.test"), _issued("a.test"))
    manager = _manager(_entry(tmp_path, "a.test", "b.test"), issuer)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run, published)
        await trio.sleep(10)
        assert sorted(domain for domain, _ in issuer.calls) == ["a.test", "b.test"]
        manager.check_now()  # nothing due: no order
        await trio.sleep(10)
        assert len(issuer.calls) == 2
        manager.check_now(force=True)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert len(issuer.calls) == 4
    assert manager.orders == {"success": 4}
    assert published.names == ["ACME certificate a.test", "ACME certificate b.test"]


@pytest.mark.parametrize("days", [0.5, 29])
async def test_a_certificate_inside_the_renewal_window_is_renewed_at_start(
    autojump_clock: trio.abc.Clock, tmp_path: Path, days: float
) -> None:
    chain, key = _pair("a.test", days)
    AcmeStorage(str(tmp_path)).save_certificate(
        "a.test", chain, key, directory="https://ca.test/directory", issued_at=EPOCH
    )
    issuer = FakeIssuer(_issued("a.test"))
    manager = _manager(_entry(tmp_path, "a.test"), issuer)
    await run_for(manager, 1)
    assert [when for _, when in issuer.calls] == [0.0]


def _store(
    tmp_path: Path, domain: str, days: float, directory: str = "https://ca.test/directory"
) -> bytes:
    chain, key = _pair(domain, days)
    AcmeStorage(str(tmp_path)).save_certificate(
        domain, chain, key, directory=directory, issued_at=EPOCH
    )
    return chain


async def test_every_stored_certificate_is_published_before_the_first_order(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    kept = _store(tmp_path, "b.test", 80)
    issuer = FakeIssuer(_issued("a.test"))
    manager = _manager(_entry(tmp_path, "a.test", "b.test"), issuer)
    published = Published()
    await run_for(manager, 1, published)
    first = published.snapshots[0]
    assert [pair.cert_pem for pair in first.certificates] == [kept]
    assert all(len(snapshot.certificates) >= 1 for snapshot in published.snapshots)
    assert published.names == ["ACME certificate a.test", "ACME certificate b.test"]


async def test_update_orders_a_new_domain_and_drops_a_removed_one(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    issuer = FakeIssuer(_issued("a.test"), _issued("c.test"))
    manager = _manager(_entry(tmp_path, "a.test"), issuer)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run, published)
        await trio.sleep(1)
        manager.update((_entry(tmp_path, "c.test"),))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert [domain for domain, _ in issuer.calls] == ["a.test", "c.test"]
    assert published.names == ["ACME certificate c.test"]


async def test_a_certificate_of_another_ca_or_key_type_is_replaced(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    _store(tmp_path, "a.test", 80, directory="https://staging.test/directory")
    _store(tmp_path, "b.test", 80)  # trustme: an EC P-256 key (ec256)
    entry = _entry(tmp_path, "a.test", "b.test")
    rsa = dataclasses.replace(entry, key_type="rsa2048")
    issuer = FakeIssuer(_issued("a.test"), _issued("b.test"))
    async with trio.open_nursery() as nursery:
        await nursery.start(_manager(entry, issuer).run, Published())
        await trio.sleep(1)
        assert [domain for domain, _ in issuer.calls] == ["a.test"]  # another CA's
        nursery.cancel_scope.cancel()
    issuer = FakeIssuer(_issued("b.test"))
    await run_for(_manager(rsa, issuer), 1)
    assert sorted(domain for domain, _ in issuer.calls) == ["a.test", "b.test"]


@pytest.mark.time_limit(600)
async def test_a_storage_that_cannot_be_written_fails_the_order_not_the_manager(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    issuer = FakeIssuer(_issued("a.test"))
    manager = _manager(_entry(blocker / "acme", "a.test"), issuer)
    await run_for(manager, FIRST_RETRY + 1)
    assert issuer.calls == []
    assert manager.orders == {"invalid": 2}
    assert manager.status.state == "error"


async def test_an_unexpected_error_fails_only_that_order(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    class Broken(FakeIssuer):
        def issue(self, domain: str, key_type: str, solver: Solver, *, deadline: float) -> Issued:
            if domain == "a.test":
                raise RuntimeError("a bug")
            return super().issue(domain, key_type, solver, deadline=deadline)

    issuer = Broken(_issued("b.test"))
    manager = _manager(_entry(tmp_path, "a.test", "b.test"), issuer)
    published = Published()
    await run_for(manager, 1, published)
    assert manager.orders == {"invalid": 1, "success": 1}
    assert published.names == ["ACME certificate b.test"]
    assert manager.status.state == "error"  # a.test's retry is still pending


async def test_a_forced_renewal_waits_for_the_lock_and_still_happens(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    _store(tmp_path, "a.test", 80)
    storage = AcmeStorage(str(tmp_path))
    assert storage.try_lock("other-gateway", EPOCH)
    issuer = FakeIssuer(_issued("a.test"))
    manager = _manager(_entry(tmp_path, "a.test"), issuer)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run, Published())
        await trio.sleep(1)
        manager.check_now(force=True)
        await trio.sleep(3 * LOCK_RETRY)
        assert issuer.calls == []
        storage.unlock("other-gateway")
        await trio.sleep(2 * LOCK_RETRY)
        nursery.cancel_scope.cancel()
    assert len(issuer.calls) == 1
