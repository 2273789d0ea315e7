"""The ACME manager: certificates ordered, stored, renewed and published (SPEC §12.3–§12.5).

Ring 1 (trio). ``AcmeManager`` is the ``acme`` dynamic provider of the ``ProviderHub``: its
settings are the ``AcmeEntry`` list of the config (``acme/order_plan.py``: every entrypoint with
``acme = true``, its domains derived from the routers), and what it publishes is a ``Snapshot``
of certificates, each for its entrypoint: the hub merges them into the config's
``tls.certificates`` and the reload puts them in the SNI map without a restart. The first
generation already has the stored ones (``initial_snapshot``), and ``run`` publishes every
stored one before its first order. A reload that changes the settings (a router adds a domain)
reaches the running manager through ``update``: an order in progress goes on.

The schedule: a check at start and then every 12 h (±1 h jitter), or at once on ``check_now``
(``POST /acme/renew``). A check looks at every domain of every entry: the stored certificate is
read again (another gateway sharing the storage may have renewed it), and a domain whose
certificate is missing, has fewer than ``acme_renewal_days`` days left, or came from another CA
directory or with another key type than configured is ordered, one order per domain, under the
storage's lock (a gateway that finds the lock taken looks again after ``LOCK_RETRY`` seconds and
picks up the other's certificate). A failed order is retried after 1 min, doubling to 12 h,
while the current certificate (or the fallback) keeps serving; ``a3s_acme_orders_total{result}``
counts orders; any failure, a bug included, fails only that order. Issuance runs in a worker
thread (``acme/issuer.py``; every CA call bounded, the whole order by ``ORDER_DEADLINE`` plus a
DNS-01 propagation wait), abandoned if the manager is cancelled (when ACME is turned off or the
gateway stops).

Nurseries: ``_order`` opens one for its order's duration, holding the task that refreshes the
lock every ``LOCK_REFRESH`` seconds. Deadlines: the order deadline; the lock's staleness (10
min, never reached while refreshed) covers a gateway that died while ordering. Must not: log
keys or key authorizations, or stop on a failed order.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol, TypeVar, TypeVarTuple

import trio

from a3s_gateway.acme.dns01 import DnsProviderError
from a3s_gateway.acme.issuer import AcmeError, Issuer
from a3s_gateway.acme.keys import key_type_of
from a3s_gateway.acme.solvers import solver_for
from a3s_gateway.acme.storage import AcmeStorage, StorageError
from a3s_gateway.providers.dynamic import PemPair, ProviderStatus, Snapshot

if TYPE_CHECKING:
    from collections.abc import Callable

    from a3s_gateway.acme.board import ChallengeBoard
    from a3s_gateway.acme.issuer import Issued, Solver
    from a3s_gateway.acme.order_plan import AcmeEntry
    from a3s_gateway.acme.storage import StoredCertificate
    from a3s_gateway.providers.dynamic import Publish

    #: Builds the issuer of one entry (tests pass fakes).
    IssuerFactory = Callable[[AcmeStorage, AcmeEntry], "IssuerLike"]

_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")

__all__ = [
    "CHECK_INTERVAL",
    "FIRST_RETRY",
    "LOCK_RETRY",
    "MAX_RETRY",
    "ORDER_DEADLINE",
    "AcmeManager",
    "acme_factory",
]

log: Final = logging.getLogger("a3s_gateway.acme")

#: Between two checks, and its jitter either way (SPEC §12.5).
CHECK_INTERVAL: Final = 12 * 3600.0
CHECK_JITTER: Final = 3600.0
#: A failed order is retried after this, doubling up to ``MAX_RETRY``.
FIRST_RETRY: Final = 60.0
MAX_RETRY: Final = 12 * 3600.0
#: How soon a gateway that found the storage locked looks again.
LOCK_RETRY: Final = 5.0
#: Bound on one order, not counting a DNS-01 propagation wait (added to it).
ORDER_DEADLINE: Final = 300.0
#: How often the lock is refreshed while an order runs (it goes stale after 10 min).
LOCK_REFRESH: Final = 60.0
#: Challenge files older than this are removed at start (left by a stopped gateway).
STALE_CHALLENGE: Final = 3600.0
_DAY: Final = 86400.0


class IssuerLike(Protocol):
    """What the manager needs of an issuer (``acme/issuer.py``'s ``Issuer``)."""

    def issue(self, domain: str, key_type: str, solver: Solver, *, deadline: float) -> Issued: ...


def _real_issuer(storage: AcmeStorage, entry: AcmeEntry) -> IssuerLike:
    return Issuer(
        storage, directory_url=entry.directory_url, email=entry.email, ca_file=entry.ca_file
    )


@dataclass(slots=True)
class _Domain:
    """One (storage, domain): its certificate and its retry state."""

    entries: list[AcmeEntry] = field(default_factory=list)
    certificate: StoredCertificate | None = None
    #: When the next order may be tried (trio time), after a failure or a taken lock.
    retry_at: float = -1.0
    delay: float = 0.0
    #: The last order failed (``/providers`` shows an error until one succeeds).
    failed: bool = False
    #: Renew at the next look, due or not (``check_now(force=True)``), until it worked.
    force: bool = False
    #: Waiting for another gateway's lock (logged once per wait).
    waiting: bool = False


def _domains(
    entries: tuple[AcmeEntry, ...], previous: dict[tuple[str, str], _Domain] | None = None
) -> dict[tuple[str, str], _Domain]:
    """(storage, domain) → its state for ``entries``, keeping ``previous`` states."""
    domains: dict[tuple[str, str], _Domain] = {}
    for entry in entries:
        for domain in entry.domains:
            key = (entry.storage_path, domain)
            state = domains.get(key)
            if state is None:
                old = (previous or {}).get(key)
                state = domains[key] = _Domain() if old is None else old
                state.entries = []
            state.entries.append(entry)
    return domains


class AcmeManager:
    """The ``acme`` provider (module docstring)."""

    def __init__(
        self,
        entries: tuple[AcmeEntry, ...],
        board: ChallengeBoard,
        *,
        issuers: IssuerFactory | None = None,
        threaded: bool = True,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
        serving: trio.Event | None = None,
    ) -> None:
        self.entries = entries
        self._serving = serving
        self._board = board
        self._issuers = issuers if issuers is not None else _real_issuer
        self._threaded = threaded
        self._rng = rng if rng is not None else random.Random()
        self._wall = wall
        self._status = ProviderStatus("acme")
        #: Orders by result (``a3s_acme_orders_total``).
        self.orders: dict[str, int] = {}
        self._domains = _domains(entries)
        self._wake = trio.Event()
        #: ``check_now`` or ``update`` asked for a full check.
        self._requested = False
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        #: The event loop's token, for the solvers in worker threads (set by ``run``).
        self._token: trio.lowlevel.TrioToken | None = None

    @property
    def status(self) -> ProviderStatus:
        return self._status

    def not_after(self) -> dict[str, float]:
        """Each managed domain's certificate expiry (``a3s_acme_certificate_not_after_seconds``)."""
        return {
            domain: state.certificate.not_after
            for (_, domain), state in self._domains.items()
            if state.certificate is not None
        }

    def check_now(self, *, force: bool = False) -> None:
        """Check every domain now; ``force``: renew every certificate, due or not."""
        for state in self._domains.values():
            state.retry_at = -1.0
            state.force = state.force or force
        self._requested = True
        self._wake.set()

    def update(self, settings: object) -> None:
        """New settings from a reload (a domain added or removed, an entrypoint renamed): the
        hub calls this instead of restarting the manager, so an order in progress goes on.
        A domain kept keeps its certificate and retry state; new ones are checked at once."""
        assert isinstance(settings, tuple)
        self.entries = settings
        self._domains = _domains(settings, self._domains)
        self._requested = True
        self._wake.set()

    # -- the stored certificates ---------------------------------------------------------

    def initial_snapshot(self) -> Snapshot:
        """Blocking (small files): the stored certificates, for the first generation."""
        self._load_all()
        return self.snapshot()

    def _load_all(self) -> None:
        """Blocking: read every domain's stored certificate."""
        for (path, domain), state in list(self._domains.items()):
            state.certificate = _read(AcmeStorage(path), domain)

    def snapshot(self) -> Snapshot:
        """Every certificate held now, each for the entrypoints that want its domain."""
        pairs: list[PemPair] = []
        for (_, domain), state in sorted(self._domains.items()):
            certificate = state.certificate
            if certificate is None:
                continue
            entrypoints = tuple(sorted({entry.entrypoint for entry in state.entries}))
            pairs.append(
                PemPair(
                    f"ACME certificate {domain}",
                    certificate.cert_pem,
                    certificate.key_pem,
                    entrypoints,
                )
            )
        return Snapshot(certificates=tuple(pairs))

    # -- the schedule ----------------------------------------------------------------------

    async def run(
        self, publish: Publish, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Check now, then on the schedule or when asked, until cancelled (module docstring)."""
        self._token = trio.lowlevel.current_trio_token()
        task_status.started()
        if self._serving is not None:
            await self._serving.wait()
        await self._thread(self._prepare)
        publish(self.snapshot())  # everything stored, before any order
        next_check = trio.current_time()
        while True:
            now = trio.current_time()
            if now >= next_check or self._requested:
                self._requested = False
                next_check = now + CHECK_INTERVAL + self._rng.uniform(-CHECK_JITTER, CHECK_JITTER)
                await self._check(publish, due_only=False)
            else:
                await self._check(publish, due_only=True)
            wake_at = min([next_check, *self._retries()])
            with trio.move_on_at(wake_at):
                await self._wake.wait()
            self._wake = trio.Event()

    def _prepare(self) -> None:
        """Blocking: the stored certificates, and challenge files a stopped gateway left."""
        self._load_all()
        for path in {path for path, _ in self._domains}:
            try:
                AcmeStorage(path).prune_challenges(self._wall(), STALE_CHALLENGE)
            except OSError as error:
                log.warning("acme: %s: cannot clean up old challenges: %s", path, error)

    def _retries(self) -> list[float]:
        return [state.retry_at for state in self._domains.values() if state.retry_at >= 0]

    async def _check(self, publish: Publish, *, due_only: bool) -> None:
        """Look at every domain (``due_only``: only those whose retry time has come)."""
        for key in list(self._domains):
            state = self._domains.get(key)
            if state is None:
                continue  # dropped by an update meanwhile
            if state.retry_at > trio.current_time():
                continue  # waiting for its retry
            if due_only and state.retry_at < 0:
                continue  # no retry due, and not a full check
            path, domain = key
            storage = AcmeStorage(path)
            state.certificate = await self._thread(_read, storage, domain)
            if not self._due(state):
                state.retry_at, state.delay, state.failed = -1.0, 0.0, False
                continue
            await self._order(storage, domain, state)
            publish(self.snapshot())
        publish(self.snapshot())
        if not any(state.failed for state in self._domains.values()):
            self._status.synced()

    def _due(self, state: _Domain) -> bool:
        """Whether ``state``'s domain needs an order: none stored, asked to, issued by another
        CA or with another key type than configured, or fewer than ``acme_renewal_days``
        days left."""
        certificate = state.certificate
        if certificate is None or state.force:
            return True
        entry = state.entries[0]
        if certificate.directory and certificate.directory != entry.directory_url:
            return True  # e.g. staging → production: the staging certificate is not trusted
        if key_type_of(certificate.key_pem) != entry.key_type:
            return True
        days = min(entry.renewal_days for entry in state.entries)
        return certificate.not_after - self._wall() < days * _DAY

    async def _order(self, storage: AcmeStorage, domain: str, state: _Domain) -> None:
        """Order ``domain`` under the storage lock (kept fresh while the order runs)."""
        try:
            locked = await self._thread(_lock, storage, self._owner, self._wall())
        except (StorageError, OSError) as error:
            self._failed(domain, state, "invalid", str(error))
            return
        if not locked:
            if not state.waiting:
                log.info("acme: %s: another gateway holds the storage lock; waiting", domain)
            state.waiting = True
            state.retry_at = trio.current_time() + LOCK_RETRY
            return
        state.waiting = False
        try:
            fresh = await self._thread(_read, storage, domain)
            if fresh is not None and fresh != state.certificate:
                state.certificate = fresh  # another gateway renewed it meanwhile
                if not self._due(state):
                    state.retry_at, state.delay, state.failed = -1.0, 0.0, False
                    log.info("acme: %s: certificate stored by another gateway loaded", domain)
                    return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_lock, storage)
                await self._issue(storage, domain, state)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._thread(storage.unlock, self._owner)

    async def _keep_lock(self, storage: AcmeStorage) -> None:
        """Refresh the lock while an order runs, so that it never looks stale to the others."""
        while True:
            await trio.sleep(LOCK_REFRESH)
            await self._thread(storage.refresh_lock, self._owner, self._wall())

    async def _issue(self, storage: AcmeStorage, domain: str, state: _Domain) -> None:
        entry = state.entries[0]
        log.info("acme: ordering a certificate for %s from %s", domain, entry.directory_url)
        try:
            issued = await self._thread(self._issue_blocking, storage, domain, entry)
            state.certificate = await self._thread(
                functools.partial(
                    storage.save_certificate,
                    domain,
                    issued.chain_pem,
                    issued.key_pem,
                    directory=entry.directory_url,
                    issued_at=self._wall(),
                )
            )
        except AcmeError as error:
            self._failed(domain, state, error.result, str(error))
            return
        except (StorageError, DnsProviderError, OSError, ValueError) as error:
            self._failed(domain, state, "invalid", str(error))
            return
        except Exception as error:  # a bug must not stop the renewals of the others
            log.exception("acme: order for %s failed unexpectedly", domain)
            self._failed(domain, state, "invalid", f"internal error: {type(error).__name__}")
            return
        self._count("success")
        state.retry_at, state.delay, state.failed, state.force = -1.0, 0.0, False, False
        log.info(
            "acme: certificate for %s issued, valid until %s",
            domain,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.certificate.not_after)),
        )

    def _issue_blocking(self, storage: AcmeStorage, domain: str, entry: AcmeEntry) -> Issued:
        """In the worker thread: the solver, the issuer and the order, within its deadline."""
        assert self._token is not None  # set by run
        solver = solver_for(entry, self._board, storage, self._token)
        bound = ORDER_DEADLINE
        if entry.dns is not None:
            bound += entry.dns.propagation_wait_secs
        issuer = self._issuers(storage, entry)
        return issuer.issue(domain, entry.key_type, solver, deadline=time.monotonic() + bound)

    def _failed(self, domain: str, state: _Domain, result: str, message: str) -> None:
        """Count a failed order and schedule its retry (1 min doubling to 12 h)."""
        self._count(result)
        state.failed = True
        state.delay = min(max(state.delay * 2, FIRST_RETRY), MAX_RETRY)
        state.retry_at = trio.current_time() + state.delay
        self._status.failed(f"{domain}: {message}")
        log.warning(
            "acme: order for %s failed (%s): %s; retrying in %.0f s",
            domain,
            result,
            message,
            state.delay,
        )

    def _count(self, result: str) -> None:
        self.orders[result] = self.orders.get(result, 0) + 1

    async def _thread(self, fn: Callable[[*_Args], _T], *args: *_Args) -> _T:
        """``fn(*args)`` in a worker thread (abandoned on cancel), or inline when not
        ``threaded`` (tests under the autojump clock with fakes)."""
        if not self._threaded:
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)


def _read(storage: AcmeStorage, domain: str) -> StoredCertificate | None:
    """The stored certificate of ``domain``; a broken one counts as missing (logged)."""
    try:
        return storage.certificate(domain)
    except StorageError as error:
        log.warning("acme: %s: cannot use the stored certificate (%s); ordering one", domain, error)
        return None


def _lock(storage: AcmeStorage, owner: str, now: float) -> bool:
    storage.ensure()
    return storage.try_lock(owner, now)


def acme_factory(
    board: ChallengeBoard, *, serving: trio.Event | None = None
) -> Callable[[object], AcmeManager]:
    """The ``ProviderHub``'s builder of the ``acme`` provider: a manager of the given
    entries (``plan_acme``) presenting its challenges on ``board``, ordering once
    ``serving`` is set (the listeners that answer the CA are up)."""

    def build(settings: object) -> AcmeManager:
        assert isinstance(settings, tuple)
        return AcmeManager(settings, board, serving=serving)

    return build
