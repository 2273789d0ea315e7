"""Running the dynamic providers and feeding their snapshots to the reload path (SPEC §10.1).

Ring 1 (trio). ``ProviderHub`` starts the providers the config enables (``dns``, ``discovery``,
``kubernetes``; ``apply`` after every swap restarts one whose settings changed and stops one
that was removed), keeps the latest ``Snapshot`` each publishes, and on a change pokes
``changed`` (the ``Reloader``'s debounced reload: changes from every source are coalesced on
the trailing edge). ``merge`` is what the ``Reloader`` calls on every candidate: the static
config plus the snapshots (``providers/merge.py``), with provider certificates written as
files into a private directory (0700, files 0600, named by a hash of their contents so a
rotated secret is a changed config) that the TLS store — in this process or in every worker —
loads like any certificate file. ``documents`` is ``/providers``; ``metrics`` feeds the
provider families.

A provider task that raises (a bug: peer failures are the provider's to handle) is logged with
its traceback, marked failed and restarted after ``RESTART_DELAY`` seconds, doubling while it
keeps failing (up to ``MAX_RESTART_DELAY``); its last snapshot
stays in use meanwhile.

Nurseries: ``run`` owns one; each provider runs in its own cancel scope inside it (``apply``
hands new providers to ``run`` through a memory channel; one stopped before ``run`` took it
starts already cancelled). Deadlines:
none of its own (each provider bounds its peer calls). Must not: build a candidate, swap a
config, or log a certificate's contents.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import shutil
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

import trio

from a3s_gateway.config.schema_entrypoints import CertificatePair
from a3s_gateway.providers.merge import DYNAMIC_KINDS, Merged, Source, dynamic_kinds, merge

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from a3s_gateway.config.schema import Config
    from a3s_gateway.providers.dynamic import DynamicProvider, PemPair, Snapshot

    #: Builds a provider from its settings block.
    Factory = Callable[[object], DynamicProvider]

__all__ = [
    "MAX_RESTART_DELAY",
    "RESTART_DELAY",
    "CertificateFiles",
    "ProviderHub",
    "default_factories",
]

log: Final = logging.getLogger("a3s_gateway.providers")

#: Seconds before a provider task that raised is started again, doubling while it keeps
#: failing up to ``MAX_RESTART_DELAY`` (reset after a run that lasted that long).
RESTART_DELAY: Final = 5.0
MAX_RESTART_DELAY: Final = 80.0


def default_factories() -> dict[str, Factory]:
    """The real providers of the ``providers`` block, imported when first used (the ``acme``
    one is handed to ``ProviderHub`` by whoever owns the challenge board)."""

    def dns(settings: object) -> DynamicProvider:
        from a3s_gateway.config.schema import DnsProvider
        from a3s_gateway.providers.dns import DnsDiscovery

        assert isinstance(settings, DnsProvider)
        return DnsDiscovery(settings)

    def discovery(settings: object) -> DynamicProvider:
        from a3s_gateway.config.schema import DiscoveryProvider
        from a3s_gateway.providers.discovery import ServiceDiscovery

        assert isinstance(settings, DiscoveryProvider)
        return ServiceDiscovery(settings)

    def kubernetes(settings: object) -> DynamicProvider:
        from a3s_gateway.config.schema import KubernetesProvider
        from a3s_gateway.providers.kubernetes import KubernetesDiscovery

        assert isinstance(settings, KubernetesProvider)
        return KubernetesDiscovery(settings)

    return {"dns": dns, "discovery": discovery, "kubernetes": kubernetes}


class CertificateFiles:
    """Provider certificates as files (module docstring): ``place`` writes a pair once (by the
    hash of its contents; again when its file disappeared), checks it loads, and returns the
    ``CertificatePair`` naming it, or why it cannot be used. ``keep`` is called once a
    candidate is serving: it removes the files that neither it nor the generation before it
    uses (a worker may still be loading those); a rejected candidate never removes any."""

    def __init__(self, directory: str | None = None) -> None:
        self._directory = directory
        self._own = directory is None
        #: Hash → the pair's files, or why the pair is unusable.
        self._placed: dict[str, CertificatePair | str] = {}
        self._used: set[str] = set()
        self._previous: set[str] = set()

    def _root(self) -> str:
        if self._directory is None:
            self._directory = tempfile.mkdtemp(prefix="a3s-gateway-certs-")
        os.makedirs(self._directory, mode=0o700, exist_ok=True)
        os.chmod(self._directory, 0o700)
        return self._directory

    def place(self, pair: PemPair) -> CertificatePair | str:
        """The files for ``pair`` (written the first time), or why it is unusable."""
        digest = hashlib.sha256(pair.cert_pem + b"\0" + pair.key_pem).hexdigest()[:32]
        self._used.add(digest)
        found = self._placed.get(digest)
        if isinstance(found, CertificatePair) and not (
            os.path.exists(found.cert_file) and os.path.exists(found.key_file)
        ):
            found = None  # removed from outside (a /tmp cleaner): written again
        if found is None:
            found = self._write(digest, pair)
            if isinstance(found, CertificatePair) or not found.startswith("cannot write"):
                self._placed[digest] = found  # (a full disk is retried next time)
        return found

    def _write(self, digest: str, pair: PemPair) -> CertificatePair | str:
        try:
            root = self._root()
            cert_file = os.path.join(root, f"{digest}.crt")
            key_file = os.path.join(root, f"{digest}.key")
            _write_private(cert_file, pair.cert_pem)
            _write_private(key_file, pair.key_pem)
        except OSError as error:
            return f"cannot write its files: {error.strerror or error}"
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, ValueError, OSError):
            _remove(cert_file, key_file)
            return "the certificate or key does not load, or they do not match"
        return CertificatePair(cert_file=cert_file, key_file=key_file)

    def keep(self) -> None:
        """The last merge's candidate is serving: remove the pairs neither it nor the
        generation before it uses."""
        keep = self._used | self._previous
        for digest in [digest for digest in self._placed if digest not in keep]:
            found = self._placed.pop(digest)
            if isinstance(found, CertificatePair):
                _remove(found.cert_file, found.key_file)
        self._previous, self._used = self._used, set()

    def discard(self) -> None:
        """The last merge's candidate was not swapped in: forget what it used."""
        self._used = set()

    def close(self) -> None:
        """Remove every file (and the directory when it is ours)."""
        for found in self._placed.values():
            if isinstance(found, CertificatePair):
                _remove(found.cert_file, found.key_file)
        self._placed.clear()
        if self._own and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


def _write_private(path: str, data: bytes) -> None:
    if os.path.exists(path):
        return
    temporary = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def _remove(*paths: str) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.remove(path)


@dataclass(slots=True)
class _Running:
    """One provider of the current settings."""

    kind: str
    settings: object
    provider: DynamicProvider
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    snapshot: Snapshot | None = None


class ProviderHub:
    """The dynamic providers of one gateway (module docstring).

    ``changed``: called (from trio) when a provider's snapshot changed or a provider stopped;
    the ``Reloader`` sets it to its debounced ``changed``. ``factories``: kind → builder (tests
    pass fakes). ``acme``: the builder of the ACME manager (``acme/manager.py`` ``acme_factory``,
    bound to the gateway's challenge board; without it, ACME entrypoints get no certificates
    but the fallback). ``certificates``: where provider certificates go. ``threaded``: merge reload
    candidates in a worker thread (False: on the loop, for tests under the autojump clock,
    which would jump past their deadlines while a thread works).
    """

    def __init__(
        self,
        *,
        factories: Mapping[str, Factory] | None = None,
        certificates: CertificateFiles | None = None,
        threaded: bool = True,
        acme: Factory | None = None,
    ) -> None:
        self.changed: Callable[[], None] = _nothing
        self._factories = dict(factories) if factories is not None else default_factories()
        if acme is not None:
            self._factories["acme"] = acme
        self._certificates = certificates if certificates is not None else CertificateFiles()
        self._threaded = threaded
        self._running: dict[str, _Running] = {}
        #: (changes, errors) of providers stopped by ``apply``, so the totals never go back.
        self._carried: dict[str, tuple[int, int]] = {}
        #: ACME orders by result of managers stopped by ``apply`` (idem).
        self._orders: dict[str, int] = {}
        #: Providers ``apply`` started, for ``run`` to supervise in its nursery.
        self._starts, self._started = trio.open_memory_channel[_Running](math.inf)
        #: The last merge's result (pending references, warnings) for the API and metrics.
        self.last: Merged | None = None

    # -- lifetime ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the providers ``apply`` asks for until cancelled; removes the certificate
        files on the way out."""
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                async for running in self._started:
                    nursery.start_soon(self._supervise, running)
        finally:
            self._certificates.close()

    def apply(self, config: Config) -> None:
        """Start, restart or stop providers to match ``config``'s ``providers`` block."""
        for kind in DYNAMIC_KINDS:
            settings = _settings(config, kind) if kind in self._factories else None
            running = self._running.get(kind)
            if running is not None and running.settings == settings:
                continue
            if (
                running is not None
                and settings is not None
                and isinstance(running.provider, _Updatable)
            ):
                running.settings = settings  # (ACME: an order in progress goes on)
                running.provider.update(settings)
                continue
            previous = None
            if running is not None:
                running.scope.cancel()
                del self._running[kind]
                changes, errors = self._carried.get(kind, (0, 0))
                status = running.provider.status
                self._carried[kind] = (changes + status.changes, errors + status.errors)
                self._carry_orders(running.provider)
                previous = running.snapshot
                if previous is not None and settings is None:
                    self.changed()
                log.info("provider %s stopped", kind)
            if settings is not None:
                provider = self._factories[kind](settings)
                # A restarted provider's objects stay until it publishes its own: changed
                # settings must not empty a service for the moment the provider starts.
                if previous is None and isinstance(provider, _Seeded):
                    previous = provider.initial_snapshot()  # stored certificates, at once
                    if previous.certificates:
                        self.changed()  # (a reload turned it on: serve them now)
                fresh = _Running(kind, settings, provider, snapshot=previous)
                self._running[kind] = fresh
                self._starts.send_nowait(fresh)

    async def _supervise(self, running: _Running) -> None:
        with running.scope:
            log.info("provider %s started", running.kind)
            delay = RESTART_DELAY
            while True:
                started = trio.current_time()
                try:
                    await running.provider.run(self._publisher(running))
                    return
                except Exception as error:  # a bug must not stop the gateway (SPEC §14.3)
                    log.exception("provider %s failed; restarting it", running.kind)
                    running.provider.status.failed(f"internal error: {type(error).__name__}")
                if trio.current_time() - started >= MAX_RESTART_DELAY:
                    delay = RESTART_DELAY  # it ran a good while: a new failure starts over
                await trio.sleep(delay)
                delay = min(delay * 2, MAX_RESTART_DELAY)

    def _publisher(self, running: _Running) -> Callable[[Snapshot], None]:
        def publish(snapshot: Snapshot, /) -> None:
            if self._running.get(running.kind) is not running or snapshot == running.snapshot:
                return
            before = running.snapshot.skipped if running.snapshot is not None else ()
            running.snapshot = snapshot
            status = running.provider.status
            status.changes += 1
            status.last_change = time.time()
            for message in snapshot.skipped:
                if message not in before:  # each once, not at every change of the others
                    log.warning("provider %s: %s", running.kind, message)
            self.changed()

        return publish

    # -- the reload path -----------------------------------------------------------------

    def merge(self, config: Config, *, workers: int = 1, default_file: str = "") -> Merged:
        """``config`` with every provider's latest snapshot merged in (``merge.merge``), taken
        as serving (the first generation, before the gateway starts)."""
        merged = self._merge(config, self._sources(), workers=workers, default_file=default_file)
        self.committed(merged)
        return merged

    async def merge_candidate(
        self, config: Config, *, workers: int = 1, default_file: str = ""
    ) -> Merged:
        """``merge`` for a reload candidate, in a worker thread (the checks of a large merged
        config take a noticeable time; the snapshots are read here, in trio). Call
        ``committed`` once it serves, ``rejected`` otherwise."""
        sources = self._sources()
        work = functools.partial(
            self._merge, config, sources, workers=workers, default_file=default_file
        )
        if not dynamic_kinds(config) or not self._threaded:
            return work()  # (without a dynamic provider: returned as it is, no check)
        return await trio.to_thread.run_sync(work)

    def _sources(self) -> list[Source]:
        return [
            Source(kind, running.snapshot)
            for kind in DYNAMIC_KINDS
            if (running := self._running.get(kind)) is not None and running.snapshot is not None
        ]

    def _merge(
        self, config: Config, sources: list[Source], *, workers: int, default_file: str
    ) -> Merged:
        return merge(
            config,
            sources,
            place=self._certificates.place,
            workers=workers,
            default_file=default_file,
        )

    def committed(self, merged: Merged) -> None:
        """``merged`` serves now (swapped in, or equal to what serves): the API and metrics
        describe it, and certificate files no longer used go."""
        self.last = merged
        self._certificates.keep()

    def rejected(self) -> None:
        """The last candidate was refused: the serving generation's files all stay."""
        self._certificates.discard()

    # -- what the API and the metrics show ------------------------------------------------

    def documents(self) -> list[dict[str, object]]:
        """``/providers`` entries of the dynamic providers (times in Unix seconds)."""
        out: list[dict[str, object]] = []
        warnings = self.last.warnings if self.last is not None else ()
        for kind in DYNAMIC_KINDS:
            running = self._running.get(kind)
            if running is None:
                continue
            status = running.provider.status
            snapshot = running.snapshot
            out.append(
                {
                    "name": kind,
                    "state": status.state,
                    "last_sync": status.last_sync,
                    "last_change": status.last_change,
                    "last_error": status.last_error,
                    "last_error_at": status.last_error_at,
                    "changes": status.changes,
                    "errors": status.errors,
                    "objects": snapshot.counts() if snapshot is not None else {},
                    "skipped": list(snapshot.skipped) if snapshot is not None else [],
                    "warnings": [
                        problem.format()
                        for problem in warnings
                        if problem.file == f"provider {kind}"
                    ],
                    "details": status.details,
                }
            )
        return out

    def pending(self) -> tuple[str, ...]:
        """References to services no provider supplies yet, as of the last merge."""
        return self.last.pending if self.last is not None else ()

    def acme_totals(self) -> tuple[dict[str, int], dict[str, float]]:
        """ACME orders by result (since the start) and each managed certificate's expiry."""
        orders = dict(self._orders)
        not_after: dict[str, float] = {}
        running = self._running.get("acme")
        if running is not None and isinstance(running.provider, _Ordering):
            for result, total in running.provider.orders.items():
                orders[result] = orders.get(result, 0) + total
            not_after = running.provider.not_after()
        return orders, not_after

    def acme_check(self, *, force: bool = False) -> bool:
        """Ask the ACME manager to check its certificates now (``force``: renew them all);
        False when no entrypoint uses ACME."""
        running = self._running.get("acme")
        if running is None or not isinstance(running.provider, _Ordering):
            return False
        running.provider.check_now(force=force)
        return True

    def _carry_orders(self, provider: object) -> None:
        if isinstance(provider, _Ordering):
            for result, total in provider.orders.items():
                self._orders[result] = self._orders.get(result, 0) + total

    def counters(self) -> dict[str, tuple[int, int]]:
        """Provider → (changes, errors), for the metrics."""
        totals = dict(self._carried)
        for kind, running in self._running.items():
            changes, errors = totals.get(kind, (0, 0))
            status = running.provider.status
            totals[kind] = (changes + status.changes, errors + status.errors)
        return totals


def _nothing() -> None:
    pass


def _settings(config: Config, kind: str) -> object:
    """The settings of provider ``kind`` in ``config`` (None: not enabled). ``acme``'s are the
    ACME entrypoints with their derived domains (a router added on one is a new setting)."""
    if kind == "acme":
        from a3s_gateway.acme.order_plan import plan_acme

        return plan_acme(config) or None
    providers = config.providers
    return getattr(providers, kind) if providers is not None else None


@runtime_checkable
class _Seeded(Protocol):
    """A provider with a snapshot before it runs (ACME: the stored certificates)."""

    def initial_snapshot(self) -> Snapshot: ...


@runtime_checkable
class _Updatable(Protocol):
    """A provider that takes new settings without a restart (ACME)."""

    def update(self, settings: object) -> None: ...


@runtime_checkable
class _Ordering(Protocol):
    """The ACME manager, as the hub's API and metrics see it."""

    orders: dict[str, int]

    def not_after(self) -> dict[str, float]: ...

    def check_now(self, *, force: bool = False) -> None: ...
